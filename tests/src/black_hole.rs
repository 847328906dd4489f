//! A TCP proxy that can turn into a black hole, for the database fault tests.
//!
//! [`BlackHoleProxy`] forwards every connection both ways to an upstream address. After
//! [`black_hole`](BlackHoleProxy::black_hole) it stops reading and writing without closing any
//! connection, old or new: the peer on either side sees a live TCP connection that never
//! answers, which is what a hung proxy, a frozen server or a dropped route looks like to a
//! client. [`resume`](BlackHoleProxy::resume) forwards again, bytes held meanwhile included.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A forwarding proxy on `127.0.0.1:0`; stops when dropped.
#[derive(Debug)]
pub struct BlackHoleProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    forwarding: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl BlackHoleProxy {
    /// A proxy to `upstream`, forwarding.
    pub async fn start(upstream: SocketAddr) -> BlackHoleProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the proxy: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy address: {e}"));
        let (forwarding, switch) = watch::channel(true);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let switch = switch.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pump(client_read, server_write, switch.clone()),
                        pump(server_read, client_write, switch),
                    );
                });
            }
        });
        BlackHoleProxy {
            addr,
            forwarding,
            accept,
        }
    }

    /// Stops forwarding; every connection stays open.
    pub fn black_hole(&self) {
        self.forwarding.send_replace(false);
    }

    /// Forwards again.
    pub fn resume(&self) {
        self.forwarding.send_replace(true);
    }

    /// `url` (a `postgres://` URL) pointed at this proxy instead of its host and port.
    pub fn url_for(&self, url: &str) -> String {
        url_via(url, self.addr)
    }
}

impl Drop for BlackHoleProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// `url` (a `postgres://` URL) with its host and port replaced by `addr`, keeping its
/// credentials, database and parameters: the URL of a proxy in front of that database.
pub fn url_via(url: &str, addr: impl std::fmt::Display) -> String {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("not a URL: {url}"));
    let (credentials, host_and_more) = match rest.split_once('@') {
        Some((credentials, more)) => (format!("{credentials}@"), more),
        None => (String::new(), rest),
    };
    let path = host_and_more
        .find(['/', '?'])
        .map_or("", |index| &host_and_more[index..]);
    format!("{scheme}://{credentials}{addr}{path}")
}

/// Copies `from` to `to` while the switch is on. Bytes read just before the switch went off
/// are held until it is on again.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut switch: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if switch.wait_for(|on| *on).await.is_err() {
            return;
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(read) => read,
        };
        if switch.wait_for(|on| *on).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// The host and port of a `postgres://` URL with a TCP host.
pub fn upstream_of(url: &str) -> SocketAddr {
    let config: tokio_postgres::Config = url
        .parse()
        .unwrap_or_else(|e| panic!("not a PostgreSQL URL: {e}"));
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("the test database is not on TCP: {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
        .parse()
        .unwrap_or_else(|e| panic!("the test database host is not an IP address: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_are_pointed_at_the_proxy() {
        let proxy = BlackHoleProxy::start("127.0.0.1:9".parse().unwrap()).await;
        let addr = proxy.addr;
        assert_eq!(
            proxy.url_for("postgres://postgres@127.0.0.1:5432/test_1?sslmode=disable"),
            format!("postgres://postgres@{addr}/test_1?sslmode=disable")
        );
        assert_eq!(
            proxy.url_for("postgres://u:p@db:5432"),
            format!("postgres://u:p@{addr}")
        );
    }

    #[tokio::test]
    async fn a_black_hole_holds_bytes_until_resumed() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = BlackHoleProxy::start(upstream.local_addr().unwrap()).await;
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        let (mut server, _) = upstream.accept().await.unwrap();
        client.write_all(b"a").await.unwrap();
        let mut byte = [0u8; 1];
        server.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"a");

        proxy.black_hole();
        client.write_all(b"b").await.unwrap();
        let silent = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            server.read(&mut byte),
        )
        .await;
        assert!(silent.is_err(), "a byte crossed the black hole");

        proxy.resume();
        server.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"b");
    }
}
