//! The listening socket and what every accepted socket is set up with.

use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The kernel's accept queue per listener. Clients beyond the connection cap
/// wait here, so it is longer than the 128 that `TcpListener::bind` asks for;
/// Linux caps it at `net.core.somaxconn` (4096 by default).
pub const ACCEPT_BACKLOG: u32 = 4096;

/// Silence on an accepted connection before the kernel sends its first
/// keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Time between unanswered keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes after which the kernel drops the connection: a peer that
/// vanished is found within `KEEPALIVE_IDLE + KEEPALIVE_RETRIES ×
/// KEEPALIVE_INTERVAL` (80 s) of its last packet (DESIGN §3.4).
pub const KEEPALIVE_RETRIES: u32 = 5;

/// The send buffer of an accepted socket, as asked of the kernel (Linux
/// counts twice this). The API's responses are a few hundred bytes and
/// `/metrics` some tens of KiB, so this never slows an answer to a client that
/// reads; left to autotuning, the kernel would grow it to 4 MiB, and a client
/// that does not read would get thousands of pipelined requests answered, and
/// hold that much kernel memory, before a write stalls and the write timeout
/// starts to run (DESIGN §3.4).
pub const SEND_BUFFER_BYTES: usize = 64 * 1024;

/// Binds a listener with an [`ACCEPT_BACKLOG`]-long accept queue.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restarted service can bind at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Sets up an accepted socket: no Nagle delay on small responses, a send
/// buffer of [`SEND_BUFFER_BYTES`], and TCP keepalive, so a connection whose
/// peer vanished while it holds a slot (its request still being handled, no
/// response yet to time out) is dropped by the kernel instead of being held for
/// the life of the process.
pub fn prepare(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let socket = SockRef::from(stream);
    socket.set_send_buffer_size(SEND_BUFFER_BYTES)?;
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    socket.set_tcp_keepalive(&keepalive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_accepted_socket_has_keepalive_a_fixed_send_buffer_and_no_nagle_delay() {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let socket = SockRef::from(&accepted);
        assert!(!socket.keepalive().unwrap(), "keepalive is off by default");
        prepare(&accepted).unwrap();
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_RETRIES);
        assert!(accepted.nodelay().unwrap());
        let send_buffer = socket.send_buffer_size().unwrap();
        assert!(
            (SEND_BUFFER_BYTES..=2 * SEND_BUFFER_BYTES).contains(&send_buffer),
            "send buffer {send_buffer}"
        );
    }
}
