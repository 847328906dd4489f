//! The submit service's two listeners, each a bounded HTTP/1 listener of
//! `diagnosis-listener`: a capped number of open connections, bounded header,
//! idle and stalled-write time, bounded request size, TCP keepalive, and a
//! graceful shutdown that lets in-flight requests finish (DESIGN §3.4, §7).
//! This module wires the routes and metrics to them; it must never log a
//! client's address.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use diagnosis_listener::{Closed, Limits, Observer};
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use diagnosis_listener::{ACCEPT_BACKLOG, bind};

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

#[derive(Debug, Clone, Copy)]
enum Kind {
    Api,
    Internal,
}

impl Kind {
    /// The `listener` label of the connection metrics and the request metrics.
    fn label(self) -> &'static str {
        match self {
            Kind::Api => "api",
            Kind::Internal => "internal",
        }
    }
}

/// Counts the listener's open connections in `submit_open_connections` and
/// how they ended in `submit_connections_closed_total`.
impl Observer for Kind {
    fn opened(&self) {
        metrics::gauge!("submit_open_connections", "listener" => self.label()).increment(1.0);
    }

    fn closed(&self, how: Closed) {
        metrics::gauge!("submit_open_connections", "listener" => self.label()).decrement(1.0);
        metrics::counter!(
            "submit_connections_closed_total",
            "listener" => self.label(),
            "reason" => how.label()
        )
        .increment(1);
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
        if let Some(listener) = listeners.internal {
            serve(listener, state, stopped, Kind::Internal).await;
        }
    };
    tokio::join!(api, internal);
    Ok(())
}

async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    mut stopped: watch::Receiver<bool>,
    kind: Kind,
) {
    let settings = &state.settings;
    let limits = Limits {
        max_connections: settings.max_connections,
        header_read: settings.timeouts.header_read,
        write: settings.timeouts.write,
        shutdown_grace: settings.timeouts.shutdown_grace,
    };
    let make_service = |peer| {
        let state = Arc::clone(&state);
        service_fn(move |request| {
            let state = Arc::clone(&state);
            async move {
                let response = match kind {
                    Kind::Api => router::api(&state, request, peer).await,
                    Kind::Internal => router::internal(&state, request).await,
                };
                Ok::<_, Infallible>(response)
            }
        })
    };
    let stop = async move {
        // A dropped sender means the shutdown task is gone: stop as well.
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    diagnosis_listener::serve(listener, limits, kind, make_service, stop).await;
}
