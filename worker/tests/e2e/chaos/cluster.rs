//! A real 3-node NATS cluster with every stream and bucket in three copies
//! (`STREAM_REPLICAS=3`): the node leading `INFER_TASKS` killed (`kill -9`)
//! in the middle of 2000 requests, then restarted to catch up; the node
//! holding the gateway's result reader killed; and two gateways on
//! different nodes with workers spread over all three. A node's loss must
//! show only as a pause: every request is answered 200.

use super::{assert_answered_once, report, LIMIT};
use crate::stack::{gateway_bin, WORKER};
use futures::StreamExt;
use jetinfer_testsupport::{
    three_current_copies, wait_for, GatewayProcess, NatsServer, WorkerProcess,
};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Workers of these tests; a cluster member knows only the logins it started with.
const WORKERS: [&str; 3] = ["node-w0", "node-w1", "node-w2"];

/// Every node's client URL, comma separated, as `NATS_URL` takes them.
fn all_urls(nodes: &[NatsServer]) -> String {
    let urls: Vec<String> = nodes.iter().map(NatsServer::url).collect();
    urls.join(",")
}

/// An admin client that fails over between the nodes, for the test's checks.
async fn admin(nodes: &[NatsServer]) -> async_nats::jetstream::Context {
    let servers: Vec<async_nats::ServerAddr> = nodes
        .iter()
        .map(|n| n.url().parse().expect("a server address"))
        .collect();
    let client = nodes[0]
        .options("admin")
        .connect(servers)
        .await
        .expect("admin login to the cluster");
    let mut js = async_nats::jetstream::new(client);
    // Short, so a stream info sent to a dead leader is soon asked again.
    js.set_timeout(Duration::from_millis(250));
    js
}

/// `stream`'s leader (a node's `server_name`, `n<i>`) and how many of its
/// other copies are current; None while the stream cannot answer.
async fn copies(js: &async_nats::jetstream::Context, stream: &str) -> Option<(String, usize)> {
    let info = js.get_stream(stream).await.ok()?.info().await.ok()?.clone();
    let cluster = info.cluster?;
    let current = cluster.replicas.iter().filter(|r| r.current).count();
    Some((cluster.leader?, current))
}

