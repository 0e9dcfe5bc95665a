//! The HTTP accept loop. Each connection is served by hyper with a timer, so a client that
//! sends its request header too slowly (or, kept alive, sends no next request) is cut after
//! the header-read timeout, and one on which nothing moves either way is cut after the idle
//! timeout. Open connections are capped below the open-file limit: past the cap a new
//! connection is closed at once, so the accept queue never stalls and the database, SSH and
//! sinks keep file descriptors to work with. The last eighth of the cap is a reserve served
//! with a short header timeout and no keep-alive: while slow clients hold the rest, a client
//! that sends its request at once (a health check, an alert, a tapped link) still gets in.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::ServiceExt;

/// How long the loop waits after a failed accept (out of file descriptors, most likely)
/// before it tries again, so it neither spins nor stops.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The header-read timeout of a connection served from the reserve: it must send its request
/// at once, as a health check or an alert does.
const RESERVE_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// File descriptors kept for everything but client connections: the database and its WAL
/// files (per pooled connection), SSH sessions, sinks, PBS/PVE calls, logs.
const FD_HEADROOM: u64 = 128;

/// The cap on open connections when the open-file limit is high or unknown.
const MAX_CONNECTIONS: usize = 512;

/// Connections the kernel may hold for the accept loop (capped by `net.core.somaxconn`): a
/// burst of thousands is accepted (and, past the cap, closed) instead of overflowing the queue,
/// which would leave clients half-connected until the kernel gives up on them a minute later.
const ACCEPT_BACKLOG: u32 = 4096;

/// Listens on `address` with a deep accept queue ([`ACCEPT_BACKLOG`]).
pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// How the accept loop bounds connections; `[http]` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request header (the first, or the next on a kept-alive connection) must arrive within
    /// this long.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed.
    pub idle_timeout: Duration,
    /// Open connections at most, the reserve included.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// The cap when the config sets none: 512, or the open-file limit less headroom for the
    /// rest of the service, whichever is lower (at least 16).
    pub fn default_max_connections() -> usize {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let room = limit.map_or(u64::MAX, |limit| limit.saturating_sub(FD_HEADROOM));
        usize::try_from(room)
            .unwrap_or(usize::MAX)
            .clamp(16, MAX_CONNECTIONS)
    }

    fn reserve(&self) -> usize {
        self.max_connections / 8
    }
}

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting and lets
/// in-flight requests finish for at most `drain_timeout`. Handlers see the client's address
/// as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    drain_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let regular = Arc::new(Semaphore::new(limits.max_connections - limits.reserve()));
    let reserve = Arc::new(Semaphore::new(limits.reserve()));
    let mut full = http1::Builder::new();
    full.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut reserved = http1::Builder::new();
    reserved
        .timer(TokioTimer::new())
        .header_read_timeout(RESERVE_HEADER_READ_TIMEOUT.min(limits.header_read_timeout))
        .keep_alive(false);
    let graceful = GracefulShutdown::new();
    // Set while accepting fails or the cap is reached, so a burst is logged once.
    let mut failing = false;
    let mut refusing = false;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                failing = false;
                accepted
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "cannot accept connections; retrying");
                    failing = true;
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let (permit, builder) = if let Ok(permit) = regular.clone().try_acquire_owned() {
            refusing = false;
            (permit, &full)
        } else if let Ok(permit) = reserve.clone().try_acquire_owned() {
            (permit, &reserved)
        } else {
            if !refusing {
                tracing::warn!(
                    limit = limits.max_connections,
                    "too many open connections; closing new ones until some end"
                );
                refusing = true;
            }
            drop(stream);
            continue;
        };
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            stream,
            activity: activity.clone(),
        });
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection =
            graceful.watch(builder.serve_connection(io, TowerToHyperService::new(service)));
        let idle_timeout = limits.idle_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                result = connection => if let Err(error) = result {
                    tracing::debug!(%error, %peer, "connection closed");
                },
                () = activity.idle_for(idle_timeout) => {
                    tracing::debug!(%peer, "closed a connection idle for {idle_timeout:?}");
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight requests did not finish within {drain_timeout:?}; stopping anyway"
        );
    }
}

/// When bytes last moved on a connection.
struct Activity {
    opened: Instant,
    /// Milliseconds from `opened` to the last read or write that moved bytes.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let elapsed = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(elapsed, Ordering::Relaxed);
    }

    /// When the connection is idle for `limit`, if nothing moves before then.
    fn deadline(&self, limit: Duration) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + limit
    }

    /// Completes once nothing has moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let deadline = self.deadline(limit);
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A client's stream that records in [`Activity`] when bytes move.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The idle clock runs from the opening, and restarts whenever bytes move.
    #[test]
    fn idleness_is_counted_from_the_last_move() {
        let mut activity = Activity::new();
        activity.opened = Instant::now().checked_sub(Duration::from_secs(40)).unwrap();
        let limit = Duration::from_secs(60);
        assert_eq!(activity.deadline(limit), activity.opened + limit);
        activity.touch();
        let left = activity.deadline(limit) - Instant::now();
        assert!(left > Duration::from_secs(59) && left <= limit, "{left:?}");
    }
}
