//! Opening connections so that an unreachable database fails fast (DESIGN §6).
//!
//! The pool's [`Connector`] opens the socket itself rather than through tokio-postgres, so that
//! every connection, with or without TLS, gets:
//!
//! * a connect timeout that covers the whole attempt (TCP, the TLS handshake and
//!   authentication), not only the TCP handshake;
//! * TCP keepalive and, on Linux, `TCP_USER_TIMEOUT`, so that a peer that vanished from the
//!   network is noticed by the kernel;
//! * a response watchdog ([`Watched`]): once something was sent, the server must answer within
//!   the response timeout, or the connection fails. This is the bound for a peer that keeps the
//!   TCP connection open but never answers (a hung proxy, a frozen server): the server's own
//!   `statement_timeout` cannot fire for a query the server never received. A connection that
//!   failed this way is closed, so the pool discards it instead of lending it again. The one
//!   connection without it is the migrations' own, whose statements may run for any time
//!   (DESIGN §5);
//! * libpq's `sslmode=prefer`: a TLS attempt that fails is tried again without TLS
//!   ([`Connector::again_without_tls`]).
//!
//! The watchdog knows nothing of the protocol: it measures silence after a write. A peer that
//! stops in the middle of an answer is left to keepalive and to the next statement.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use deadpool_postgres::Connect;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};
use tokio_postgres::config::{Host, SslMode, TargetSessionAttrs};
use tokio_postgres::tls::{MakeTlsConnect, NoTls};
use tokio_postgres::{Client, Config, Connection};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{connect_failure_reason, describe_postgres};

/// PostgreSQL's default port.
const DEFAULT_PORT: u16 = 5432;

/// Keepalive probes sent before the kernel gives a silent peer up.
const KEEPALIVE_RETRIES: u32 = 3;

/// Opens connections for the pool: see the module documentation.
#[derive(Clone)]
pub(crate) struct Connector {
    /// `None` for `sslmode=disable`.
    pub tls: Option<MakeRustlsConnect>,
    /// Bounds one connection attempt, TCP to authentication, and paces keepalive.
    pub connect_timeout: Duration,
    /// How long a connection may stay silent after sending; `None` for the migrations' session,
    /// whose statements may run for any time (DESIGN §5).
    pub response_timeout: Option<Duration>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &self.tls.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

impl Connect for Connector {
    fn connect(
        &self,
        pg_config: &Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let pg_config = pg_config.clone();
        Box::pin(async move { self.connect_any(&pg_config).await })
    }
}

/// One place to try: a host name (for TLS) and where to reach it.
enum Target {
    Tcp {
        name: String,
        addr: Option<IpAddr>,
        port: u16,
    },
    #[cfg(unix)]
    Unix { path: std::path::PathBuf, port: u16 },
}

impl Connector {
    /// Tries each host of the URL in order, as libpq does, each within the connect timeout.
    async fn connect_any(
        &self,
        pg_config: &Config,
    ) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        let targets = targets(pg_config);
        if targets.is_empty() {
            return Err(failure(pg_config, "DATABASE_URL names no host").await);
        }
        let mut last_error = None;
        for target in targets {
            let attempt =
                tokio::time::timeout(self.connect_timeout, self.attempt(pg_config, &target));
            match attempt.await {
                Ok(Ok(connected)) => return Ok(connected),
                Ok(Err(error)) => last_error = Some(error),
                Err(_) => {
                    last_error = Some(
                        failure(
                            pg_config,
                            &format!(
                                "no answer within the connect timeout ({} s, \
                                 DATABASE_CONNECT_TIMEOUT_SECONDS)",
                                self.connect_timeout.as_secs()
                            ),
                        )
                        .await,
                    );
                }
            }
        }
        match last_error {
            Some(error) => Err(error),
            None => Err(failure(pg_config, "DATABASE_URL names no host").await),
        }
    }

