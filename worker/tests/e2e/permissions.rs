//! Least privilege, proven against a real nats-server running our `nats.conf`:
//! each role logs in with its own credentials, every allowed action works and
//! every forbidden one is refused by the server with a permissions violation.

use futures::StreamExt;
use jetinfer_shared::protocol::{ModelName, Priority, Task};
use jetinfer_shared::topology::{self, TopologyArgs};
use jetinfer_testsupport::{nats_server_bin, repo_nats_conf, NatsServer};
use std::time::Duration;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

/// One thing a role may try.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Publish a message on a subject.
    Publish(&'static str),
    /// Subscribe to a subject.
    Subscribe(&'static str),
    /// A JetStream API request: allowed means JetStream answered at all.
    Api(&'static str, &'static str),
}

use Op::*;

/// The identities that try: the three single ones and one worker, `worker-1`,
/// who must not speak for `worker-2`.
const ADMIN: &str = "admin";
const GATEWAY: &str = "gateway";
const DASHBOARD: &str = "dashboard";
const WORKER: &str = "worker-1";
const ALL: [&str; 4] = [ADMIN, GATEWAY, WORKER, DASHBOARD];

/// The matrix: (role, action, allowed). Reads as the permission table in the README.
const MATRIX: &[(&str, Op, bool)] = &[
    // Publishing a task: only the gateway (and admin).
    (
        GATEWAY,
        Publish("infer.task.all-minilm-l6-v2.embed.normal"),
        true,
    ),
    (
        WORKER,
        Publish("infer.task.all-minilm-l6-v2.embed.normal"),
        false,
    ),
    (
        DASHBOARD,
        Publish("infer.task.all-minilm-l6-v2.embed.normal"),
        false,
    ),
    (
        ADMIN,
        Publish("infer.task.all-minilm-l6-v2.embed.normal"),
        true,
    ),
    // Results: only workers produce them; a gateway reads them from the
    // result stream (an ordered consumer), never from the bare subject.
    (WORKER, Publish("infer.result.gw-1"), true),
    (GATEWAY, Publish("infer.result.gw-1"), false),
    (DASHBOARD, Publish("infer.result.gw-1"), false),
    (GATEWAY, Subscribe("infer.result.gw-1"), false),
    (
        GATEWAY,
        Api("$JS.API.CONSUMER.INFO.INFER_RESULTS.results-gw-1", ""),
        true,
    ),
    (
        WORKER,
        Api("$JS.API.CONSUMER.INFO.INFER_RESULTS.results-gw-1", ""),
        false,
    ),
    (GATEWAY, Subscribe("$KV.INFER_WORKERS.>"), false),
    (WORKER, Subscribe("infer.result.gw-1"), false),
    // Each result also goes straight to its gateway (core NATS, the first
    // copy to arrive answers): workers send it, gateways hear it, no one else.
    (WORKER, Publish("infer.direct.gw-1"), true),
    (GATEWAY, Subscribe("infer.direct.gw-1"), true),
    (GATEWAY, Publish("infer.direct.gw-1"), false),
    (DASHBOARD, Publish("infer.direct.gw-1"), false),
    (WORKER, Subscribe("infer.direct.gw-1"), false),
    (DASHBOARD, Subscribe("infer.direct.>"), false),
    // Dead letters: a worker copies what it terminates, a gateway what
    // JetStream gave up on; they carry request text, so no one else reads them.
    (WORKER, Publish("infer.dead.malformed"), true),
    (WORKER, Publish("infer.dead.expired"), true),
    (WORKER, Publish("infer.dead.exhausted"), false),
    (GATEWAY, Publish("infer.dead.exhausted"), true),
    (GATEWAY, Publish("infer.dead.malformed"), false),
    (DASHBOARD, Publish("infer.dead.exhausted"), false),
    (DASHBOARD, Subscribe("infer.dead.>"), false),
    (WORKER, Subscribe("infer.dead.>"), false),
    // Results carry answers (and candidate texts): only their gateway reads them.
    (DASHBOARD, Subscribe("infer.result.>"), false),
    // Task batches carry request text: nobody snoops on them (a worker pulls).
    (DASHBOARD, Subscribe("infer.task.>"), false),
    (WORKER, Subscribe("infer.task.>"), false),
    (GATEWAY, Subscribe("infer.task.>"), false),
    // Events: workers their batch events, gateways their request events.
    (WORKER, Publish("infer.event.worker-1.completed"), true),
    (WORKER, Publish("infer.event.gw-1.request"), false),
    (GATEWAY, Publish("infer.event.gw-1.request"), true),
    (GATEWAY, Publish("infer.event.worker-1.completed"), false),
    (DASHBOARD, Publish("infer.event.worker-1.completed"), false),
    (DASHBOARD, Subscribe("infer.event.>"), true),
    // A gateway hears who started or failed a batch (for its dead letter),
    // no other event.
    (GATEWAY, Subscribe("infer.event.worker-1.started"), true),
    (GATEWAY, Subscribe("infer.event.worker-1.failed"), true),
    (GATEWAY, Subscribe("infer.event.worker-1.completed"), false),
    // The dashboard may count the dead letters, not read them (request text).
    (DASHBOARD, Publish("$JS.API.STREAM.INFO.INFER_DEAD"), true),
    (
        DASHBOARD,
        Publish("$JS.API.STREAM.MSG.GET.INFER_DEAD"),
        false,
    ),
    // Reply inboxes are private: a worker's hold its batches, the gateway's
    // results and API answers.
    (DASHBOARD, Subscribe("_INBOX.worker-1.>"), false),
    (DASHBOARD, Subscribe("_INBOX.gateway.>"), false),
    (DASHBOARD, Subscribe("_INBOX.>"), false),
    (WORKER, Subscribe("_INBOX.gateway.>"), false),
    (WORKER, Subscribe("_INBOX.worker-2.>"), false),
    (GATEWAY, Subscribe("_INBOX.worker-1.>"), false),
    (WORKER, Subscribe("_INBOX.worker-1.>"), true),
    (WORKER, Publish("_INBOX.worker-1.fence"), true),
    (WORKER, Publish("_INBOX.gateway.reply"), false),
    (DASHBOARD, Publish("_INBOX.worker-1.fence"), false),
    // Heartbeats: only workers write them.
    (WORKER, Publish("$KV.INFER_WORKERS.worker-1"), true),
    (GATEWAY, Publish("$KV.INFER_WORKERS.worker-1"), false),
    (DASHBOARD, Publish("$KV.INFER_WORKERS.worker-1"), false),
    // A worker speaks only for itself: not another's heartbeat or events.
    (WORKER, Publish("$KV.INFER_WORKERS.worker-2"), false),
    (WORKER, Publish("infer.event.worker-2.completed"), false),
    (WORKER, Publish("infer.event.worker-2.started"), false),
    // Pulling and acking work: only workers.
    (
        WORKER,
        Api(
            "$JS.API.CONSUMER.MSG.NEXT.INFER_TASKS.work-all-minilm-l6-v2-embed-normal",
            r#"{"batch":1,"no_wait":true}"#,
        ),
        true,
    ),
    (
        DASHBOARD,
        Api(
            "$JS.API.CONSUMER.MSG.NEXT.INFER_TASKS.work-all-minilm-l6-v2-embed-normal",
            r#"{"batch":1,"no_wait":true}"#,
        ),
        false,
    ),
    (
        GATEWAY,
        Api(
            "$JS.API.CONSUMER.MSG.NEXT.INFER_TASKS.work-all-minilm-l6-v2-embed-normal",
            r#"{"batch":1,"no_wait":true}"#,
        ),
        false,
    ),
    (
        WORKER,
        Publish("$JS.ACK.INFER_TASKS.work-all-minilm-l6-v2-embed-normal.1.1.1.1.0"),
        true,
    ),
    (
        DASHBOARD,
        Publish("$JS.ACK.INFER_TASKS.work-all-minilm-l6-v2-embed-normal.1.1.1.1.0"),
        false,
    ),
    (
        GATEWAY,
        Publish("$JS.ACK.INFER_TASKS.work-all-minilm-l6-v2-embed-normal.1.1.1.1.0"),
        false,
    ),
    // Reading queue depth: everyone.
    (DASHBOARD, Api("$JS.API.STREAM.INFO.INFER_TASKS", ""), true),
    (GATEWAY, Api("$JS.API.CONSUMER.LIST.INFER_TASKS", ""), true),
    (
        DASHBOARD,
        Api("$JS.API.CONSUMER.LIST.INFER_TASKS", ""),
        true,
    ),
    (WORKER, Api("$JS.API.STREAM.INFO.INFER_TASKS", ""), true),
    (ADMIN, Api("$JS.API.STREAM.INFO.INFER_TASKS", ""), true),
    // Destroying or reshaping the queue: nobody but admin.
    (
        DASHBOARD,
        Api("$JS.API.STREAM.DELETE.INFER_TASKS", ""),
        false,
    ),
    (
        DASHBOARD,
        Api("$JS.API.STREAM.PURGE.INFER_TASKS", ""),
        false,
    ),
    (
        DASHBOARD,
        Api(
            "$JS.API.CONSUMER.DELETE.INFER_TASKS.work-all-minilm-l6-v2-embed-normal",
            "",
        ),
        false,
    ),
    (
        DASHBOARD,
        Api("$JS.API.STREAM.MSG.DELETE.INFER_TASKS", r#"{"seq":1}"#),
        false,
    ),
    (WORKER, Api("$JS.API.STREAM.DELETE.INFER_TASKS", ""), false),
    (WORKER, Api("$JS.API.STREAM.PURGE.INFER_TASKS", ""), false),
    (
        WORKER,
        Api("$JS.API.STREAM.UPDATE.INFER_TASKS", "{}"),
        false,
    ),
    (
        WORKER,
        Api(
            "$JS.API.CONSUMER.DELETE.INFER_TASKS.work-all-minilm-l6-v2-embed-normal",
            "",
        ),
        false,
    ),
    (GATEWAY, Api("$JS.API.STREAM.DELETE.INFER_TASKS", ""), false),
    (GATEWAY, Api("$JS.API.STREAM.PURGE.INFER_TASKS", ""), false),
    (
        GATEWAY,
        Api(
            "$JS.API.CONSUMER.DELETE.INFER_TASKS.work-all-minilm-l6-v2-embed-normal",
            "",
        ),
        false,
    ),
    (
        GATEWAY,
        Api("$JS.API.STREAM.DELETE.KV_INFER_WORKERS", ""),
        false,
    ),
    // Async requests' entries (they hold answers): the gateway creates,
    // reads and cancels them, workers claim and answer them, the dashboard
    // neither reads nor writes them; only the gateway creates the bucket.
    (GATEWAY, Publish("$KV.INFER_RESULTS_KV.r-1"), true),
    (WORKER, Publish("$KV.INFER_RESULTS_KV.r-1"), true),
    (DASHBOARD, Publish("$KV.INFER_RESULTS_KV.r-1"), false),
    (
        GATEWAY,
        Api(
            "$JS.API.DIRECT.GET.KV_INFER_RESULTS_KV.$KV.INFER_RESULTS_KV.r-1",
            "",
        ),
        true,
    ),
    (
        WORKER,
        Api(
            "$JS.API.DIRECT.GET.KV_INFER_RESULTS_KV.$KV.INFER_RESULTS_KV.r-1",
            "",
        ),
        true,
    ),
    (
        DASHBOARD,
        Api(
            "$JS.API.DIRECT.GET.KV_INFER_RESULTS_KV.$KV.INFER_RESULTS_KV.r-1",
            "",
        ),
        false,
    ),
    (DASHBOARD, Subscribe("$KV.INFER_RESULTS_KV.>"), false),
    (
        GATEWAY,
        Api("$JS.API.STREAM.CREATE.KV_INFER_RESULTS_KV", "{}"),
        true,
    ),
    (
        WORKER,
        Api("$JS.API.STREAM.CREATE.KV_INFER_RESULTS_KV", "{}"),
        false,
    ),
    // The NATS API: gateways serve it; admin (an operator's login) calls it;
    // workers and the dashboard neither call nor impersonate it.
    (GATEWAY, Subscribe("infer.api.>"), true),
    (ADMIN, Publish("infer.api.embed"), true),
    (WORKER, Publish("infer.api.embed"), false),
    (DASHBOARD, Publish("infer.api.embed"), false),
    (WORKER, Subscribe("infer.api.>"), false),
    (DASHBOARD, Subscribe("infer.api.>"), false),
];

/// A client of one role that also collects the errors the server sends it.
struct Probe {
    client: async_nats::Client,
    violations: mpsc::UnboundedReceiver<String>,
}

impl Probe {
    async fn connect(nats: &NatsServer, login: &str) -> Probe {
        let (tx, violations) = mpsc::unbounded_channel();
        let client = nats
            .options(login)
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(nats.url())
            .await
            .expect("role connects with its password");
        Probe { client, violations }
    }

    /// Wait for the server's permissions violation naming `subject`.
    async fn refused(&mut self, subject: &str) -> bool {
        let wanted = format!("\"{}\"", subject.to_lowercase());
        tokio::time::timeout(WAIT, async {
            while let Some(e) = self.violations.recv().await {
                let e = e.to_lowercase();
                if e.contains("permissions violation") && e.contains(&wanted) {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false)
    }
}

/// Streams, consumers and the bucket exist, as in a running stack.
async fn topology(admin: &async_nats::Client) {
    let args = <TopologyCli as clap::Parser>::parse_from(["t"]).topology;
    let js = async_nats::jetstream::new(admin.clone());
    let stream = topology::ensure_streams(&js, &args).await.unwrap();
    topology::ensure_workers_bucket(&js, &args).await.unwrap();
    topology::ensure_results_bucket(&js, Duration::from_secs(60), 1)
        .await
        .unwrap();
    let text = ModelName::default_for(Task::Embed);
    topology::ensure_work_consumer(&stream, &args, &text, Task::Embed, Priority::Normal)
        .await
        .unwrap();
}

#[derive(clap::Parser)]
struct TopologyCli {
    #[command(flatten)]
    topology: TopologyArgs,
}

/// Does `op` by `role` succeed? Allowed publishes and subscriptions are
/// checked end to end through an admin on the other side.
async fn attempt(nats: &NatsServer, admin: &async_nats::Client, login: &str, op: Op) -> bool {
    let mut probe = Probe::connect(nats, login).await;
    match op {
        Publish(subject) => {
            let mut watch = admin.subscribe(subject).await.unwrap();
            admin.flush().await.unwrap();
            probe.client.publish(subject, "probe".into()).await.unwrap();
            probe.client.flush().await.unwrap();
            tokio::select! {
                got = watch.next() => got.is_some(),
                refused = probe.refused(subject) => !refused,
            }
        }
        Subscribe(subject) => {
            let mut sub = probe.client.subscribe(subject).await.unwrap();
            probe.client.flush().await.unwrap();
            let concrete = subject.replace('>', "x.y").replace('*', "x");
            let send = async {
                // Until it arrives or is refused: the subscription may still be in flight.
                loop {
                    admin
                        .publish(concrete.clone(), "probe".into())
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            tokio::select! {
                got = sub.next() => got.is_some(),
                refused = probe.refused(subject) => !refused,
                _ = send => unreachable!(),
            }
        }
        Api(subject, body) => {
            let inbox = probe.client.new_inbox();
            let mut answers = probe.client.subscribe(inbox.clone()).await.unwrap();
            probe
                .client
                .publish_with_reply(subject, inbox, body.into())
                .await
                .unwrap();
            tokio::select! {
                answer = tokio::time::timeout(WAIT, answers.next()) => {
                    matches!(answer, Ok(Some(_)))
                }
                refused = probe.refused(subject) => !refused,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_role_can_do_what_it_must_and_nothing_more() {
    let nats = NatsServer::start();
    let admin = nats.client().await;
    topology(&admin).await;
    let mut wrong = Vec::new();
    nats.identity("worker-2");
    for &(login, op, allowed) in MATRIX {
        let got = attempt(&nats, &admin, login, op).await;
        if got != allowed {
            wrong.push(format!(
                "{} {op:?}: expected {}, was {}",
                login,
                if allowed { "allowed" } else { "refused" },
                if got { "allowed" } else { "refused" },
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "permission matrix broken:\n{}",
        wrong.join("\n")
    );

    // The queue survived every attempt to destroy it.
    let js = async_nats::jetstream::new(admin.clone());
    let mut stream = js
        .get_stream("INFER_TASKS")
        .await
        .expect("stream still there");
    stream.info().await.unwrap();
    stream
        .consumer_info("work-all-minilm-l6-v2-embed-normal")
        .await
        .expect("consumer still there");
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_refused() {
    let nats = NatsServer::start();
    let wrong = async_nats::ConnectOptions::with_user_and_password(WORKER.into(), "guess".into())
        .connect(nats.url())
        .await;
    assert!(wrong.is_err(), "a wrong password must be refused");
    // One worker's password is not another's.
    nats.identity("worker-2");
    let borrowed = async_nats::ConnectOptions::with_user_and_password(
        "worker-2".into(),
        nats.password(WORKER),
    )
    .connect(nats.url())
    .await;
    assert!(
        borrowed.is_err(),
        "worker-1's password must not open worker-2"
    );
    let anonymous = async_nats::connect(nats.url()).await;
    assert!(anonymous.is_err(), "no credentials must be refused");
    // Each identity's own password works.
    for login in ALL {
        nats.connect_as(login).await.expect("own password accepted");
    }
}

/// Our `nats.conf` alone, without the generated `access.conf` beside it, must
/// not load: a server started from the repository as it is never runs open.
#[tokio::test]
async fn the_server_refuses_to_start_without_its_access_file() {
    let out = std::process::Command::new(nats_server_bin())
        .arg("-c")
        .arg(repo_nats_conf())
        .arg("-t")
        .output()
        .expect("nats-server runs");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "config must not load: {text}");
    assert!(
        text.contains("access.conf"),
        "names the missing file: {text}"
    );
}
