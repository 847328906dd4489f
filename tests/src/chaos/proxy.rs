//! [`FaultProxy`]: an HTTP proxy between the exporter and the S3-compatible server that, for a
//! configurable share of requests, fails the way object stores and networks fail.
//!
//! Each request is forwarded whole (path, query and headers unchanged, so the client's
//! signature still matches) unless it draws a fault, chosen evenly among:
//! * [`Fault::ServerError`]: a `503 SlowDown` answered by the proxy; the store never sees the
//!   request;
//! * [`Fault::Dropped`]: the connection is closed without an answer, half the time after the
//!   store has carried the request out (a write that happened but whose answer is lost);
//! * [`Fault::Stall`]: no answer for [`FaultProxy::start`]'s `stall`, longer than the client's
//!   timeout, then the connection is closed; half the time the store has carried it out;
//! * [`Fault::Truncated`]: the store's answer with its full `Content-Length` but only half its
//!   body, then the connection is closed. An answer without a body cannot be cut, so it is
//!   dropped after the store carried the request out, and counted as dropped.
//!
//! Apart from faults, the proxy can be a slow store ([`FaultProxy::slow_puts`]): the next few
//! `PUT`s reach the store only after a delay, and are then answered as the store answers.
//!
//! The draws come from a seeded generator, so a run's sequence of faults is reproducible for
//! a given order of requests. The proxy listens on 127.0.0.1 only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::dataset::Rng;

/// A fault the proxy injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    ServerError,
    Dropped,
    Stall,
    Truncated,
}

impl Fault {
    pub const ALL: [Fault; 4] = [
        Fault::ServerError,
        Fault::Dropped,
        Fault::Stall,
        Fault::Truncated,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::ServerError => "503 answered",
            Fault::Dropped => "connection dropped",
            Fault::Stall => "stalled past the timeout",
            Fault::Truncated => "body truncated",
        }
    }

    fn index(self) -> usize {
        match self {
            Fault::ServerError => 0,
            Fault::Dropped => 1,
            Fault::Stall => 2,
            Fault::Truncated => 3,
        }
    }
}

/// Faults injected so far, by kind, and requests seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub requests: u64,
    pub by_kind: [u64; 4],
}

impl FaultCounts {
    pub fn total(&self) -> u64 {
        self.by_kind.iter().sum()
    }

    pub fn of(&self, fault: Fault) -> u64 {
        self.by_kind[fault.index()]
    }
}

type ProxyBody = BoxBody<Bytes, std::io::Error>;

/// Why the proxy ends a connection without a (complete) answer.
#[derive(Debug)]
struct Hangup;

impl std::fmt::Display for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the fault proxy hangs up")
    }
}

impl std::error::Error for Hangup {}

struct State {
    upstream: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Parts per million of requests that draw a fault.
    rate_ppm: AtomicU64,
    /// When set, every faulty request gets this fault instead of a drawn one.
    only: Mutex<Option<Fault>>,
    rng: Mutex<Rng>,
    stall: Duration,
    requests: AtomicU64,
    by_kind: [AtomicU64; 4],
    /// `PUT`s still to slow down, and by how long.
    slow_puts: AtomicU64,
    slow_delay: Mutex<Duration>,
    slowed: AtomicU64,
}

