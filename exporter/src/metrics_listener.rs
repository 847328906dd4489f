//! The exporter's internal listener (`METRICS_ADDR`): Prometheus `/metrics`
//! while it runs on its schedule. Serves nothing else, and is only opened with
//! `METRIC_PROVIDER=prometheus` (DESIGN §3.4).
//!
//! Like the submit service's listeners it bounds how long a client may take to
//! send its headers, and how long a keep-alive connection may sit idle: hyper's
//! header timer runs from accept and again after every response (DESIGN §7).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
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
    header_read_timeout: Duration,
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
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| ListenerError::Bind(addr, e))?;
        let metrics_addr = listener.local_addr().map_err(ListenerError::Address)?;
        tracing::info!(
            %metrics_addr,
            "diagnosis-exporter serving /metrics on the internal listener"
        );
        Ok(Some(InternalListener {
            listener,
            handle,
            header_read_timeout: config.http_read_timeout,
        }))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `/metrics` until the future is dropped ([`serve`]).
    pub async fn serve(self) {
        serve(self.listener, self.handle, self.header_read_timeout).await;
    }
}

/// Serves `GET /metrics` until the process ends. A connection that does not
/// send a complete request head within `header_read_timeout`
/// (`HTTP_READ_TIMEOUT_SECONDS`) of being accepted or of its previous response
/// is closed.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, header_read_timeout: Duration) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(16 * 1024);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let handle = handle.clone();
        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
            let handle = handle.clone();
            async move {
                let mut response = if request.uri().path() == "/metrics" {
                    Response::new(Full::new(Bytes::from(handle.render())))
                } else {
                    Response::new(Full::new(Bytes::from_static(b"not found\n")))
                };
                if request.uri().path() != "/metrics" {
                    *response.status_mut() = StatusCode::NOT_FOUND;
                }
                Ok::<_, Infallible>(response)
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}
