//! Readiness, with bounded waits: nats-server accepting the admin login, then
//! a heartbeat from every worker (which means its model is loaded and it pulls).

use crate::child::Proc;
use crate::secrets::Secrets;
use anyhow::bail;
use jetinfer_shared::heartbeats;
use std::time::{Duration, Instant};

/// Log in to nats-server as admin, retrying for 20 s while it starts; fail at
/// once, pointing at its log, if the process has already exited.
pub async fn nats(
    url: &str,
    secrets: &Secrets,
    nats: &mut Proc,
) -> anyhow::Result<async_nats::Client> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let admin = secrets.identity("admin")?;
    loop {
        let options = admin.connect_options(secrets.tls_ca());
        if let Ok(client) = options.connect(url).await {
            return Ok(client);
        }
        if let Some(status) = nats.exited() {
            bail!(
                "nats-server exited ({status}); see {}",
                nats.log().display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "nats-server not reachable at {url}; see {}",
                nats.log().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait (up to 5 minutes) until `n` workers have a heartbeat in the bucket,
/// printing the count as it changes.
pub async fn workers(client: &async_nats::Client, n: usize) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(client.clone());
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut shown = usize::MAX;
    loop {
        let live = heartbeats::live(&js).await.map_or(0, |beats| beats.len());
        if live != shown {
            println!("  {live}/{n} workers ready");
            shown = live;
        }
        if live >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {live} of {n} workers became ready");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
