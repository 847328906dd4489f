//! The HTTP/1.1 listeners: bounded header time, bounded request size, and a
//! graceful shutdown that lets in-flight requests finish (DESIGN §7).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::router;
use crate::state::AppState;

/// The two sockets the service answers on.
#[derive(Debug)]
pub struct Listeners {
    /// Public API (`BIND_ADDR`): portal and app endpoints, `/services/...`.
    pub api: TcpListener,
    /// Internal listener (`METRICS_ADDR`): `/metrics` and `/events/...`.
    pub internal: TcpListener,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Api,
    Internal,
}

/// Serves both listeners until `shutdown` completes, then stops accepting and
/// waits (up to the configured grace) for in-flight requests to finish. Samples
/// the connection-pool gauges (`db_pool_*`) while it runs.
pub async fn run(
    state: Arc<AppState>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Pool gauges for `/metrics`, sampled until the listeners have stopped.
    let _pool_metrics = state.store.spawn_pool_metrics();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let api = serve(
        listeners.api,
        Arc::clone(&state),
        stopped.clone(),
        Kind::Api,
    );
    let internal = serve(listeners.internal, state, stopped, Kind::Internal);
    tokio::try_join!(api, internal)?;
    Ok(())
}

async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    mut stopped: watch::Receiver<bool>,
    kind: Kind,
) -> std::io::Result<()> {
    let timeouts = state.settings.timeouts;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .max_buf_size(16 * 1024);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                let service = service_fn(move |request| {
                    let state = Arc::clone(&state);
                    async move {
                        let response = match kind {
                            Kind::Api => router::api(&state, request, peer).await,
                            Kind::Internal => router::internal(&state, request).await,
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(timeouts.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; closing the remaining connections");
        }
    }
    Ok(())
}
