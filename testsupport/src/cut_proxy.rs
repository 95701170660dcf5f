//! A TCP proxy a test can cut: [`CutProxy::cut`] closes every connection
//! through it at once, as a network blip or `ss -K` would, while it keeps
//! accepting new ones — so a client reconnects within milliseconds and a test
//! can check that nothing published during the gap was lost. It can also
//! slow the link from the server ([`CutProxy::delaying`]), so a test can put a
//! message on the wire while the client acts on an earlier one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// A running proxy on 127.0.0.1; it stops when dropped.
pub struct CutProxy {
    addr: SocketAddr,
    cuts: watch::Sender<u64>,
    open: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Forward a free local port to `upstream` (e.g. `127.0.0.1:4222`).
    pub async fn start(upstream: SocketAddr) -> Self {
        Self::delaying(upstream, Duration::ZERO).await
    }

    /// Like [`CutProxy::start`], but every byte from `upstream` reaches the
    /// client `delay` after the server sent it (in order; bytes the other
    /// way are not delayed).
    pub async fn delaying(upstream: SocketAddr, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the cut proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (cuts, _) = watch::channel(0u64);
        let open = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            delay,
            cuts.clone(),
            open.clone(),
        ));
        Self {
            addr,
            cuts,
            open,
            accept,
        }
    }

    /// The proxy as a NATS URL.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Close every connection through the proxy now; returns how many were open.
    pub fn cut(&self) -> usize {
        let open = self.open.load(Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
        open
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cuts.send_modify(|n| *n += 1);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    delay: Duration,
    cuts: watch::Sender<u64>,
    open: Arc<AtomicUsize>,
) {
    while let Ok((inbound, _)) = listener.accept().await {
        let mut cut = cuts.subscribe();
        let open = open.clone();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(upstream).await else {
                return; // upstream down: the client sees a closed connection
            };
            let (mut inbound, mut outbound) = (inbound, outbound);
            open.fetch_add(1, Ordering::SeqCst);
            if delay.is_zero() {
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut.changed() => {}
                }
            } else {
                let (mut client_read, client_write) = inbound.split();
                let (server_read, mut server_write) = outbound.split();
                tokio::select! {
                    _ = tokio::io::copy(&mut client_read, &mut server_write) => {}
                    _ = delayed_copy(server_read, client_write, delay) => {}
                    _ = cut.changed() => {}
                }
            }
            open.fetch_sub(1, Ordering::SeqCst);
            // Dropping both halves closes them: the client sees its connection end.
        });
    }
}

/// Copy `from` to `to`, each chunk `delay` after it was read, in order.
async fn delayed_copy(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    delay: Duration,
) {
    let (chunks, mut queued) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if chunks
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = queued.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(read, write);
}