    async fn attempt(
        &self,
        pg_config: &Config,
        target: &Target,
    ) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        let (stream, tls_name) = self.open(pg_config, target).await?;
        let (client, task) = match (&self.tls, tls_name) {
            (Some(make), Some(name)) => match start_tls(pg_config, stream, make, name).await {
                Ok(connected) => connected,
                Err(error) if pg_config.get_ssl_mode() == SslMode::Prefer => {
                    self.again_without_tls(pg_config, target, &error).await?
                }
                Err(error) => return Err(error),
            },
            // libpq does not use TLS on a unix socket, whatever sslmode says.
            (None, _) | (_, None) => start_plain(pg_config, stream).await?,
        };
        if pg_config.get_target_session_attrs() == TargetSessionAttrs::ReadWrite {
            let rows = client.simple_query("SHOW transaction_read_only").await?;
            let read_only = rows.iter().any(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0) == Some("on"),
                _ => false,
            });
            if read_only {
                task.abort();
                return Err(
                    failure(pg_config, "the server is read-only (target_session_attrs)").await,
                );
            }
        }
        Ok((client, task))
    }

    /// The socket to `target`, watched, and the name a TLS handshake checks (`None` on a unix
    /// socket).
    async fn open<'a>(
        &self,
        pg_config: &Config,
        target: &'a Target,
    ) -> Result<(Watched<Transport>, Option<&'a str>), tokio_postgres::Error> {
        let (transport, tls_name) = match target {
            Target::Tcp { name, addr, port } => match self.open_tcp(name, *addr, *port).await {
                Ok(stream) => (Transport::Tcp(stream), Some(name.as_str())),
                Err(error) => return Err(failure(pg_config, &error.to_string()).await),
            },
            #[cfg(unix)]
            Target::Unix { path, port } => {
                let socket = path.join(format!(".s.PGSQL.{port}"));
                match tokio::net::UnixStream::connect(&socket).await {
                    Ok(stream) => (Transport::Unix(stream), None),
                    Err(error) => {
                        let message = format!("cannot connect to {}: {error}", socket.display());
                        return Err(failure(pg_config, &message).await);
                    }
                }
            }
        };
        Ok((Watched::new(transport, self.response_timeout), tls_name))
    }

    /// libpq's `sslmode=prefer`: a connection whose TLS attempt failed (a certificate the root
    /// certificate refuses, a login refused over TLS) is tried once more without TLS, and fails
    /// only when that fails too, with both reasons.
    async fn again_without_tls(
        &self,
        pg_config: &Config,
        target: &Target,
        tls_error: &tokio_postgres::Error,
    ) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        let tls_reason = connect_failure_reason(tls_error);
        let outcome = match self.open(pg_config, target).await {
            Ok((stream, _)) => start_plain(pg_config, stream).await,
            Err(error) => Err(error),
        };
        match outcome {
            Ok(connected) => {
                tracing::warn!(
                    reason = %tls_reason,
                    "the TLS attempt failed; connected without TLS, as sslmode=prefer allows \
                     (sslmode=require or verify-full refuse this)"
                );
                Ok(connected)
            }
            Err(plain_error) => {
                let message = format!(
                    "{tls_reason}; tried again without TLS, as sslmode=prefer does: {}",
                    connect_failure_reason(&plain_error)
                );
                Err(failure(pg_config, &message).await)
            }
        }
    }

    /// Resolves and connects, then turns keepalive and the user timeout on.
    async fn open_tcp(&self, name: &str, addr: Option<IpAddr>, port: u16) -> io::Result<TcpStream> {
        let addrs: Vec<SocketAddr> = match addr {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => tokio::net::lookup_host((name, port)).await?.collect(),
        };
        let mut last_error =
            io::Error::new(io::ErrorKind::NotFound, format!("{name} has no address"));
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    self.tune(&stream)?;
                    return Ok(stream);
                }
                Err(error) => {
                    last_error =
                        io::Error::new(error.kind(), format!("cannot connect to {addr}: {error}"));
                }
            }
        }
        Err(last_error)
    }

    /// Keepalive starts after one connect timeout of silence and gives up after
    /// [`KEEPALIVE_RETRIES`] unanswered probes; unacknowledged data fails the connection after
    /// one connect timeout.
    fn tune(&self, stream: &TcpStream) -> io::Result<()> {
        let socket = socket2::SockRef::from(stream);
        let interval = (self.connect_timeout / KEEPALIVE_RETRIES).max(Duration::from_secs(1));
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(self.connect_timeout)
            .with_interval(interval);
        #[cfg(not(any(target_os = "windows", target_os = "openbsd")))]
        let keepalive = keepalive.with_retries(KEEPALIVE_RETRIES);
        socket.set_tcp_keepalive(&keepalive)?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        socket.set_tcp_user_timeout(Some(self.connect_timeout))?;
        Ok(())
    }
}

/// The places to try, in the order of the URL: `host` paired with `hostaddr` and `port` by
/// position, a single port applying to every host.
fn targets(pg_config: &Config) -> Vec<Target> {
    let ports = pg_config.get_ports();
    let addrs = pg_config.get_hostaddrs();
    pg_config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let port = match ports {
                [] => DEFAULT_PORT,
                [single] => *single,
                many => many.get(index).copied().unwrap_or(DEFAULT_PORT),
            };
            match host {
                Host::Tcp(name) => Target::Tcp {
                    name: name.clone(),
                    addr: addrs.get(index).copied(),
                    port,
                },
                #[cfg(unix)]
                Host::Unix(path) => Target::Unix {
                    path: path.clone(),
                    port,
                },
            }
        })
        .collect()
}

