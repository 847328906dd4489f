//! The accept loop: a slot, then a connection, then a task that serves it.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::timed::TimedStream;
use crate::{Closed, Limits, Observer, socket};

/// The most a connection buffers of a request head (and of responses waiting
/// to be written): far more than any request of the API needs.
const MAX_BUFFER_BYTES: usize = 16 * 1024;

/// Serves `listener` within `limits` until `stop` completes, then stops
/// accepting and lets the connections it holds finish their requests for up to
/// `limits.shutdown_grace`. `make_service` builds the service of a connection
/// from its peer's address.
pub async fn serve<O, M, S, B>(
    listener: TcpListener,
    limits: Limits,
    observer: O,
    mut make_service: M,
    stop: impl Future<Output = ()>,
) where
    O: Observer,
    M: FnMut(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let builder = http1_builder(&limits);
    let slots = connection_slots(&limits);
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
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
            () = &mut stop => break,
        };
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut stop => break,
        };
        let Some((stream, peer)) = accepted else {
            continue;
        };
        let open = Open::new(observer.clone(), slot);
        if let Err(e) = socket::prepare(&stream) {
            tracing::debug!(error = %e, "setting up an accepted socket failed");
        }
        let io = TokioIo::new(TimedStream::new(stream, limits.write));
        let connection = graceful.watch(builder.serve_connection(io, make_service(peer)));
        tokio::spawn(async move {
            let result = connection.await;
            if let Err(e) = &result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            open.close(Closed::of(&result));
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; closing the remaining connections");
        }
    }
}

/// A listener's `MAX_CONNECTIONS` slots, their descriptors claimed from the process's
/// open-file limit ([`crate::open_files::claim`]).
fn connection_slots(limits: &Limits) -> Arc<Semaphore> {
    crate::open_files::claim(limits.max_connections, "MAX_CONNECTIONS");
    Arc::new(Semaphore::new(limits.max_connections))
}

/// The next connection, or `None` after a failed accept, once backed off.
async fn accept(listener: &TcpListener) -> Option<(TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok(accepted) => Some(accepted),
        Err(e) => {
            // Out of file descriptors and the like: back off, keep serving.
            tracing::warn!(error = %e, "accepting a connection failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    // The header timer also runs while a keep-alive connection waits for its
    // next request, so it doubles as the idle timeout (DESIGN §3.4).
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(MAX_BUFFER_BYTES);
    builder
}

/// One open connection: holds one of the listener's slots and tells the
/// observer when it ends, however it ends, before the slot is given back.
struct Open<O: Observer> {
    observer: O,
    how: Closed,
    _slot: OwnedSemaphorePermit,
}

impl<O: Observer> Open<O> {
    fn new(observer: O, slot: OwnedSemaphorePermit) -> Open<O> {
        observer.opened();
        Open {
            observer,
            how: Closed::Ended,
            _slot: slot,
        }
    }

    fn close(mut self, how: Closed) {
        self.how = how;
    }
}

impl<O: Observer> Drop for Open<O> {
    fn drop(&mut self) {
        self.observer.closed(self.how);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream};
    use tokio::sync::mpsc;

    /// Reports every `closed` on a channel the test awaits.
    #[derive(Clone)]
    struct Reported(mpsc::UnboundedSender<Closed>);

    impl Observer for Reported {
        fn opened(&self) {}
        fn closed(&self, how: Closed) {
            let _ = self.0.send(how);
        }
    }

    /// A listener answering every request with a 1 KiB body, within `limits`.
    async fn listen(limits: Limits) -> (SocketAddr, mpsc::UnboundedReceiver<Closed>) {
        let listener = socket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        let (report, reports) = mpsc::unbounded_channel();
        tokio::spawn(serve(
            listener,
            limits,
            Reported(report),
            |_| {
                hyper::service::service_fn(|_request| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(vec![b'x'; 1024]))))
                })
            },
            std::future::pending(),
        ));
        (addr, reports)
    }

    async fn next_close(reports: &mut mpsc::UnboundedReceiver<Closed>) -> Closed {
        tokio::time::timeout(Duration::from_secs(30), reports.recv())
            .await
            .expect("a connection closed within 30 s")
            .expect("the listener is running")
    }

    const LIMITS: Limits = Limits {
        max_connections: 2,
        header_read: Duration::from_secs(60),
        write: Duration::from_millis(300),
        shutdown_grace: Duration::ZERO,
    };

    #[tokio::test]
    async fn a_client_that_pipelines_and_never_reads_is_closed_for_its_stalled_write() {
        let (addr, mut reports) = listen(LIMITS).await;
        let client = TcpSocket::new_v4().unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        let mut client = client.connect(addr).await.unwrap();
        // Requests for as long as the server takes them: past what the kernel
        // buffers on its side (up to 4 MiB of responses), its writes stall.
        let requests = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(100);
        let writer =
            tokio::spawn(async move { while client.write_all(&requests).await.is_ok() {} });
        assert_eq!(next_close(&mut reports).await, Closed::WriteTimeout);
        writer.abort();
    }

    #[tokio::test]
    async fn a_silent_client_is_closed_for_the_read_timeout_and_a_finished_one_has_ended() {
        let (addr, mut reports) = listen(Limits {
            header_read: Duration::from_millis(300),
            ..LIMITS
        })
        .await;
        let _silent = TcpStream::connect(addr).await.unwrap();
        assert_eq!(next_close(&mut reports).await, Closed::ReadTimeout);

        let mut polite = TcpStream::connect(addr).await.unwrap();
        polite
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        polite.read_to_end(&mut response).await.unwrap();
        assert!(response.starts_with(b"HTTP/1.1 200"));
        assert_eq!(next_close(&mut reports).await, Closed::Ended);

        let mut garbled = TcpStream::connect(addr).await.unwrap();
        garbled
            .write_all(b"\x00\x01 not http\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(next_close(&mut reports).await, Closed::Error);
    }
}
