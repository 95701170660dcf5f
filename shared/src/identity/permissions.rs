//! Least privilege, as data: what each role may publish and subscribe.
//!
//! JetStream is driven through subjects, so permissions on `$JS.API.*` decide
//! who may create, inspect, consume, ack or delete. Nothing here grants
//! UPDATE, DELETE or PURGE of a stream to any role but admin, nor a consumer
//! delete, except the gateway's on INFER_RESULTS (its own ordered result
//! consumers). `worker/tests/e2e/permissions.rs` proves every line against a
//! real server.

use super::Role;

/// One identity's permissions, as nats-server's `permissions` map holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects it may publish to (empty with `None`: everything).
    pub publish_allow: Option<Vec<String>>,
    /// Subjects it may never publish to, even when allowed above.
    pub publish_deny: Vec<String>,
    /// Subjects it may subscribe to (`None`: everything).
    pub subscribe_allow: Option<Vec<String>>,
    /// May answer requests sent to it (NATS micro service `$SRV` requests).
    pub allow_responses: bool,
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Opening (or creating) the two streams and the heartbeat bucket, which both
/// gateway and worker do at start, whichever comes first.
const OPEN_TOPOLOGY: &[&str] = &[
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.INFER_TASKS",
    "$JS.API.STREAM.CREATE.INFER_TASKS",
    "$JS.API.STREAM.INFO.INFER_RESULTS",
    "$JS.API.STREAM.CREATE.INFER_RESULTS",
    "$JS.API.STREAM.INFO.KV_INFER_WORKERS",
    "$JS.API.STREAM.CREATE.KV_INFER_WORKERS",
    "$JS.API.STREAM.INFO.INFER_DEAD",
    "$JS.API.STREAM.CREATE.INFER_DEAD",
];

/// The permissions of identity `name` of `role`. A worker's own heartbeat key
/// and event subjects carry its name; nobody else's.
pub fn of(role: Role, name: &str) -> Permissions {
    match role {
        Role::Admin => Permissions::default(),
        Role::Gateway => gateway(name),
        Role::Worker => worker(name),
        Role::Dashboard => dashboard(name),
    }
}

/// Where identity `name` may receive replies: its own inboxes only.
fn own_inboxes(name: &str) -> String {
    format!("{}.>", super::inbox_prefix(name))
}

/// Publishes task batches, reads its results from the result stream, hears
/// JetStream's give-up advisories, deletes a given-up batch, publishes its
/// request events, keeps Idempotency-Key claims and async requests' entries;
/// serves the API over NATS request-reply (`infer.api.>`, `$SRV.>`).
fn gateway(name: &str) -> Permissions {
    let own = [
        // list and read heartbeats (ordered consumers, direct gets)
        "$JS.API.CONSUMER.CREATE.KV_INFER_WORKERS",
        "$JS.API.CONSUMER.CREATE.KV_INFER_WORKERS.>",
        "$JS.API.DIRECT.GET.KV_INFER_WORKERS.>",
        "$JS.API.STREAM.MSG.GET.KV_INFER_WORKERS",
        "$JS.FC.KV_INFER_WORKERS.>",
        // its results, read from the result stream by an ordered consumer
        // (re-created, and the old one deleted, after any interruption)
        "$JS.API.CONSUMER.CREATE.INFER_RESULTS.>",
        "$JS.API.CONSUMER.MSG.NEXT.INFER_RESULTS.>",
        "$JS.API.CONSUMER.INFO.INFER_RESULTS.>",
        "$JS.API.CONSUMER.DELETE.INFER_RESULTS.>",
        // queue depth, read only
        "$JS.API.CONSUMER.LIST.INFER_TASKS",
        // its own work
        "infer.task.>",
        "$JS.API.STREAM.MSG.DELETE.INFER_TASKS",
        // a given-up batch's copy, before it is deleted
        "infer.dead.exhausted",
        "infer.event.*.request",
        "infer.event.*.stats",
        // Idempotency-Key claims and answers: create, read, watch, update;
        // whether a queued batch is still in the task stream
        "$JS.API.STREAM.INFO.KV_INFER_IDEMPOTENCY",
        "$JS.API.STREAM.CREATE.KV_INFER_IDEMPOTENCY",
        "$KV.INFER_IDEMPOTENCY.*",
        "$JS.API.DIRECT.GET.KV_INFER_IDEMPOTENCY.>",
        "$JS.API.STREAM.MSG.GET.KV_INFER_IDEMPOTENCY",
        "$JS.API.CONSUMER.CREATE.KV_INFER_IDEMPOTENCY",
        "$JS.API.CONSUMER.CREATE.KV_INFER_IDEMPOTENCY.>",
        "$JS.FC.KV_INFER_IDEMPOTENCY.>",
        "$JS.API.STREAM.MSG.GET.INFER_TASKS",
        // async requests: create their entries, read, cancel, store
        // `retries_exhausted` (a given-up batch is read by sequence, above)
        "$JS.API.STREAM.INFO.KV_INFER_RESULTS_KV",
        "$JS.API.STREAM.CREATE.KV_INFER_RESULTS_KV",
        "$KV.INFER_RESULTS_KV.*",
        "$JS.API.DIRECT.GET.KV_INFER_RESULTS_KV.>",
        "$JS.API.STREAM.MSG.GET.KV_INFER_RESULTS_KV",
    ];
    Permissions {
        publish_allow: Some([strings(OPEN_TOPOLOGY), strings(&own)].concat()),
        publish_deny: Vec::new(),
        subscribe_allow: Some(vec![
            own_inboxes(name),
            // results sent straight from the workers (the stored copies come
            // through its ordered consumer)
            "infer.direct.*".to_owned(),
            // who last had a batch, for the dead letter of a given-up one
            "infer.event.*.started".to_owned(),
            "infer.event.*.failed".to_owned(),
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.INFER_TASKS.*".to_owned(),
            "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.INFER_TASKS.*".to_owned(),
            // the NATS API (micro service `jetinfer-gateway`) and the
            // standard `$SRV` discovery, answered to the requester's inbox
            "infer.api.>".to_owned(),
            "$SRV.>".to_owned(),
        ]),
        allow_responses: true,
    }
}

