//! The HTTP/1.1 listeners: a bounded number of open connections, bounded
//! header and idle time, bounded request size, and a graceful shutdown that
//! lets in-flight requests finish (DESIGN §3.4, §7).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::router;
use crate::state::AppState;

/// The sockets the service answers on.
#[derive(Debug)]
pub struct Listeners {
    /// Public API (`BIND_ADDR`): portal and app endpoints, `/services/...`.
    pub api: TcpListener,
    /// Internal listener (`METRICS_ADDR`): `/metrics` and `/events/...`. Only
    /// opened when it serves something (DESIGN §3.4), so that services started
    /// with the default `METRICS_ADDR` on one host do not fight over it.
    pub internal: Option<TcpListener>,
}

/// The kernel's accept queue per listener. Clients beyond `MAX_CONNECTIONS`
/// wait here, so it is longer than the 128 that `TcpListener::bind` asks for;
/// Linux caps it at `net.core.somaxconn` (4096 by default).
pub const ACCEPT_BACKLOG: u32 = 4096;

/// Binds a listener with an [`ACCEPT_BACKLOG`]-long accept queue.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restarted service can bind at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Api,
    Internal,
}

impl Kind {
    /// The `listener` label of the connection gauge and the request metrics.
    fn label(self) -> &'static str {
        match self {
            Kind::Api => "api",
            Kind::Internal => "internal",
        }
    }
}

/// Serves the listeners until `shutdown` completes, then stops accepting and
/// waits (up to the configured grace) for in-flight requests to finish. Samples
/// the connection-pool gauges (`db_pool_*`) and refreshes the replica's shared
/// state (`replica`) while it runs.
pub async fn run(
    state: Arc<AppState>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Pool gauges for `/metrics`, sampled until the listeners have stopped.
    let _pool_metrics = state.store.spawn_pool_metrics();
    let _refresh = crate::replica::spawn_refresh(Arc::clone(&state));
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
    let internal = async move {
        match listeners.internal {
            Some(listener) => serve(listener, state, stopped, Kind::Internal).await,
            None => Ok(()),
        }
    };
    tokio::try_join!(api, internal)?;
    Ok(())
}

/// One open connection of a listener: holds one of its `MAX_CONNECTIONS`
/// slots and counts itself in the `submit_open_connections` gauge until the
/// connection ends, however it ends.
struct OpenConnection {
    kind: Kind,
    _slot: OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(kind: Kind, slot: OwnedSemaphorePermit) -> OpenConnection {
        metrics::gauge!("submit_open_connections", "listener" => kind.label()).increment(1.0);
        OpenConnection { kind, _slot: slot }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!("submit_open_connections", "listener" => self.kind.label()).decrement(1.0);
    }
}

async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    mut stopped: watch::Receiver<bool>,
    kind: Kind,
) -> std::io::Result<()> {
    let timeouts = state.settings.timeouts;
    let mut builder = http1::Builder::new();
    // The header timer also runs while a keep-alive connection waits for its
    // next request, so it doubles as the idle timeout (see `Timeouts`).
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .max_buf_size(16 * 1024);
    let slots = Arc::new(Semaphore::new(state.settings.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        // A slot is taken before `accept`: while every slot is held, new
        // clients wait in the kernel's accept queue instead of costing memory
        // here, and the connections already open keep being answered.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                // The semaphore is never closed; stop serving if it were.
                Err(_) => break,
            },
            _ = stopped.changed() => break,
        };
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
                let open = OpenConnection::new(kind, slot);
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
                    let _open = open;
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
