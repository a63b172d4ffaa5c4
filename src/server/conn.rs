//! Accepting connections with limits: at most `limits.max_connections`
//! open (more are closed as they arrive), a handshake timeout (a new
//! connection must send the 24-byte HTTP/2 preface, or its TLS
//! ClientHello, within `handshake_timeout_s`, however slowly it trickles)
//! and an idle timeout (a connection with no byte moving either way for
//! `idle_timeout_s` is closed; clients reconnect on their next call).
//!
//! hyper's HTTP/2 server has neither timeout, and connections that never
//! speak would otherwise be held forever (the review held 19,900). The
//! timeouts live in the socket wrapper [`Guarded`]: its reads return an
//! error once the timer runs out, and hyper then closes the connection.
//! TLS handshakes are also bounded by tonic's own timeout (set to the same
//! value in `server::start`).

use super::metrics::Metrics;
use futures::Stream;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Bytes of the HTTP/2 connection preface (RFC 9113 section 3.4).
const PREFACE: usize = 24;

/// The connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time a new connection has to send its first [`PREFACE`] bytes.
    pub handshake: Duration,
    /// Time without traffic after which a connection is closed.
    pub idle: Duration,
}

/// Connections open now.
#[derive(Debug, Default)]
struct Open(AtomicUsize);

/// An accepted connection, counted while it lives, closed by its timeouts.
pub struct Guarded {
    inner: TcpStream,
    timer: Pin<Box<Sleep>>,
    handshaken: bool,
    received: usize,
    last: Instant,
    limits: ConnLimits,
    open: Arc<Open>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded").field("handshaken", &self.handshaken).finish_non_exhaustive()
    }
}

impl Guarded {
    fn new(inner: TcpStream, limits: ConnLimits, open: Arc<Open>, metrics: Arc<Metrics>) -> Guarded {
        let now = Instant::now();
        let timer = Box::pin(tokio::time::sleep_until(now + limits.handshake));
        Guarded { inner, timer, handshaken: false, received: 0, last: now, limits, open, metrics }
    }

    fn active(&mut self) {
        self.last = Instant::now();
    }

    /// `Err` once the connection has run out of time (the handshake must
    /// complete by its deadline; after it, the idle time counts from the
    /// last byte). Registers the timer with `cx` otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            let (reason, limit) = if self.handshaken {
                let due = self.last + self.limits.idle;
                if due > Instant::now() {
                    // Traffic since the timer was set: push it back and wait again.
                    self.timer.as_mut().reset(due);
                    continue;
                }
                ("idle_timeout", self.limits.idle)
            } else {
                ("handshake_timeout", self.limits.handshake)
            };
            self.metrics.connection_closed(reason);
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("connection closed: {reason} ({limit:?})")));
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let n = self.open.0.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        self.metrics.set_connections(n);
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    self.received = self.received.saturating_add(n);
                    self.active();
                    if !self.handshaken && self.received >= PREFACE {
                        self.handshaken = true;
                        let due = self.last + self.limits.idle;
                        self.timer.as_mut().reset(due);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.expired(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.active();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.active();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The accepted connections of `listener` (TCP_NODELAY set), within `limits`.
pub fn incoming(
    listener: TcpListener,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = io::Result<Guarded>> + Send + 'static {
    let open = Arc::new(Open::default());
    futures::stream::unfold((listener, open, metrics), move |(listener, open, metrics)| async move {
        loop {
            match listener.accept().await {
                Ok((s, peer)) => {
                    if open.0.load(Ordering::SeqCst) >= limits.max_connections {
                        metrics.connection_closed("over_limit");
                        tracing::debug!("connection from {peer} closed: {} open already", limits.max_connections);
                        drop(s);
                        continue;
                    }
                    let _ = s.set_nodelay(true);
                    let n = open.0.fetch_add(1, Ordering::SeqCst) + 1;
                    metrics.set_connections(n);
                    let g = Guarded::new(s, limits, Arc::clone(&open), Arc::clone(&metrics));
                    return Some((Ok(g), (listener, open, metrics)));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}
