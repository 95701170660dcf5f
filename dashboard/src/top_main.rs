//! `jetinfer-top` binary: parse the command line, watch until the user quits.

use clap::Parser;
use jetinfer_dashboard::top::{self, TopArgs};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    top::run(TopArgs::parse()).await?;
    Ok(())
}
