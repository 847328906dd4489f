//! A minimal HTTP/1.1 client for tests and the app simulator: whole bodies in,
//! whole bodies out, on a pooled keep-alive connection.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A response read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A cloneable client with connection reuse.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> HttpClient {
        HttpClient {
            inner: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends `method url` with `headers` and `body`, returning the whole reply.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<Reply> {
        let headers: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(name, value)| (*name, value.as_bytes()))
            .collect();
        self.send_raw(method, url, &headers, body).await
    }

    /// As [`HttpClient::send`], with header values as raw bytes, which need not
    /// be text (any byte a header value may hold on the wire).
    pub async fn send_raw(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &[u8])],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<Reply> {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into()))?;
        let response = self.inner.request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn get(&self, url: &str) -> anyhow::Result<Reply> {
        self.send(Method::GET, url, &[], Bytes::new()).await
    }

    /// A protobuf POST with the headers the COVID Alert apps send.
    pub async fn post_protobuf(&self, url: &str, body: Vec<u8>) -> anyhow::Result<Reply> {
        self.post_protobuf_with(url, &[], body).await
    }

    /// A protobuf POST with the apps' headers and `extra` ones (such as a proxy's
    /// `X-Forwarded-For`).
    pub async fn post_protobuf_with(
        &self,
        url: &str,
        extra: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<Reply> {
        let mut headers = vec![
            ("content-type", "application/x-protobuf"),
            ("cache-control", "no-store"),
        ];
        headers.extend_from_slice(extra);
        self.send(Method::POST, url, &headers, body).await
    }
}