/// The startup exchange over TLS, checking the certificate for `name`.
async fn start_tls(
    pg_config: &Config,
    stream: Watched<Transport>,
    make: &MakeRustlsConnect,
    name: &str,
) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
    let mut make = make.clone();
    let tls = match MakeTlsConnect::<Watched<Transport>>::make_tls_connect(&mut make, name) {
        Ok(tls) => tls,
        Err(never) => match never {},
    };
    let (client, connection) = pg_config.connect_raw(stream, tls).await?;
    Ok((client, spawn_connection(connection)))
}

/// The startup exchange without TLS.
async fn start_plain(
    pg_config: &Config,
    stream: Watched<Transport>,
) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
    let mut plain = pg_config.clone();
    plain.ssl_mode(SslMode::Disable);
    let (client, connection) = plain.connect_raw(stream, NoTls).await?;
    Ok((client, spawn_connection(connection)))
}

/// Runs a connection in the background; its end is logged without row data.
fn spawn_connection<S, T>(connection: Connection<S, T>) -> JoinHandle<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(error = %describe_postgres(&error), "database connection failed");
        }
    })
}

/// A tokio-postgres error carrying `message`.
///
/// tokio-postgres has no public constructor for its error type, and the pool's interface wants
/// that type, so the message is sent through a stream that fails at once: tokio-postgres reports
/// it as "error communicating with the server: {message}".
async fn failure(pg_config: &Config, message: &str) -> tokio_postgres::Error {
    let mut plain = pg_config.clone();
    plain.ssl_mode(SslMode::Disable);
    let stream = Transport::Failed(Some(io::Error::other(message.to_owned())));
    match plain.connect_raw(stream, NoTls).await {
        Err(error) => error,
        Ok(_) => unreachable_connection(),
    }
}

/// A stream that fails every read and write cannot complete a startup exchange.
#[allow(clippy::panic)]
fn unreachable_connection() -> tokio_postgres::Error {
    panic!("a connection over a failed stream succeeded")
}

/// The socket under a connection.
pub(crate) enum Transport {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
    /// A connection that could not be opened; see [`failure`].
    Failed(Option<io::Error>),
}

impl Transport {
    fn failed(slot: &mut Option<io::Error>) -> io::Error {
        slot.take()
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not connected"))
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            #[cfg(unix)]
            Transport::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Failed(error) => Poll::Ready(Err(Transport::failed(error))),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            #[cfg(unix)]
            Transport::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Failed(error) => Poll::Ready(Err(Transport::failed(error))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            #[cfg(unix)]
            Transport::Unix(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Failed(error) => Poll::Ready(Err(Transport::failed(error))),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            #[cfg(unix)]
            Transport::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Failed(_) => Poll::Ready(Ok(())),
        }
    }
}

/// A stream whose peer must answer within `response_timeout` of the last write: once bytes
/// were written and none has been read since, a read fails with `TimedOut` at the deadline.
/// Without a `response_timeout` it only passes the bytes through.
pub(crate) struct Watched<S> {
    inner: S,
    response_timeout: Option<Duration>,
    /// Armed between a write and the next byte read.
    awaiting: bool,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, response_timeout: Option<Duration>) -> Self {
        Watched {
            inner,
            response_timeout,
            awaiting: false,
            deadline: Box::pin(tokio::time::sleep(response_timeout.unwrap_or_default())),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(timeout) = this.response_timeout
            && this.awaiting
            && this.deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the database sent no answer within {} s; the connection is dropped",
                    timeout.as_secs_f32()
                ),
            )));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result
            && buf.filled().len() > before
        {
            this.awaiting = false;
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = result
            && written > 0
            && let Some(timeout) = this.response_timeout
        {
            this.awaiting = true;
            this.deadline.as_mut().reset(Instant::now() + timeout);
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const BOUND: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn silence_after_a_write_fails_the_read() {
        let (client, server) = tokio::io::duplex(64);
        let mut watched = Watched::new(client, Some(BOUND));
        watched
            .write_all(b"Q")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut byte = [0u8; 1];
        let started = Instant::now();
        let error = watched.read(&mut byte).await.expect_err("timed out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= BOUND);
        drop(server);
    }

    #[tokio::test]
    async fn an_answered_connection_is_not_watched() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut watched = Watched::new(client, Some(BOUND));
        watched
            .write_all(b"Q")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        server
            .write_all(b"Z")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut byte = [0u8; 1];
        watched
            .read_exact(&mut byte)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Nothing was sent since the answer: silence well past the bound is fine.
        let later = async {
            tokio::time::sleep(BOUND * 3).await;
            server
                .write_all(b"N")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            server
        };
        let (read, _server) = tokio::join!(watched.read_exact(&mut byte), later);
        read.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&byte, b"N");
    }
}