/// A fault-injecting proxy on `127.0.0.1:0`; stops accepting when dropped.
pub struct FaultProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.state.upstream)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// A proxy to the HTTP server at `upstream`, injecting no faults until
    /// [`set_rate`](Self::set_rate); a stalled request is held for `stall`.
    pub async fn start(upstream: SocketAddr, seed: u64, stall: Duration) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream,
            client: Client::builder(TokioExecutor::new()).build_http(),
            rate_ppm: AtomicU64::new(0),
            only: Mutex::new(None),
            rng: Mutex::new(Rng::new(seed)),
            stall,
            requests: AtomicU64::new(0),
            by_kind: Default::default(),
            slow_puts: AtomicU64::new(0),
            slow_delay: Mutex::new(Duration::ZERO),
            slowed: AtomicU64::new(0),
        });
        let serving = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&serving);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { state.handle(request).await }
                    });
                    // A connection the proxy hangs up on ends with an error: that is the point.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(FaultProxy {
            addr,
            state,
            accept,
        })
    }

    /// The share of requests (0 to 1) that draw a fault from now on.
    pub fn set_rate(&self, rate: f64) {
        let ppm = (rate.clamp(0.0, 1.0) * 1_000_000.0).round() as u64;
        self.state.rate_ppm.store(ppm, Ordering::SeqCst);
    }

    /// Injects only `fault` (or, with `None`, any fault drawn evenly) from now on.
    pub fn only(&self, fault: Option<Fault>) {
        *self
            .state
            .only
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = fault;
    }

    /// Makes the next `count` `PUT`s slow: each reaches the store `delay` late, then gets the
    /// store's answer. Replaces whatever slowing was still pending.
    pub fn slow_puts(&self, count: u64, delay: Duration) {
        *self
            .state
            .slow_delay
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = delay;
        self.state.slow_puts.store(count, Ordering::SeqCst);
    }

    /// `PUT`s slowed down so far.
    pub fn slowed(&self) -> u64 {
        self.state.slowed.load(Ordering::SeqCst)
    }

    /// The proxy's address as an `http://` endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn counts(&self) -> FaultCounts {
        let mut counts = FaultCounts {
            requests: self.state.requests.load(Ordering::SeqCst),
            ..FaultCounts::default()
        };
        for (count, atomic) in counts.by_kind.iter_mut().zip(&self.state.by_kind) {
            *count = atomic.load(Ordering::SeqCst);
        }
        counts
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl State {
    /// The fault this request draws, if any, and whether a dropped or stalled request is
    /// carried out by the store first.
    fn draw(&self) -> (Option<Fault>, bool) {
        let rate = self.rate_ppm.load(Ordering::SeqCst);
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        if rate == 0 || rng.next_u64() % 1_000_000 >= rate {
            return (None, false);
        }
        let only = *self.only.lock().unwrap_or_else(PoisonError::into_inner);
        let fault = only.unwrap_or(Fault::ALL[(rng.next_u64() % 4) as usize]);
        (Some(fault), rng.next_u64().is_multiple_of(2))
    }

    fn count(&self, fault: Fault) {
        self.by_kind[fault.index()].fetch_add(1, Ordering::SeqCst);
    }

    /// Whether this request is a `PUT` to slow down (and counts it as one).
    fn take_slow_put(&self, request: &Request<Incoming>) -> Option<Duration> {
        if request.method() != hyper::Method::PUT {
            return None;
        }
        self.slow_puts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .ok()?;
        self.slowed.fetch_add(1, Ordering::SeqCst);
        Some(
            *self
                .slow_delay
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    async fn handle(&self, request: Request<Incoming>) -> Result<Response<ProxyBody>, Hangup> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if let Some(delay) = self.take_slow_put(&request) {
            tokio::time::sleep(delay).await;
            return self.forward(request).await.map(whole);
        }
        let (fault, carried_out) = self.draw();
        match fault {
            None => self.forward(request).await.map(whole),
            Some(Fault::ServerError) => {
                self.count(Fault::ServerError);
                Ok(slow_down())
            }
            Some(fault @ (Fault::Dropped | Fault::Stall)) => {
                self.count(fault);
                if carried_out {
                    let _ = self.forward(request).await;
                }
                if fault == Fault::Stall {
                    tokio::time::sleep(self.stall).await;
                }
                Err(Hangup)
            }
            Some(Fault::Truncated) => {
                let response = self.forward(request).await?;
                if response.body().len() < 2 {
                    self.count(Fault::Dropped);
                    return Err(Hangup);
                }
                self.count(Fault::Truncated);
                Ok(truncated(response))
            }
        }
    }

    /// The store's answer to `request`, read whole; a store that cannot be reached is a
    /// dropped connection for the client.
    async fn forward(&self, request: Request<Incoming>) -> Result<Response<Bytes>, Hangup> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map_err(|_| Hangup)?.to_bytes();
        let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
        let uri: hyper::Uri = format!("http://{}{path}", self.upstream)
            .parse()
            .map_err(|_| Hangup)?;
        let mut upstream = Request::builder().method(parts.method).uri(uri);
        for (name, value) in &parts.headers {
            upstream = upstream.header(name, value);
        }
        let upstream = upstream.body(Full::new(body)).map_err(|_| Hangup)?;
        let response = self.client.request(upstream).await.map_err(|_| Hangup)?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|_| Hangup)?.to_bytes();
        Ok(Response::from_parts(parts, body))
    }
}

