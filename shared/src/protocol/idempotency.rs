//! Safe retries: what the `INFER_IDEMPOTENCY` bucket holds for a request sent
//! with an `Idempotency-Key`, and the tag its task item carries to the worker.
//!
//! The gateway claims a key with a [`Pending`](KeyState::Pending) entry before
//! it queues the request; the worker that computes it stores the answer
//! ([`KeyState::Done`]) before it publishes the result, so the answer outlives
//! the gateway that took the request, and any gateway can serve a retry. The
//! entry travels as MessagePack ([`super::encode`]) like every hot-path message.

use super::batch::ItemOutcome;
use super::model::ModelName;
use super::task::{Priority, TaskInput};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Carried by a task item sent with an `Idempotency-Key`: where the worker
/// stores the answer, and what the stored entry must say about the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyTag {
    /// The bucket key ([`kv_key`]).
    pub key: String,
    /// [`body_hash`] of the request, stored with the answer so a retry with
    /// another body is told apart.
    pub body_hash: String,
    /// Unix ms the gateway accepted the request: a worker's stored answer
    /// reports its latency from here, as the gateway would have.
    pub accepted_ms: u64,
}

/// One key's entry in the bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyEntry {
    /// [`body_hash`] of the request that claimed the key.
    pub body_hash: String,
    /// The request that runs (or ran) under this key.
    pub request_id: Uuid,
    /// Computing, or answered.
    pub state: KeyState,
}

/// Where the request under a key stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// A gateway took the request and no answer is stored yet.
    Pending {
        /// The gateway that claimed the key (for logs and operators).
        gateway_id: String,
        /// Unix ms of the claim.
        since_ms: u64,
        /// Stream sequence of its batch in `INFER_TASKS`, once JetStream
        /// stored it; `None` while it waits in the gateway's batcher.
        published: Option<u64>,
    },
    /// The answer every retry gets.
    Done(StoredAnswer),
}

/// A final answer, as the gateway turns it into an HTTP response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoredAnswer {
    /// A worker computed it: an output or a per-request error.
    Computed {
        /// Worker that computed it.
        worker_id: String,
        /// Model that computed it.
        model: String,
        /// Delivery count of its batch (1 = first try).
        attempt: u64,
        /// Output or error.
        outcome: ItemOutcome,
        /// From acceptance to answer, as the client was (or would have been) told.
        latency_ms: f64,
    },
    /// JetStream gave up on its batch after `attempts` deliveries (MaxDeliver).
    Exhausted {
        /// Deliveries made.
        attempts: u64,
    },
}

/// The bucket key of `idempotency_key` sent by `tenant` (the caller's API
/// key identity, `""` when anonymous): 64 hex characters of SHA-256, so two
/// tenants never share a key, and any header value (dots, `*`, `>`) becomes
/// a valid single-token KV key.
pub fn kv_key(tenant: &str, idempotency_key: &str) -> String {
    hex(Sha256::new()
        .chain_update(tenant.as_bytes())
        .chain_update(b"\n")
        .chain_update(idempotency_key.as_bytes())
        .finalize()
        .as_slice())
}

/// What makes two requests "the same" for a key: SHA-256 of the validated
/// input (task, texts, labels, defaults filled in), the priority and the
/// model the request named (none named: whichever model `MODEL_ROUTES`
/// picks, so a retry replays the first answer whichever it picks), as
/// MessagePack. JSON spelling (field order, whitespace, escapes, an explicit
/// default) does not change it.
pub fn body_hash(input: &TaskInput, priority: Priority, model: Option<&ModelName>) -> String {
    // Encoding our own enums and strings cannot fail; were it to, every such
    // request would share one hash and still be told apart by its key.
    let canonical = match model {
        None => super::encode(&(input, priority)),
        Some(model) => super::encode(&(input, priority, model)),
    }
    .unwrap_or_default();
    hex(Sha256::digest(&canonical).as_slice())
}

