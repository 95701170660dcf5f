//! Readiness, with bounded waits: nats-server accepting the admin login, then
//! a heartbeat from every worker (which means its model is loaded and it pulls).

use crate::child::Proc;
use crate::secrets::Secrets;
use anyhow::bail;
use jetinfer_shared::heartbeats;
use std::time::{Duration, Instant};

/// Log in to nats-server as admin (any node of `url`, comma separated), then
/// wait until JetStream answers (on a cluster: once a meta leader is
/// elected), retrying for 20 s while they start; fail at once, pointing at
/// its log, if a server has already exited.
pub async fn nats(
    url: &str,
    secrets: &Secrets,
    nodes: &mut [Proc],
) -> anyhow::Result<async_nats::Client> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let admin = secrets.identity("admin")?;
    let servers: Vec<&str> = url.split(',').collect();
    let mut client = None;
    loop {
        if client.is_none() {
            let options = admin.connect_options(secrets.tls_ca());
            client = options.connect(servers.as_slice()).await.ok();
        }
        if let Some(client) = &client {
            let js = async_nats::jetstream::new(client.clone());
            if js.query_account().await.is_ok() {
                return Ok(client.clone());
            }
        }
        for node in nodes.iter_mut() {
            if let Some(status) = node.exited() {
                bail!(
                    "nats-server exited ({status}); see {}",
                    node.log().display()
                );
            }
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = nodes
                .iter()
                .map(|n| n.log().display().to_string())
                .collect();
            bail!(
                "nats-server not ready at {url} (no JetStream answer); see {}",
                logs.join(", ")
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
