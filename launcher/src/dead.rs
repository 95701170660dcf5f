//! `launcher dead ls|show <seq>|replay <seq>|--all|purge` (`./jetinfer dead
//! …`): the dead letters in `INFER_DEAD` for an operator. They carry request
//! text, so only the admin login may read, replay or purge them; any other
//! is refused by nats-server.

mod replay;

use anyhow::Context;
use async_nats::jetstream::message::StreamMessage;
use jetinfer_shared::config::NatsArgs;
use jetinfer_shared::dead;
use jetinfer_shared::protocol::{self, TaskBatch};
use jetinfer_shared::subjects;

/// The dead-letter commands, and how to reach NATS (as admin).
#[derive(Debug, clap::Args)]
pub struct DeadCommand {
    /// What to do.
    #[command(subcommand)]
    pub action: DeadAction,
    /// The admin login (`./jetinfer dead` passes `.state/identities/admin.env`).
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// What `launcher dead` does.
#[derive(Debug, clap::Subcommand)]
pub enum DeadAction {
    /// One line per dead letter: sequence, reason, age, task, requests, attempts.
    Ls,
    /// One dead letter: why it died and its requests (inputs cut at 120 characters).
    Show {
        /// Its sequence in INFER_DEAD (the first column of `ls`).
        seq: u64,
    },
    /// Put dead letters back in the work queue as new batches, then delete
    /// them; the answers go to the async results bucket (`GET /result/<request
    /// id>`), or are printed here when there is none.
    Replay {
        /// Its sequence in INFER_DEAD (the first column of `ls`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        seq: Option<u64>,
        /// Every dead letter that is a task batch.
        #[arg(long)]
        all: bool,
        /// Without a results bucket: how long to wait for the answers (and
        /// the replayed batches' deadline).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        wait_s: u64,
    },
    /// Delete every dead letter.
    Purge,
}

/// Run `command`, printing to standard output.
pub async fn run(command: &DeadCommand) -> anyhow::Result<()> {
    let client = command
        .nats
        .connect("jetinfer-dead")
        .await
        .context("connect to NATS (as admin)")?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(subjects::DEAD_STREAM)
        .await
        .with_context(|| format!("open {}", subjects::DEAD_STREAM))?;
    match command.action {
        DeadAction::Ls => {
            let state = stream.info().await?.state.clone();
            println!(
                "{:>6}  {:<9}  {:>8}  {:<14}  {:>8}  {:>8}",
                "SEQ", "REASON", "AGE", "TASK", "REQUESTS", "ATTEMPTS"
            );
            if state.messages == 0 {
                println!("(no dead letters)");
            }
            for seq in state.first_sequence..=state.last_sequence {
                // A gap is a letter aged out or deleted meanwhile.
                if let Ok(letter) = stream.get_raw_message(seq).await {
                    let batch = protocol::decode::<TaskBatch>(&letter.payload).ok();
                    let task = batch.as_ref().map_or("-".into(), |b| b.task.to_string());
                    let requests = batch
                        .as_ref()
                        .map_or("-".into(), |b| b.items.len().to_string());
                    println!(
                        "{:>6}  {:<9}  {:>8}  {:<14}  {:>8}  {:>8}",
                        seq,
                        header(&letter, dead::HEADER_REASON),
                        age(&letter),
                        task,
                        requests,
                        header(&letter, dead::HEADER_ATTEMPTS)
                    );
                }
            }
        }
        DeadAction::Show { seq } => {
            let letter = stream
                .get_raw_message(seq)
                .await
                .with_context(|| format!("no dead letter {seq} in {}", subjects::DEAD_STREAM))?;
            for name in [
                dead::HEADER_REASON,
                dead::HEADER_ATTEMPTS,
                dead::HEADER_LAST_WORKER,
                dead::HEADER_LAST_ERROR,
                dead::HEADER_SUBJECT,
                dead::HEADER_SEQUENCE,
            ] {
                println!("{name}: {}", header(&letter, name));
            }
            println!("age: {}", age(&letter));
            match protocol::decode::<TaskBatch>(&letter.payload) {
                Ok(batch) => {
                    println!(
                        "batch {} ({} {}, {} requests):",
                        batch.batch_id,
                        batch.model,
                        batch.task,
                        batch.items.len()
                    );
                    for item in &batch.items {
                        let input = serde_json::to_string(&item.input).unwrap_or_default();
                        println!("  {}  {}", item.request_id, cut(&input, 120));
                    }
                }
                Err(e) => println!("not a task batch ({e}): {} bytes", letter.payload.len()),
            }
        }
        DeadAction::Replay { seq, all, wait_s } => {
            let seqs = match seq {
                Some(seq) => vec![seq],
                None => {
                    let state = stream.info().await?.state.clone();
                    match state.messages {
                        0 => Vec::new(),
                        _ => (state.first_sequence..=state.last_sequence).collect(),
                    }
                }
            };
            let wait = std::time::Duration::from_secs(wait_s);
            replay::run(&js, &stream, seqs, all, wait).await?;
        }
        DeadAction::Purge => {
            let purged = stream.purge().await.context("purge (admin only)")?;
            println!("purged {} dead letters", purged.purged);
        }
    }
    Ok(())
}

/// Header `name` of `letter`, or `-`.
fn header(letter: &StreamMessage, name: &str) -> String {
    letter
        .headers
        .get(name)
        .map_or("-".into(), |v| v.as_str().to_owned())
}

/// How long ago the letter was stored, as `42s`, `17m`, `5h` or `3d`.
fn age(letter: &StreamMessage) -> String {
    let stored = letter.time.unix_timestamp();
    let now = (jetinfer_shared::clock::now_ms() / 1000) as i64;
    let s = (now - stored).max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `text` cut at `chars` characters, with an ellipsis when cut.
fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}
