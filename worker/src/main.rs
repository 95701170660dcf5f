//! `worker` binary: parse config, serve until SIGTERM/Ctrl-C.

use anyhow::Context;
use clap::Parser;
use jetinfer_worker::config::{Command, WorkerArgs};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let args = WorkerArgs::parse();
    args.log.init();
    if args.fetch_model {
        let model = jetinfer_worker::backend::source::resolve(args.model_dir, &args.model_id)?;
        println!("{}", model.display());
        return Ok(());
    }
    if let Some(Command::Bench(bench)) = &args.command {
        std::env::set_var("RAYON_NUM_THREADS", args.threads.max(1).to_string());
        if let Some(photos) = &bench.images {
            let model_dir = args.image_model_dir.as_ref().context(
                "worker bench --images needs IMAGE_MODEL_DIR (./jetinfer up installs it into .state/models/efficientnet-lite0)",
            )?;
            let report = jetinfer_worker::bench::images::measure(
                model_dir,
                photos,
                &bench.batch_sizes,
                args.threads,
            )?;
            match bench.json {
                true => println!("{}", serde_json::json!({ "images": report })),
                false => print!(
                    "{}",
                    jetinfer_worker::bench::images::table(&report, args.threads)
                ),
            }
            return Ok(());
        }
        let model =
            jetinfer_worker::backend::source::resolve(args.model_dir.clone(), &args.model_id)?;
        let texts = jetinfer_shared::corpus::load(bench.corpus.as_deref())?;
        let rows = jetinfer_worker::bench::compare(
            &model,
            args.kernels,
            args.weights,
            &texts,
            &bench.batch_sizes,
            args.threads,
        )?;
        if bench.json {
            println!("{}", serde_json::json!({ "results": rows }));
        } else {
            print!(
                "{}",
                jetinfer_worker::bench::table(&rows, texts.len(), args.threads)
            );
        }
        return Ok(());
    }
    // candle sizes its matmul split from RAYON_NUM_THREADS; keep it equal to
    // the compute pool so `--threads` really bounds this worker's cores.
    // Set before any thread exists, so no other thread reads the environment.
    std::env::set_var("RAYON_NUM_THREADS", args.threads.max(1).to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let stop = CancellationToken::new();
        tokio::spawn(jetinfer_shared::shutdown::on_signal(stop.clone()));
        jetinfer_worker::run(args, stop).await?;
        Ok(())
    })
}
