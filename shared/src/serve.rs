//! The HTTP front every jetinfer server uses instead of `axum::serve`: the
//! same router and graceful shutdown, plus the limits that keep hostile or
//! broken clients from holding connections (and file descriptors) forever.
//!
//! - A request head must arrive within `HEADER_TIMEOUT_S`; the same clock
//!   closes an idle keep-alive connection waiting for its next request.
//! - A connection on which no byte moves for `IDLE_TIMEOUT_S` (a trickling
//!   body, a client that stopped reading) is dropped; see [`activity`].
//! - At most `MAX_CONNECTIONS` are served at once. Past that a connection is
//!   answered a canned 503 `overloaded` without waiting for it and closed, so
//!   the accept loop never stalls and the descriptors stay under the limit.
//! - hyper (and its ~16 KiB of buffers) starts on a connection's first bytes,
//!   so idle connections cost little more than their sockets.
//! - HTTP/1.1 and HTTP/2 over cleartext (h2c, prior knowledge: `curl
//!   --http2-prior-knowledge`) on the same port, told apart by the first
//!   bytes. HTTP/1.1 needs a connection, and its buffers, per request in
//!   flight; HTTP/2 carries up to `HTTP2_MAX_STREAMS` requests on one, which
//!   is how a proxy or a client with thousands of waiting requests keeps the
//!   server's memory small.
//!
//! Metrics (on the server's `/metrics`): `jetinfer_http_connections_open`,
//! `jetinfer_http_connections_shed_total` (refused over the cap) and
//! `jetinfer_http_connections_idle_closed_total`, so an operator sees a
//! connection flood as such.

pub mod activity;

use activity::{Progress, Watched};
use axum::Router;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Descriptors kept free of connections: NATS, logs, files, the listener.
pub const FD_RESERVE: u64 = 256;

/// Connections the kernel may hold, handshake done, until the accept loop
/// takes them. tokio's `bind` asks for 1024: a burst of thousands of clients
/// connecting at once overflowed that, and the kernel dropped the rest of
/// their handshakes, so they stalled for SYN retransmits (1, 3, 7 … s) and
/// many gave up. Linux caps the request at `net.core.somaxconn` (4096 by
/// default; raise it for deeper bursts).
const LISTEN_BACKLOG: u32 = 65_535;

/// Listen on `addr` (address reuse on, as `TcpListener::bind` does) with the
/// deepest accept queue the kernel allows; see [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What a connection over `MAX_CONNECTIONS` gets before it is closed.
static OVERLOADED: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = r#"{"error":"overloaded","message":"too many open connections (MAX_CONNECTIONS); retry later"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Connection limits, flattened into the gateway's and the dashboard's command line.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ServeArgs {
    /// Seconds a client has to send a complete request head (request line and
    /// headers), and that an idle keep-alive connection is kept waiting for its
    /// next request. Slower clients are disconnected, so connections that
    /// trickle a header line now and then cannot pile up.
    #[arg(long, env = "HEADER_TIMEOUT_S", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_s: u64,
    /// Seconds a connection may go without a single byte read or written, e.g.
    /// a request body that stopped arriving or a client that stopped reading
    /// its answer, before it is closed. Keep it above `REQUEST_TIMEOUT_MS`:
    /// a request waiting for its answer moves no bytes either.
    #[arg(long, env = "IDLE_TIMEOUT_S", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_s: u64,
    /// Most client connections served at once. Further ones get an immediate
    /// 503 `overloaded` with `Retry-After` and are closed. At start the
    /// process raises its open-file limit as far as the OS allows; if this cap
    /// plus 256 spare descriptors still does not fit, the cap is lowered to
    /// fit, with a warning.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Most requests in flight on one HTTP/2 connection at once; a client
    /// asks for more by opening another connection (each counts against
    /// `MAX_CONNECTIONS`). Load shedding (`MAX_IN_FLIGHT`) applies to every
    /// request, however it arrived.
    #[arg(long, env = "HTTP2_MAX_STREAMS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_streams: u32,
}

/// The connection cap that fits under a soft descriptor limit of `soft`,
/// leaving [`FD_RESERVE`] free, and never below one.
pub fn fit_cap(requested: u64, soft: u64) -> u64 {
    requested.min(soft.saturating_sub(FD_RESERVE)).max(1)
}

/// Raise this process's soft open-file limit to its hard limit; returns the
/// soft limit in force afterwards, or `None` where it cannot be read.
fn raise_fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; failure leaves the limit unchanged.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Some(limit.rlim_cur)
}

impl ServeArgs {
    /// The cap actually enforced: `max_connections`, lowered to fit under the
    /// (raised) descriptor limit.
    fn effective_cap(&self) -> u64 {
        let Some(soft) = raise_fd_limit() else {
            return self.max_connections;
        };
        let cap = fit_cap(self.max_connections, soft);
        if cap < self.max_connections {
            tracing::warn!(
                max_connections = self.max_connections,
                open_file_limit = soft,
                effective = cap,
                "MAX_CONNECTIONS does not fit under the open-file limit; serving fewer"
            );
        }
        cap
    }
}

