//! `gateway` binary: parse config, bind, serve until SIGTERM/Ctrl-C.

use anyhow::Context;
use clap::Parser;
use jetinfer_gateway::config::GatewayArgs;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = GatewayArgs::parse();
    args.log.init();
    let listener = jetinfer_shared::serve::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let stop = CancellationToken::new();
    tokio::spawn(jetinfer_shared::shutdown::on_signal(stop.clone()));
    jetinfer_gateway::run(args, listener, stop).await?;
    Ok(())
}
