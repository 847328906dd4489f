//! The exporter's internal listener (`METRICS_ADDR`): Prometheus `/metrics`
//! while it runs on its schedule. Serves nothing else, and is only opened with
//! `METRIC_PROVIDER=prometheus` (DESIGN §3.4).
//!
//! It is the same bounded HTTP/1 listener as the submit service's
//! (`diagnosis-listener`), capped and timed by the same variables:
//! `MAX_CONNECTIONS` open connections, `HTTP_READ_TIMEOUT_SECONDS` for a request
//! head and for an idle keep-alive connection, `HTTP_WRITE_TIMEOUT_SECONDS` for
//! a response write that makes no progress, and TCP keepalive (DESIGN §3.4, §7).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use diagnosis_core::config::ListenerConfig;
use diagnosis_listener::{Closed, Limits, Observer};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::config::Config;

/// Why the internal listener could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("METRIC_PROVIDER: the Prometheus recorder is not installed")]
    NoRecorder,
    #[error("while binding METRICS_ADDR {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("while reading METRICS_ADDR's address: {0}")]
    Address(std::io::Error),
}

/// The internal listener of the scheduled mode, bound, with what it serves.
#[derive(Debug)]
pub struct InternalListener {
    listener: TcpListener,
    handle: PrometheusHandle,
    bounds: ListenerConfig,
}

impl InternalListener {
    /// Binds `METRICS_ADDR` when the configuration has `/metrics` to serve there (DESIGN
    /// §3.4), else returns `None`; logs which. `handle` is the installed Prometheus recorder's.
    pub async fn bind(
        config: &Config,
        handle: Option<&PrometheusHandle>,
    ) -> Result<Option<InternalListener>, ListenerError> {
        if !config.serves_internal_listener() {
            tracing::info!(
                "diagnosis-exporter opens no listener: the internal listener (METRICS_ADDR) \
                 serves only METRIC_PROVIDER=prometheus"
            );
            return Ok(None);
        }
        let handle = handle.cloned().ok_or(ListenerError::NoRecorder)?;
        let addr = config.common.metrics_addr;
        let listener = diagnosis_listener::bind(addr).map_err(|e| ListenerError::Bind(addr, e))?;
        let metrics_addr = listener.local_addr().map_err(ListenerError::Address)?;
        tracing::info!(
            %metrics_addr,
            max_connections = config.listener.max_connections,
            "diagnosis-exporter serving /metrics on the internal listener"
        );
        Ok(Some(InternalListener {
            listener,
            handle,
            bounds: config.listener,
        }))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `/metrics` until the future is dropped ([`serve`]).
    pub async fn serve(self) {
        serve(self.listener, self.handle, self.bounds).await;
    }
}

/// Counts the listener's open connections in `exporter_open_connections` and
/// how they ended in `exporter_connections_closed_total`.
#[derive(Debug, Clone, Copy)]
struct Connections;

impl Observer for Connections {
    fn opened(&self) {
        metrics::gauge!("exporter_open_connections").increment(1.0);
    }

    fn closed(&self, how: Closed) {
        metrics::gauge!("exporter_open_connections").decrement(1.0);
        metrics::counter!("exporter_connections_closed_total", "reason" => how.label())
            .increment(1);
    }
}

/// Serves `GET /metrics` within `bounds` until the future is dropped.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, bounds: ListenerConfig) {
    let limits = Limits {
        max_connections: bounds.max_connections,
        header_read: bounds.read_timeout,
        write: bounds.write_timeout,
        // The scheduled mode stops it by dropping it: there is nothing to drain.
        shutdown_grace: Duration::ZERO,
    };
    let make_service = |_peer| {
        let handle = handle.clone();
        service_fn(move |request: Request<hyper::body::Incoming>| {
            let handle = handle.clone();
            async move { Ok::<_, Infallible>(respond(&request, &handle)) }
        })
    };
    diagnosis_listener::serve(
        listener,
        limits,
        Connections,
        make_service,
        std::future::pending(),
    )
    .await;
}

fn respond(
    request: &Request<hyper::body::Incoming>,
    handle: &PrometheusHandle,
) -> Response<Full<Bytes>> {
    if request.uri().path() == "/metrics" {
        return Response::new(Full::new(Bytes::from(handle.render())));
    }
    let mut response = Response::new(Full::new(Bytes::from_static(b"not found\n")));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}
