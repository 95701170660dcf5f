//! Reading the heartbeat bucket: which workers are alive right now.
//!
//! Every reader of liveness (the gateway's `/status` and `/readyz`, the
//! launcher's readiness wait) asks here. The keys come from the bucket
//! stream's subject list and each value from one get, so a listing is a few
//! bounded requests. `Store::keys()` is not used: it starts a consumer and
//! waits for as many entries as were pending when it started, and a heartbeat
//! that ages out in between (a killed worker's, exactly when someone looks)
//! never arrives — `/status` then hung.

use crate::protocol::Heartbeat;
use crate::subjects;
use async_nats::jetstream;
use futures::StreamExt;

/// The heartbeat bucket could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the {} bucket: {reason}", subjects::WORKERS_BUCKET)]
pub struct HeartbeatsError {
    reason: String,
}

fn failed(e: impl std::fmt::Display) -> HeartbeatsError {
    HeartbeatsError {
        reason: e.to_string(),
    }
}

/// The heartbeats stored now, ordered by worker id. A key deleted or aged out
/// while it is read is left out; so is a value that is not a heartbeat.
pub async fn live(js: &jetstream::Context) -> Result<Vec<Heartbeat>, HeartbeatsError> {
    let kv = js
        .get_key_value(subjects::WORKERS_BUCKET)
        .await
        .map_err(failed)?;
    let prefix = subjects::WORKERS_KEY_PREFIX;
    let stream = js
        .get_stream(subjects::WORKERS_BUCKET_STREAM)
        .await
        .map_err(failed)?;
    let mut listed = stream
        .info_with_subjects(format!("{prefix}>"))
        .await
        .map_err(failed)?;
    let mut keys = Vec::new();
    while let Some(subject) = listed.next().await {
        let (subject, _count) = subject.map_err(failed)?;
        if let Some(key) = subject.strip_prefix(prefix) {
            keys.push(key.to_owned());
        }
    }
    let mut beats = Vec::new();
    for key in keys {
        // None: deleted (a clean stop) or aged out since the listing.
        if let Some(value) = kv.get(&key).await.map_err(failed)? {
            if let Ok(beat) = serde_json::from_slice::<Heartbeat>(&value) {
                beats.push(beat);
            }
        }
    }
    beats.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(beats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{ensure_workers_bucket, TopologyArgs};
    use clap::Parser;
    use jetinfer_testsupport::NatsServer;
    use std::time::Duration;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        topology: TopologyArgs,
    }

    /// A heartbeat bucket whose keys age out 300 ms after their last put.
    async fn bucket(nats: &NatsServer) -> (jetstream::Context, jetstream::kv::Store) {
        let js = jetstream::new(nats.client().await);
        let args = Args::parse_from(["t", "--heartbeat-interval-ms", "100"]).topology;
        let kv = ensure_workers_bucket(&js, &args).await.expect("bucket");
        (js, kv)
    }

    fn beat(id: &str) -> bytes::Bytes {
        let beat = Heartbeat {
            id: id.to_owned(),
            tasks: Vec::new(),
            models: Vec::new(),
            version: "0".into(),
            state: "ready".into(),
            in_flight: 0,
            processed: 0,
            failed: 0,
            redelivered: 0,
            cancelled: 0,
            last_batch_ms: 0.0,
            started_at_ms: 0,
            updated_at_ms: 0,
        };
        serde_json::to_vec(&beat).expect("JSON").into()
    }

    fn ids(beats: &[Heartbeat]) -> Vec<&str> {
        beats.iter().map(|b| b.id.as_str()).collect()
    }

    #[tokio::test]
    async fn lists_live_workers_without_deleted_expired_or_foreign_values() {
        let nats = NatsServer::start();
        let (js, kv) = bucket(&nats).await;
        assert!(live(&js).await.unwrap().is_empty(), "an empty bucket");
        for id in ["c", "a", "b"] {
            kv.put(id, beat(id)).await.unwrap();
        }
        kv.put("junk", "not a heartbeat".into()).await.unwrap();
        kv.delete("b").await.unwrap();
        assert_eq!(ids(&live(&js).await.unwrap()), ["a", "c"]);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(live(&js).await.unwrap().is_empty(), "aged out");
    }

    #[tokio::test]
    async fn a_listing_returns_while_keys_age_out_under_it() {
        let nats = NatsServer::start();
        let (js, kv) = bucket(&nats).await;
        // Keys put at staggered times, so some expire while each listing runs:
        // the moment a consumer-based listing waited forever.
        for round in 0..40u64 {
            kv.put(&format!("w{round}"), beat(&format!("w{round}")))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(round % 7 * 15)).await;
            let listed = tokio::time::timeout(Duration::from_secs(10), live(&js))
                .await
                .unwrap_or_else(|_| panic!("round {round}: the listing never returned"))
                .unwrap();
            assert!(listed.len() <= 40, "round {round}: {listed:?}");
        }
    }
}
