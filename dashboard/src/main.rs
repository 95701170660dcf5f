//! `dashboard` binary: parse config, bind, serve until SIGTERM/Ctrl-C.

use anyhow::Context;
use clap::Parser;
use jetinfer_dashboard::config::DashboardArgs;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = DashboardArgs::parse();
    args.log.init();
    let listener = jetinfer_shared::serve::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let stop = CancellationToken::new();
    tokio::spawn(jetinfer_shared::shutdown::on_signal(stop.clone()));
    jetinfer_dashboard::run(args, listener, stop).await?;
    Ok(())
}
