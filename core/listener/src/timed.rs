//! The write timeout (DESIGN §3.4: no connection keeps its slot forever).
//!
//! hyper's header timer runs only while a connection waits for a request head.
//! A client that pipelines requests and never reads the answers leaves hyper
//! waiting for the socket to take the next response, with no timer running, for
//! as long as the client likes. [`TimedStream`] wraps an accepted socket and
//! fails a write that has made no progress for the write timeout.
//!
//! Progress is the kernel taking at least one byte of a write. The timer starts
//! at the first write that cannot go on and stops at the next byte taken, so a
//! slow client that keeps reading is never cut off however long its response
//! takes, and a connection between requests (nothing to write) is left to the
//! header timer. A connection that timed out is reset rather than closed, so the
//! kernel drops the bytes it holds for a client that will not read them instead
//! of retrying them for minutes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// The cause of the `TimedOut` error a stalled write fails with.
#[derive(Debug, thiserror::Error)]
#[error("the response write made no progress for {0:?}")]
pub struct WriteStalled(Duration);

/// Whether `error`, or any error it was caused by, is a stalled write of a
/// [`TimedStream`].
pub fn is_write_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        let stalled = error.is::<WriteStalled>()
            || error
                .downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref)
                .is_some_and(|inner| inner.is::<WriteStalled>());
        if stalled {
            return true;
        }
        cause = error.source();
    }
    false
}

/// An accepted socket whose writes fail once they have made no progress for
/// the write timeout. Reads pass through untouched.
#[derive(Debug)]
pub struct TimedStream {
    stream: TcpStream,
    timeout: Duration,
    /// Armed while a write waits for the socket; created at the first stall.
    stall: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl TimedStream {
    pub fn new(stream: TcpStream, timeout: Duration) -> TimedStream {
        TimedStream {
            stream,
            timeout,
            stall: None,
            stalled: false,
        }
    }

    /// After a write or flush that could not go on: arms the timer if this is
    /// the first such since the last progress, and fails once it has run out.
    /// Polling the timer also wakes the connection when it runs out.
    fn wait_for_progress(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.stalled {
            self.stalled = true;
            let deadline = Instant::now() + self.timeout;
            match &mut self.stall {
                Some(stall) => stall.as_mut().reset(deadline),
                None => self.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let Some(stall) = &mut self.stall else {
            return Poll::Pending;
        };
        match stall.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                // Closed with a reset: the client will not read what is queued.
                let _ = self.stream.set_zero_linger();
                Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    WriteStalled(self.timeout),
                ))
            }
        }
    }

    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) if n > 0 => {
                self.stalled = false;
                Poll::Ready(Ok(n))
            }
            Poll::Pending => self.wait_for_progress(cx).map(Err),
            done => done,
        }
    }

    fn after_flush(
        &mut self,
        cx: &mut Context<'_>,
        flushed: Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        match flushed {
            Poll::Pending => self.wait_for_progress(cx).map(Err),
            done => done,
        }
    }
}

impl AsyncRead for TimedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.after_write(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.stream).poll_flush(cx);
        this.after_flush(cx, flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let shut = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.after_flush(cx, shut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpSocket};

    /// A connected pair: a client with a 4 KiB receive buffer, and the accepted
    /// side with a 4 KiB send buffer, wrapped with `timeout`.
    async fn pair(timeout: Duration) -> (TcpStream, TimedStream) {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let client = TcpSocket::new_v4().unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        let client = client
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&accepted)
            .set_send_buffer_size(4096)
            .unwrap();
        (client, TimedStream::new(accepted, timeout))
    }

    #[tokio::test]
    async fn a_write_the_client_never_reads_fails_after_the_timeout_and_resets() {
        let timeout = Duration::from_millis(300);
        let (mut client, mut server) = pair(timeout).await;
        let started = Instant::now();
        let chunk = vec![b'x'; 16 * 1024];
        let writes = async {
            loop {
                if let Err(error) = server.write_all(&chunk).await {
                    break error;
                }
            }
        };
        let error = tokio::time::timeout(Duration::from_secs(30), writes)
            .await
            .expect("the stalled write failed within 30 s");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(is_write_timeout(&error), "{error:?}");
        assert!(
            started.elapsed() >= timeout,
            "failed after {:?}, before the timeout",
            started.elapsed()
        );
        drop(server);
        let mut sink = Vec::new();
        let read = client.read_to_end(&mut sink).await;
        assert_eq!(
            read.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::ConnectionReset),
            "the client was not reset"
        );
    }

    #[tokio::test]
    async fn a_slow_client_that_keeps_reading_is_never_cut_off() {
        let timeout = Duration::from_millis(400);
        let (mut client, mut server) = pair(timeout).await;
        const TOTAL: usize = 128 * 1024;
        // 4 KiB every 40 ms: the whole response takes several timeouts, but no
        // write waits anywhere near one.
        let reader = tokio::spawn(async move {
            let mut buffer = [0_u8; 4096];
            let mut read = 0;
            while read < TOTAL {
                tokio::time::sleep(Duration::from_millis(40)).await;
                let n = client.read(&mut buffer).await.unwrap();
                assert!(n > 0, "closed after {read} bytes");
                read += n;
            }
            client
        });
        let started = Instant::now();
        server.write_all(&vec![b'x'; TOTAL]).await.unwrap();
        let mut client = reader.await.unwrap();
        assert!(
            started.elapsed() > timeout,
            "the response took {:?}: the test did not outlast the timeout",
            started.elapsed()
        );
        // A timer armed by an earlier stall does not fire on a later write.
        tokio::time::sleep(timeout * 2).await;
        server.write_all(b"later").await.unwrap();
        let mut later = [0_u8; 5];
        client.read_exact(&mut later).await.unwrap();
        assert_eq!(&later, b"later");
    }

    #[test]
    fn a_stall_is_recognised_through_the_errors_that_wrap_it() {
        let stalled = io::Error::new(
            io::ErrorKind::TimedOut,
            WriteStalled(Duration::from_secs(1)),
        );
        assert!(is_write_timeout(&stalled));
        assert!(is_write_timeout(&WriteStalled(Duration::from_secs(1))));
        let other = io::Error::new(io::ErrorKind::TimedOut, "keepalive");
        assert!(!is_write_timeout(&other));
        assert!(!is_write_timeout(&io::Error::from(io::ErrorKind::TimedOut)));
    }
}