/// POST `body` to `gateway`'s `/infer`: (status, JSON body).
async fn infer(http: &reqwest::Client, gateway: &str, body: &Value) -> (u16, Value) {
    let response = http
        .post(format!("{gateway}/infer"))
        .json(body)
        .send()
        .await
        .expect("the gateway answers over HTTP");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// The longest stretch between two answers (or from the first send to the
/// first answer), and where it began, counted from `start`.
fn longest_gap(start: Instant, mut answered: Vec<Instant>) -> (Duration, Duration) {
    answered.sort();
    let mut last = start;
    let (mut gap, mut at) = (Duration::ZERO, Duration::ZERO);
    for t in answered {
        if t - last > gap {
            (gap, at) = (t - last, last - start);
        }
        last = t;
    }
    (gap, at)
}

/// Three nodes, a gateway that knows all of them, and an echo worker on each.
struct Cluster {
    nodes: Vec<NatsServer>,
    gateway: GatewayProcess,
    _workers: Vec<WorkerProcess>,
    js: async_nats::jetstream::Context,
    http: reqwest::Client,
}

impl Cluster {
    async fn start() -> Self {
        let nodes = NatsServer::start_cluster(3, &WORKERS).await;
        let urls = all_urls(&nodes);
        let shared = [("NATS_URL", urls.as_str()), ("STREAM_REPLICAS", "3")];
        let gateway = GatewayProcess::start(&gateway_bin(), &nodes[0], "gw-cluster", &shared).await;
        let worker_env: Vec<_> = shared.iter().copied().chain([("TASKS", "echo")]).collect();
        let _workers = (WORKERS.iter().enumerate())
            .map(|(i, id)| WorkerProcess::start(WORKER, &nodes[i], id, &worker_env))
            .collect();
        let js = admin(&nodes).await;
        let http = reqwest::Client::new();
        let cluster = Self {
            nodes,
            gateway,
            _workers,
            js,
            http,
        };
        wait_for(
            "an echo answer from the cluster",
            Duration::from_secs(60),
            || async {
                let (status, _) = cluster.echo("up").await;
                (status == 200).then_some(())
            },
        )
        .await;
        cluster
    }

    async fn echo(&self, text: &str) -> (u16, Value) {
        infer(
            &self.http,
            self.gateway.url(),
            &json!({"task": "echo", "input": text}),
        )
        .await
    }

    /// The node whose `server_name` is `name` (`n<i>`).
    fn node(&self, name: &str) -> &NatsServer {
        &self.nodes[name[1..].parse::<usize>().expect("server names are n<i>")]
    }

    /// `n` echo requests, 16 at a time, while `chaos` runs once `after` of
    /// them were answered; every answer must be a 200 with its own echo.
    /// Returns when each was answered and what `chaos` returned.
    async fn load_with<T>(
        &self,
        n: usize,
        after: usize,
        chaos: impl std::future::Future<Output = T>,
    ) -> (Vec<Instant>, T) {
        let answered = AtomicUsize::new(0);
        let load = futures::stream::iter(0..n)
            .map(|i| {
                let answered = &answered;
                async move {
                    let text = format!("cluster request {i}");
                    let (status, body) = self.echo(&text).await;
                    answered.fetch_add(1, Ordering::SeqCst);
                    (text, status, body, Instant::now())
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>();
        let chaos = async {
            while answered.load(Ordering::SeqCst) < after {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            chaos.await
        };
        let (results, out) = tokio::join!(load, chaos);
        let answers: Vec<(u16, Value)> =
            results.iter().map(|(_, s, b, _)| (*s, b.clone())).collect();
        report("cluster", &answers);
        assert_eq!(answers.len(), n);
        for (text, status, body, _) in &results {
            assert_eq!(
                *status, 200,
                "a node's loss is seen only as a pause: {body}"
            );
            assert_eq!(body["output"]["echo"], *text, "{body}");
        }
        assert_answered_once(&answers);
        (results.into_iter().map(|r| r.3).collect(), out)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_task_stream_leader_killed_mid_load_loses_nothing_and_catches_up() {
    const REQUESTS: usize = 2000;
    tokio::time::timeout(LIMIT, async {
        let cluster = Cluster::start().await;
        let leader = three_current_copies(&cluster.js, "INFER_TASKS").await;
        let start = Instant::now();
        // Kill the leader, then time the election the way a client sees it.
        let kill = async {
            cluster.node(&leader).kill();
            let killed = Instant::now();
            let js = &cluster.js;
            let elected = wait_for(
                "a new INFER_TASKS leader",
                Duration::from_secs(60),
                || async {
                    copies(js, "INFER_TASKS")
                        .await
                        .map(|(l, _)| l)
                        .filter(|l| *l != leader)
                },
            )
            .await;
            (killed, elected, killed.elapsed())
        };
        let (answered, (killed, elected, election)) = cluster.load_with(REQUESTS, 500, kill).await;
        let after_kill = answered.iter().filter(|t| **t > killed).count();
        assert!(after_kill > 0, "traffic went on after the leader died");
        let (gap, at) = longest_gap(start, answered);
        eprintln!(
            "leader kill -9: {leader} killed after {:.2} s, {elected} leads {:.2} s later, \
             {after_kill} answered after the kill, longest gap {:.2} s at {:.2} s, \
             all {REQUESTS} in {:.2} s",
            (killed - start).as_secs_f64(),
            election.as_secs_f64(),
            gap.as_secs_f64(),
            at.as_secs_f64(),
            start.elapsed().as_secs_f64()
        );

        // The killed node comes back and catches up; the stack still serves.
        cluster.node(&leader).restart();
        for stream in ["INFER_TASKS", "INFER_RESULTS", "KV_INFER_WORKERS"] {
            three_current_copies(&cluster.js, stream).await;
        }
        let (status, body) = cluster.echo("after").await;
        assert_eq!(
            (status, &body["output"]["echo"]),
            (200, &json!("after")),
            "{body}"
        );
    })
    .await
    .expect("test bounded in time");
}

/// The gateway's result reader is an R1 consumer on one node: killing that
/// node must cost a pause, not answers (async-nats's default 30 s pull
/// noticed the loss only after a minute, so requests timed out meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_node_holding_the_gateways_result_reader_killed_mid_load_costs_no_answer() {
    tokio::time::timeout(LIMIT, async {
        let cluster = Cluster::start().await;
        let stream = cluster
            .js
            .get_stream("INFER_RESULTS")
            .await
            .expect("INFER_RESULTS");
        let reader = stream
            .consumer_info("results-gw-cluster")
            .await
            .expect("the gateway's result reader")
            .clone();
        let host = reader
            .cluster
            .and_then(|c| c.leader)
            .expect("the node it lives on");
        let kill = async {
            cluster.node(&host).kill();
            Instant::now()
        };
        let start = Instant::now();
        let (answered, killed) = cluster.load_with(600, 100, kill).await;
        let (gap, at) = longest_gap(start, answered);
        eprintln!(
            "result reader's node {host} killed after {:.2} s: longest gap {:.2} s at {:.2} s",
            (killed - start).as_secs_f64(),
            gap.as_secs_f64(),
            at.as_secs_f64()
        );
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_on_different_nodes_get_their_own_answers() {
    const EACH: usize = 150;
    tokio::time::timeout(LIMIT, async {
        let nodes = NatsServer::start_cluster(3, &WORKERS).await;
        // Each process knows only its own node (`nats.env` names that one).
        let r3 = [("STREAM_REPLICAS", "3")];
        let bin = gateway_bin();
        let a = GatewayProcess::start(&bin, &nodes[0], "gw-node-0", &r3).await;
        let c = GatewayProcess::start(&bin, &nodes[2], "gw-node-2", &r3).await;
        let _workers: Vec<WorkerProcess> = (WORKERS.iter().enumerate())
            .map(|(i, id)| WorkerProcess::start(WORKER, &nodes[i], id, &r3))
            .collect();
        let http = reqwest::Client::new();
        for gateway in [&a, &c] {
            wait_for(
                "an embedding from the cluster",
                Duration::from_secs(60),
                || async {
                    let (status, body) = infer(
                        &http,
                        gateway.url(),
                        &json!({"task": "embed", "input": "up"}),
                    )
                    .await;
                    (status == 200 && body["output"]["embedding"].as_array()?.len() == 384)
                        .then_some(())
                },
            )
            .await;
        }

        // Both at once; a result routed to the wrong gateway would leave its
        // request unanswered until the 504.
        let send = |gateway: &GatewayProcess, name: &str| {
            let (http, url, name) = (&http, gateway.url().to_owned(), name.to_owned());
            futures::stream::iter(0..EACH)
                .map(move |i| {
                    let (url, text) = (url.clone(), format!("{name} request {i}"));
                    async move {
                        let (status, body) =
                            infer(http, &url, &json!({"task": "echo", "input": text})).await;
                        (text, status, body)
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<_>>()
        };
        let (from_a, from_c) = tokio::join!(send(&a, "a"), send(&c, "c"));
        let answers: Vec<(u16, Value)> = (from_a.iter().chain(&from_c))
            .map(|(_, s, b)| (*s, b.clone()))
            .collect();
        report("two gateways, three nodes", &answers);
        for (text, status, body) in from_a.iter().chain(&from_c) {
            assert_eq!(*status, 200, "{body}");
            assert_eq!(body["output"]["echo"], *text, "{body}");
        }
        assert_answered_once(&answers);
    })
    .await
    .expect("test bounded in time");
}
