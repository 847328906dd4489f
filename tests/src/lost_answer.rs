//! A TCP proxy in front of PostgreSQL that loses one answer, for the tests of claims whose
//! answer never reaches the service.
//!
//! [`LostAnswerProxy`] forwards every connection both ways. Once [`armed`](LostAnswerProxy::arm),
//! the first simple-query `COMMIT` ([`COMMIT_MESSAGE`]) that a client sends after arming is
//! forwarded to the server, the server's answer is read and thrown away, and the client's
//! connection is closed: the transaction commits, and the client never hears it, as when a
//! failover, a dropped connection or a watchdog falls between the two. Only bytes that arrive
//! after arming are matched, so a `COMMIT` sent earlier never fires it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The frontend's simple `Query` message for `COMMIT`: type `Q`, length 11, `COMMIT\0`.
pub const COMMIT_MESSAGE: [u8; 12] = [
    0x51, 0x00, 0x00, 0x00, 0x0b, 0x43, 0x4f, 0x4d, 0x4d, 0x49, 0x54, 0x00,
];

/// A forwarding proxy on `127.0.0.1:0`; stops accepting when dropped.
#[derive(Debug)]
pub struct LostAnswerProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Shared {
    /// The generation of the current arming; 0 while disarmed.
    armed: AtomicU64,
    generations: AtomicU64,
    /// Signalled once a `COMMIT` was answered by the server and its answer thrown away.
    lost: Notify,
}

/// What the two directions of one proxied connection share.
#[derive(Debug, Default)]
struct Cut {
    /// Set before the `COMMIT` is forwarded: nothing from the server reaches the client after it.
    cut: AtomicBool,
    /// Signalled when the server's answer to the `COMMIT` arrived.
    answered: Notify,
}

impl LostAnswerProxy {
    /// A proxy to `upstream`, forwarding everything until armed.
    pub async fn start(upstream: SocketAddr) -> LostAnswerProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the proxy: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy address: {e}"));
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = Arc::clone(&accepting);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let cut = Arc::new(Cut::default());
                    tokio::join!(
                        to_server(client_read, server_write, &shared, &cut),
                        to_client(server_read, client_write, &shared, &cut),
                    );
                });
            }
        });
        LostAnswerProxy {
            addr,
            shared,
            accept,
        }
    }

    /// Loses the answer to the next `COMMIT` any client sends from now on.
    pub fn arm(&self) {
        let generation = self.shared.generations.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared.armed.store(generation, Ordering::SeqCst);
    }

    /// Completes once a `COMMIT` sent after arming was answered by the server and the answer
    /// thrown away (at once if that already happened).
    pub async fn answer_lost(&self) {
        self.shared.lost.notified().await;
    }

    /// `url` (a `postgres://` URL) pointed at this proxy instead of its host and port.
    pub fn url_for(&self, url: &str) -> String {
        crate::black_hole::url_via(url, self.addr)
    }
}

impl Drop for LostAnswerProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Forwards the client's bytes, looking for a `COMMIT` among those read after arming. The one
/// connection that finds it first cuts its answer off, forwards it, and ends once the server
/// has answered, closing the client's connection.
async fn to_server(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shared: &Shared, cut: &Cut) {
    let mut buffer = vec![0u8; 16 * 1024];
    // Bytes read since the arming of `generation`, at most one message short of a match.
    let mut seen = Vec::new();
    let mut generation = 0;
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(read) => read,
        };
        let chunk = &buffer[..read];
        let armed = shared.armed.load(Ordering::SeqCst);
        if armed != generation {
            seen.clear();
            generation = armed;
        }
        let fires = armed != 0 && {
            seen.extend_from_slice(chunk);
            let found = seen
                .windows(COMMIT_MESSAGE.len())
                .any(|window| window == COMMIT_MESSAGE);
            let keep = seen.len().saturating_sub(COMMIT_MESSAGE.len() - 1);
            seen.drain(..keep);
            found
                && shared
                    .armed
                    .compare_exchange(armed, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
        };
        if fires {
            cut.cut.store(true, Ordering::SeqCst);
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
        if fires {
            // Keep the server's side open until it has answered: the COMMIT is carried out.
            cut.answered.notified().await;
            return;
        }
    }
}

/// Forwards the server's bytes until the connection is cut; then reads the answer, throws it
/// away and ends, which closes the client's connection.
async fn to_client(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shared: &Shared, cut: &Cut) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                cut.answered.notify_one();
                return;
            }
            Ok(read) => read,
        };
        if cut.cut.load(Ordering::SeqCst) {
            cut.answered.notify_one();
            shared.lost.notify_one();
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_commit_sent_after_arming_loses_its_answer() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = LostAnswerProxy::start(upstream.local_addr().unwrap()).await;
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        let (mut server, _) = upstream.accept().await.unwrap();
        let mut received = [0u8; COMMIT_MESSAGE.len()];

        // Before arming, a COMMIT and its answer pass.
        client.write_all(&COMMIT_MESSAGE).await.unwrap();
        server.read_exact(&mut received).await.unwrap();
        server.write_all(b"C").await.unwrap();
        let mut answer = [0u8; 1];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"C");

        // Half a COMMIT before arming and the rest after do not fire it; a whole one does.
        client.write_all(&COMMIT_MESSAGE[..6]).await.unwrap();
        server.read_exact(&mut received[..6]).await.unwrap();
        proxy.arm();
        client.write_all(&COMMIT_MESSAGE[6..]).await.unwrap();
        server.read_exact(&mut received[6..]).await.unwrap();
        server.write_all(b"D").await.unwrap();
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"D", "a fragment fired the proxy");

        client.write_all(b"xyz").await.unwrap();
        client.write_all(&COMMIT_MESSAGE).await.unwrap();
        let mut forwarded = vec![0u8; 3 + COMMIT_MESSAGE.len()];
        server.read_exact(&mut forwarded).await.unwrap();
        assert!(forwarded.ends_with(&COMMIT_MESSAGE));
        server.write_all(b"E").await.unwrap();
        proxy.answer_lost().await;
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the answer reached the client: {rest:?}");
    }
}