/// Serve `app` on `listener` until `stop` fires; then stop accepting, let
/// requests in progress finish, and return.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    args: ServeArgs,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(args.effective_cap() as usize));
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(args.header_timeout_s));
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(args.http2_max_streams);
    let http = Arc::new(Protocols { http1, http2 });
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shed(stream);
            continue;
        };
        metrics::gauge!("jetinfer_http_connections_open").increment(1.0);
        let conn = Connection {
            stream,
            http: http.clone(),
            app: app.clone(),
            shutdown: graceful.watcher(),
            args,
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            conn.run(stop).await;
            metrics::gauge!("jetinfer_http_connections_open").decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// How connections are served, by protocol.
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

/// What a connection's first bytes say it speaks.
enum Opening {
    /// A request line: HTTP/1.x.
    Http1,
    /// HTTP/2's connection preface (`PRI * HTTP/2.0…`): h2c, prior knowledge.
    Http2,
    /// Closed or broken before its first bytes.
    Closed,
}

/// Tell HTTP/2's preface from an HTTP/1 request line by the first three bytes
/// (no method is spelt `PRI`), without consuming them. A peek, not
/// `readable()`: readiness may be reported spuriously, and a peek that finds
/// nothing goes back to waiting. hyper-util's auto-detecting server does the
/// same with a read and a buffer, which cost HTTP/1.1 connections ~6 KiB each.
async fn opening(stream: &TcpStream) -> Opening {
    const PREFACE: &[u8] = b"PRI";
    let mut head = [0u8; 3];
    let mut pause = Duration::from_millis(1);
    loop {
        match stream.peek(&mut head).await {
            Ok(0) | Err(_) => return Opening::Closed,
            Ok(n) if n == PREFACE.len() && head == PREFACE => return Opening::Http2,
            Ok(n) if n == PREFACE.len() || !PREFACE.starts_with(&head[..n]) => {
                return Opening::Http1
            }
            // "P" or "PR" so far: wait for the next segment, backing off (1 ms
            // up to 100 ms) so a client that stalls here costs few wake-ups.
            Ok(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }
}

/// One accepted connection and what serving it takes.
struct Connection {
    stream: TcpStream,
    http: Arc<Protocols>,
    app: Router,
    shutdown: Watcher,
    args: ServeArgs,
}

impl Connection {
    /// Serve the connection until it closes, stalls, misses its first head's
    /// deadline, or `stop` fires before it sent anything.
    ///
    /// hyper allocates about 16 KiB of buffers per connection the moment it
    /// starts, so it starts only once the first bytes are there (which also
    /// tell HTTP/2 from HTTP/1): until then a
    /// connection costs its socket and this small future. hyper's header
    /// clock starts with it, so the first head's deadline (`HEADER_TIMEOUT_S`
    /// after the accept) is kept here; later heads' by hyper.
    async fn run(self, stop: CancellationToken) {
        let Self {
            stream,
            http,
            app,
            shutdown,
            args,
        } = self;
        let head_due = Instant::now() + Duration::from_secs(args.header_timeout_s);
        let opening = tokio::select! {
            () = stop.cancelled() => return,
            opening = tokio::time::timeout_at(head_due, opening(&stream)) => match opening {
                Ok(Opening::Closed) => return,
                Ok(opening) => opening,
                Err(_) => {
                    tracing::debug!("no request head in time; connection closed");
                    return;
                }
            },
        };
        let progress = Progress::new();
        let heard = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(Watched::new(stream, progress.clone()));
        let service = Heard {
            inner: TowerToHyperService::new(app),
            heard: heard.clone(),
        };
        // Boxed: inline it would size every waiting connection's task.
        let served: Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>> = match opening {
            Opening::Http2 => Box::pin(shutdown.watch(http.http2.serve_connection(io, service))),
            _ => Box::pin(shutdown.watch(http.http1.serve_connection(io, service))),
        };
        let first_head = async {
            tokio::time::sleep_until(head_due).await;
            if heard.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            served = served => if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            },
            () = progress.stalled(Duration::from_secs(args.idle_timeout_s)) => {
                metrics::counter!("jetinfer_http_connections_idle_closed_total").increment(1);
                tracing::debug!("idle connection closed");
            }
            () = first_head => tracing::debug!("no request head in time; connection closed"),
        }
    }
}

/// The app as hyper calls it, noting that a request head was read, so the
/// first head's deadline can be lifted.
struct Heard<S> {
    inner: S,
    heard: Arc<AtomicBool>,
}

impl<R, S: hyper::service::Service<R>> hyper::service::Service<R> for Heard<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, request: R) -> Self::Future {
        self.heard.store(true, Ordering::Relaxed);
        self.inner.call(request)
    }
}

/// A failed accept: a client that gave up is routine; anything else (out of
/// descriptors) is logged and retried after a short pause instead of spinning.
async fn accept_failed(e: std::io::Error) {
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::warn!(error = %e, "accept error");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Answer a connection over the cap without awaiting anything: read what
/// already arrived (so closing does not reset the answer away), write the
/// canned 503 if the socket takes it, close.
fn shed(stream: TcpStream) {
    metrics::counter!("jetinfer_http_connections_shed_total").increment(1);
    let mut sink = [0u8; 4096];
    while matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {}
    let _ = stream.try_write(&OVERLOADED);
}

#[cfg(test)]
mod tests;