/// What makes two requests share an answer in the gateway's cache: SHA-256
/// of the model and the validated input (defaults filled in) as
/// MessagePack. Priority is not part of it: the answer is the same.
pub fn answer_key(model: &ModelName, input: &TaskInput) -> [u8; 32] {
    let canonical = super::encode(&(model, input)).unwrap_or_default();
    Sha256::digest(&canonical).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode, encode, BatchItem, TaskOutput};

    #[test]
    fn keys_are_one_hex_token_per_tenant_and_key() {
        let k = kv_key("", "order-1");
        assert_eq!(k.len(), 64);
        assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(k, kv_key("", "order-1"), "stable");
        assert_ne!(k, kv_key("tenant-a", "order-1"), "tenants never collide");
        // Neither a header value nor a key holds a newline: the separator
        // keeps a tenant's end apart from a key's start.
        assert_ne!(kv_key("ab", "c"), kv_key("a", "bc"));
        assert_ne!(k, kv_key("", "order-2"));
        assert!(!kv_key("", "a.b.*.>").contains(['.', '*', '>']));
    }

    #[test]
    fn the_body_hash_tells_inputs_and_priorities_apart() {
        let embed = |text: &str| TaskInput::Embed { text: text.into() };
        let h = body_hash(&embed("a"), Priority::Normal, None);
        assert_eq!(h, body_hash(&embed("a"), Priority::Normal, None));
        assert_ne!(h, body_hash(&embed("b"), Priority::Normal, None));
        assert_ne!(h, body_hash(&embed("a"), Priority::High, None));
        assert_ne!(
            h,
            body_hash(
                &TaskInput::Echo { text: "a".into() },
                Priority::Normal,
                None
            )
        );
        let classify = |labels: &[&str]| TaskInput::Classify {
            text: "t".into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
        };
        assert_ne!(
            body_hash(&classify(&["x", "y"]), Priority::Normal, None),
            body_hash(&classify(&["y", "x"]), Priority::Normal, None),
            "label order is part of the answer"
        );
        let named = "all-minilm-l6-v2".parse().unwrap();
        assert_ne!(
            h,
            body_hash(&embed("a"), Priority::Normal, Some(&named)),
            "naming a model is asking for something else"
        );
    }

    #[test]
    fn entries_survive_msgpack() {
        for state in [
            KeyState::Pending {
                gateway_id: "gw".into(),
                since_ms: 5,
                published: Some(7),
            },
            KeyState::Done(StoredAnswer::Computed {
                worker_id: "w".into(),
                model: "m".into(),
                attempt: 2,
                outcome: ItemOutcome::Ok(TaskOutput::Echo { echo: "e".into() }),
                latency_ms: 1.5,
            }),
            KeyState::Done(StoredAnswer::Exhausted { attempts: 4 }),
        ] {
            let entry = IdempotencyEntry {
                body_hash: "h".into(),
                request_id: Uuid::new_v4(),
                state,
            };
            let bytes = encode(&entry).unwrap();
            assert_eq!(decode::<IdempotencyEntry>(&bytes).unwrap(), entry);
        }
        assert!(decode::<IdempotencyEntry>(b"\x93garbage").is_err());
    }

    #[test]
    fn items_without_a_tag_decode_as_before() {
        #[derive(Serialize)]
        struct OldItem {
            request_id: Uuid,
            input: TaskInput,
        }
        let old = encode(&OldItem {
            request_id: Uuid::nil(),
            input: TaskInput::Echo { text: "a".into() },
        })
        .unwrap();
        let item: BatchItem = decode(&old).unwrap();
        assert_eq!(item.idempotency, None);
        let untagged = BatchItem {
            idempotency: None,
            ..item
        };
        assert_eq!(
            encode(&untagged).unwrap(),
            old,
            "no tag, no field on the wire"
        );
    }
}
