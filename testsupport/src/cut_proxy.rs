//! A TCP proxy a test can cut: [`CutProxy::cut`] closes every connection
//! through it at once, as a network blip or `ss -K` would, while it keeps
//! accepting new ones — so a client reconnects within milliseconds and a test
//! can check that nothing published during the gap was lost.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the cut proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (cuts, _) = watch::channel(0u64);
        let open = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(accept_loop(listener, upstream, cuts.clone(), open.clone()));
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
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = cut.changed() => {}
            }
            open.fetch_sub(1, Ordering::SeqCst);
            // Dropping both halves closes them: the client sees its connection end.
        });
    }
}
