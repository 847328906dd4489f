//! The exporter's internal listener (`METRICS_ADDR`): Prometheus `/metrics`
//! while it runs on its schedule. Serves nothing else.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

/// Serves `GET /metrics` until the process ends.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
