//! A PostgreSQL proxy that counts what a client asks of the server: the statements (each
//! `Sync` or simple `Query`) and the round trips (each flight of messages the client sends
//! with none of its earlier statements still unanswered, i.e. after waiting for the server).
//! For tests and the benchmark only; it forwards every byte unchanged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// A counting proxy on `127.0.0.1:0`; stops accepting when dropped.
#[derive(Debug)]
pub struct CountingProxy {
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    accept: tokio::task::JoinHandle<()>,
}

/// What the proxy counts. `unanswered`: statements sent and not yet answered by the server's
/// `ReadyForQuery`; `in_flight`: the client has sent messages since it last had every
/// statement answered.
#[derive(Debug, Default)]
struct Counts {
    statements: AtomicUsize,
    round_trips: AtomicUsize,
    unanswered: AtomicUsize,
    in_flight: AtomicBool,
}

impl CountingProxy {
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<CountingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let shared = Arc::clone(&counts);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counts = Arc::clone(&shared);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    tokio::join!(
                        forward_requests(&mut client_read, &mut server_write, &counts),
                        forward_answers(&mut server_read, &mut client_write, &counts),
                    );
                });
            }
        });
        Ok(CountingProxy {
            addr,
            counts,
            accept,
        })
    }

    /// `url` (a `postgres://` URL) pointed at this proxy instead of its host and port.
    pub fn url_for(&self, url: &str) -> String {
        crate::black_hole::url_via(url, self.addr)
    }

    /// Statements sent so far over every connection.
    pub fn statements(&self) -> usize {
        self.counts.statements.load(Ordering::SeqCst)
    }

    /// Round trips so far over every connection.
    pub fn round_trips(&self) -> usize {
        self.counts.round_trips.load(Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Forwards the client's messages one by one, counting each before it is sent on. The first
/// messages have no type byte: an SSL or GSS encryption request (answered "no" by the test
/// cluster), then the startup message.
async fn forward_requests(from: &mut OwnedReadHalf, to: &mut OwnedWriteHalf, counts: &Counts) {
    const ENCRYPTION_REQUESTS: [u32; 2] = [80_877_103, 80_877_104];
    let mut started = false;
    loop {
        let mut head = vec![0_u8; if started { 5 } else { 4 }];
        if from.read_exact(&mut head).await.is_err() {
            let _ = to.shutdown().await;
            return;
        }
        let length_at = head.len() - 4;
        let mut length = [0_u8; 4];
        length.copy_from_slice(&head[length_at..]);
        let mut body = vec![0_u8; (u32::from_be_bytes(length) as usize).saturating_sub(4)];
        if from.read_exact(&mut body).await.is_err() {
            let _ = to.shutdown().await;
            return;
        }
        if started {
            if !counts.in_flight.swap(true, Ordering::SeqCst) {
                counts.round_trips.fetch_add(1, Ordering::SeqCst);
            }
            if matches!(head[0], b'Q' | b'S') {
                counts.statements.fetch_add(1, Ordering::SeqCst);
                counts.unanswered.fetch_add(1, Ordering::SeqCst);
            }
        } else {
            let code = body.get(..4).map(|c| {
                let mut code = [0_u8; 4];
                code.copy_from_slice(c);
                u32::from_be_bytes(code)
            });
            started = !code.is_some_and(|code| ENCRYPTION_REQUESTS.contains(&code));
        }
        head.extend_from_slice(&body);
        if to.write_all(&head).await.is_err() {
            return;
        }
    }
}

/// Forwards the server's messages, counting each `ReadyForQuery` as the answer to one
/// statement before the client can see it. The first byte may be the one-byte refusal of an
/// encryption request.
async fn forward_answers(from: &mut OwnedReadHalf, to: &mut OwnedWriteHalf, counts: &Counts) {
    let mut first = true;
    loop {
        let mut kind = [0_u8; 1];
        if from.read_exact(&mut kind).await.is_err() {
            let _ = to.shutdown().await;
            return;
        }
        let mut message = kind.to_vec();
        if !(first && kind[0] == b'N') {
            let mut length = [0_u8; 4];
            if from.read_exact(&mut length).await.is_err() {
                return;
            }
            let mut body = vec![0_u8; (u32::from_be_bytes(length) as usize).saturating_sub(4)];
            if from.read_exact(&mut body).await.is_err() {
                return;
            }
            message.extend_from_slice(&length);
            message.extend_from_slice(&body);
            if kind[0] == b'Z' {
                let before = counts
                    .unanswered
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                        Some(n.saturating_sub(1))
                    })
                    .unwrap_or(0);
                if before <= 1 {
                    counts.in_flight.store(false, Ordering::SeqCst);
                }
            }
        }
        first = false;
        if to.write_all(&message).await.is_err() {
            return;
        }
    }
}
