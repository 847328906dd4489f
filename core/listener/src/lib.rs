//! A bounded HTTP/1 listener (DESIGN §3.4), the one both binaries serve on:
//! the submit service's public and internal listeners and the scheduled
//! exporter's internal one.
//!
//! * at most [`Limits::max_connections`] open connections; a slot is taken
//!   before `accept`, so further clients wait in the kernel's accept queue
//!   ([`ACCEPT_BACKLOG`]) while the connections held are still answered;
//! * a request head must arrive within [`Limits::header_read`] of the accept or
//!   of the previous response, which also closes idle keep-alive connections;
//! * a response write that makes no progress for [`Limits::write`] closes its
//!   connection ([`timed`]), since hyper's header timer does not run while a
//!   response waits for a client that does not read;
//! * TCP keepalive on every accepted socket ([`socket`]), so a peer that vanished
//!   while its request is handled is found;
//! * the process's soft open-file limit raised to its hard limit when a listener
//!   starts serving ([`open_files::claim`]), so that `MAX_CONNECTIONS`, not the
//!   descriptors, bounds the clients;
//! * a graceful shutdown that lets requests in flight finish for up to
//!   [`Limits::shutdown_grace`].
//!
//! It lives in a crate of its own so that `diagnosis-core` keeps its rule of no
//! network I/O but the store's, and the exporter's `/metrics` gets the same
//! defences as the service without a copy of them. What a connection serves is
//! the caller's service; how connections end is reported to the caller's
//! [`Observer`], so each binary names its own metrics. This crate must never log
//! a peer's address or anything a client sent.

pub mod open_files;
mod serve;
pub mod socket;
pub mod timed;

use std::time::Duration;

pub use serve::serve;
pub use socket::{ACCEPT_BACKLOG, bind};

/// How much a listener allows its clients (DESIGN §3.4, §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections held at most (`MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Time to send a request head, counted from the accept or from the
    /// previous response (`HTTP_READ_TIMEOUT_SECONDS`).
    pub header_read: Duration,
    /// The longest a response write may make no progress
    /// (`HTTP_WRITE_TIMEOUT_SECONDS`).
    pub write: Duration,
    /// How long requests in flight may run once the listener is told to stop.
    pub shutdown_grace: Duration,
}

/// How a connection ended: a bounded set, fit for a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The client closed it, or the service did after a response or at
    /// shutdown.
    Ended,
    /// No complete request head within the header timeout, idle keep-alive
    /// connections included.
    ReadTimeout,
    /// A response write made no progress within the write timeout.
    WriteTimeout,
    /// A malformed request, a reset, or another I/O error.
    Error,
}

impl Closed {
    /// The `reason` label of a closed-connections counter.
    pub fn label(self) -> &'static str {
        match self {
            Closed::Ended => "ended",
            Closed::ReadTimeout => "read_timeout",
            Closed::WriteTimeout => "write_timeout",
            Closed::Error => "error",
        }
    }

    fn of(result: &Result<(), hyper::Error>) -> Closed {
        match result {
            Ok(()) => Closed::Ended,
            Err(e) if timed::is_write_timeout(e) => Closed::WriteTimeout,
            Err(e) if e.is_timeout() => Closed::ReadTimeout,
            Err(_) => Closed::Error,
        }
    }
}

/// Told when a connection takes a slot and when it gives it back, however it
/// ends; `closed` is called before the slot is free for the next client.
pub trait Observer: Clone + Send + Sync + 'static {
    fn opened(&self);
    fn closed(&self, how: Closed);
}