/// Pulls from the shared work consumers and acks, publishes results, the
/// answers of keyed and async requests, and *its own* events and heartbeat; answers
/// NATS micro service requests (`$SRV.*`). Never publishes a task, and never
/// a gateway's request or stats event.
fn worker(name: &str) -> Permissions {
    let own = [
        // join the shared work consumers, pull and ack
        "$JS.API.CONSUMER.INFO.INFER_TASKS.*".to_owned(),
        "$JS.API.CONSUMER.CREATE.INFER_TASKS.>".to_owned(),
        "$JS.API.CONSUMER.DURABLE.CREATE.INFER_TASKS.>".to_owned(),
        "$JS.API.CONSUMER.MSG.NEXT.INFER_TASKS.>".to_owned(),
        "$JS.ACK.INFER_TASKS.>".to_owned(),
        // its output: results for any gateway (stored, and sent direct), its
        // own events and heartbeat
        "infer.result.*".to_owned(),
        "infer.direct.*".to_owned(),
        // the copy of a batch it terminates (malformed, expired)
        "infer.dead.malformed".to_owned(),
        "infer.dead.expired".to_owned(),
        format!("infer.event.{name}.>"),
        format!("$KV.INFER_WORKERS.{name}"),
        // The fence that withdraws its pull requests (`consume::pull`).
        own_inboxes(name),
        // the answer of a request sent with an Idempotency-Key
        "$JS.API.STREAM.INFO.KV_INFER_IDEMPOTENCY".to_owned(),
        "$KV.INFER_IDEMPOTENCY.*".to_owned(),
        // async requests: claim (read, then write `running`) and answer
        "$JS.API.STREAM.INFO.KV_INFER_RESULTS_KV".to_owned(),
        "$KV.INFER_RESULTS_KV.*".to_owned(),
        "$JS.API.DIRECT.GET.KV_INFER_RESULTS_KV.>".to_owned(),
        "$JS.API.STREAM.MSG.GET.KV_INFER_RESULTS_KV".to_owned(),
    ];
    Permissions {
        publish_allow: Some([strings(OPEN_TOPOLOGY), own.to_vec()].concat()),
        publish_deny: strings(&[
            "infer.task.>",
            "infer.event.*.request",
            "infer.event.*.stats",
        ]),
        subscribe_allow: Some(vec![
            own_inboxes(name),
            "$SRV.>".to_owned(),
            "infer.worker.>".to_owned(),
        ]),
        allow_responses: true,
    }
}

/// Watches everything, changes nothing: its only publishes are read-only
/// JetStream requests (heartbeat watch, queue depth). It may not read task
/// batches or results (request text, answers): `DASHBOARD_SHOW_INPUTS` needs
/// a login that may read `infer.task.>` (admin), on purpose.
fn dashboard(name: &str) -> Permissions {
    Permissions {
        publish_allow: Some(strings(&[
            "$JS.API.STREAM.INFO.KV_INFER_WORKERS",
            "$JS.API.CONSUMER.CREATE.KV_INFER_WORKERS",
            "$JS.API.CONSUMER.CREATE.KV_INFER_WORKERS.>",
            "$JS.FC.KV_INFER_WORKERS.>",
            "$JS.API.STREAM.INFO.INFER_TASKS",
            "$JS.API.CONSUMER.LIST.INFER_TASKS",
            "$JS.API.STREAM.INFO.INFER_DEAD",
        ])),
        publish_deny: Vec::new(),
        subscribe_allow: Some(vec![own_inboxes(name), "infer.event.>".to_owned()]),
        allow_responses: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_writes_only_its_own_heartbeat_and_events() {
        let p = of(Role::Worker, "worker-3");
        let allow = p.publish_allow.unwrap();
        assert!(allow.contains(&"$KV.INFER_WORKERS.worker-3".to_owned()));
        assert!(allow.contains(&"infer.event.worker-3.>".to_owned()));
        assert!(!allow.iter().any(|s| s.starts_with("$KV.INFER_WORKERS.*")
            || s.starts_with("infer.event.*")
            || s == "infer.event.>"));
    }
}