fn whole(response: Response<Bytes>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    let body = Full::new(body).map_err(|never: Infallible| match never {});
    Response::from_parts(parts, BoxBody::new(body))
}

fn slow_down() -> Response<ProxyBody> {
    let body = Full::new(Bytes::from_static(
        b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
          <Message>Please reduce your request rate.</Message></Error>",
    ))
    .map_err(|never: Infallible| match never {});
    let mut response = Response::new(BoxBody::new(body));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    response
}

/// The answer with its full `Content-Length` but half its body, then a failed body, which
/// makes the server close the connection.
fn truncated(response: Response<Bytes>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    parts.headers.insert(
        hyper::header::CONTENT_LENGTH,
        hyper::header::HeaderValue::from(body.len()),
    );
    let half = body.slice(..body.len() / 2);
    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
        Ok(Frame::data(half)),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "the fault proxy cut the body",
        )),
    ];
    let body = StreamBody::new(futures::stream::iter(frames));
    Response::from_parts(parts, BoxBody::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_client::HttpClient;
    use hyper::Method;

    /// An upstream that answers every request with its method and path, and counts them.
    async fn echo_server() -> (SocketAddr, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let text = format!("{} {}", request.method(), request.uri());
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text)))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn without_faults_requests_pass_unchanged() {
        let (upstream, seen) = echo_server().await;
        let proxy = FaultProxy::start(upstream, 1, Duration::from_secs(5))
            .await
            .unwrap();
        let reply = HttpClient::new()
            .get(&format!("{}/bucket/CA/index.txt?x=1", proxy.endpoint()))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "GET /bucket/CA/index.txt?x=1");
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        assert_eq!(proxy.counts().total(), 0);
        assert_eq!(proxy.counts().requests, 1);
    }

    #[tokio::test]
    async fn each_fault_reaches_the_client_and_is_counted() {
        let (upstream, _) = echo_server().await;
        let proxy = FaultProxy::start(upstream, 7, Duration::from_millis(300))
            .await
            .unwrap();
        proxy.set_rate(1.0);
        let url = format!("{}/bucket/CA/1-2-00001.zip", proxy.endpoint());

        proxy.only(Some(Fault::ServerError));
        let reply = HttpClient::new().get(&url).await.unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(reply.text().contains("SlowDown"), "{}", reply.text());

        proxy.only(Some(Fault::Dropped));
        let error = HttpClient::new().get(&url).await.unwrap_err();
        assert!(format!("{error:#}").contains("closed"), "{error:#}");

        proxy.only(Some(Fault::Truncated));
        let error = HttpClient::new().get(&url).await.unwrap_err();
        assert!(!format!("{error:#}").is_empty());

        proxy.only(Some(Fault::Stall));
        let started = std::time::Instant::now();
        let stalled =
            tokio::time::timeout(Duration::from_millis(100), HttpClient::new().get(&url)).await;
        assert!(stalled.is_err(), "a stalled request was answered");
        assert!(started.elapsed() >= Duration::from_millis(100));

        let counts = proxy.counts();
        for fault in Fault::ALL {
            assert_eq!(counts.of(fault), 1, "{}", fault.name());
        }
    }

    #[tokio::test]
    async fn the_rate_is_the_share_of_faulty_requests() {
        let (upstream, _) = echo_server().await;
        let proxy = FaultProxy::start(upstream, 11, Duration::from_millis(10))
            .await
            .unwrap();
        proxy.set_rate(0.25);
        proxy.only(Some(Fault::ServerError));
        let client = HttpClient::new();
        for _ in 0..400 {
            let _ = client
                .send(
                    Method::GET,
                    &format!("{}/b/k", proxy.endpoint()),
                    &[],
                    Bytes::new(),
                )
                .await;
        }
        let faults = proxy.counts().of(Fault::ServerError);
        assert!(
            (60..=140).contains(&faults),
            "{faults} of 400 at a rate of 0.25"
        );
    }
}
