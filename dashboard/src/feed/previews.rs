//! Input previews of pending requests, read off the task subjects: only with
//! `DASHBOARD_SHOW_INPUTS=true`, for development, since every task message
//! carries the full text of its requests.
//!
//! Our `nats.conf` does not let the dashboard's role subscribe to
//! `infer.task.>`, so the subscription is refused unless an operator grants
//! it. Refused, the feed logs one warning, marks the snapshot
//! [`Inputs::Refused`] and stops; the rest of the dashboard works as with
//! previews off.
//!
//! It has a connection of its own, for two reasons: a refused subscription
//! is reported only to the connection's event callback, and this one is
//! ours; and task messages are the biggest on any subject (whole batches), so
//! a backlog here cannot get the main feed's connection dropped as a slow
//! consumer.

use super::{subscribe, with, Shared};
use crate::state::Inputs;
use async_nats::{Client, Event, ServerError};
use futures::StreamExt;
use jetinfer_shared::config::{ConnectError, NatsArgs};
use jetinfer_shared::protocol::{self, TaskBatch};
use jetinfer_shared::subjects;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Start reading previews; marks the state [`Inputs::Shown`] at once, and
/// [`Inputs::Refused`] if NATS says no. Ends when `stop` fires.
pub fn spawn(nats: NatsArgs, stack: Shared, stop: CancellationToken) {
    with(&stack, |s| s.inputs(Inputs::Shown));
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = previews(nats, stack) => {}
        }
    });
}

/// Task batches → pending requests, until the subscription is refused.
async fn previews(nats: NatsArgs, stack: Shared) {
    let refused = Arc::new(Notify::new());
    let client = match connect(&nats, refused.clone()).await {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "no NATS connection for input previews; showing none");
            with(&stack, |s| s.inputs(Inputs::Refused));
            return;
        }
    };
    let mut tasks = subscribe(&client, subjects::TASK_SUBJECTS).await;
    loop {
        tokio::select! {
            () = refused.notified() => {
                tracing::warn!(
                    subject = subjects::TASK_SUBJECTS,
                    "DASHBOARD_SHOW_INPUTS is on but NATS refused the dashboard's subscription to \
                     the task subjects: its role lacks `infer.task.>` in nats.conf. Showing no \
                     input previews"
                );
                with(&stack, |s| s.inputs(Inputs::Refused));
                return;
            }
            msg = tasks.next() => {
                let Some(msg) = msg else { return };
                if let Ok(batch) = protocol::decode::<TaskBatch>(&msg.payload) {
                    with(&stack, |s| s.batch_queued(&batch));
                }
            }
        }
    }
}

/// Whether a server error is the refusal of our task subscription.
fn is_refusal(error: &ServerError) -> bool {
    let ServerError::Other(text) = error else {
        return false;
    };
    let text = text.to_lowercase();
    text.contains("permissions violation")
        && text.contains("subscription")
        && text.contains(subjects::TASK_SUBJECTS)
}

/// The previews connection: the same server, login and reconnect policy as
/// [`NatsArgs::connect`], with a callback that tells a refusal apart.
async fn connect(nats: &NatsArgs, refused: Arc<Notify>) -> Result<Client, ConnectError> {
    let options = nats
        .options()?
        .name("dashboard-previews")
        .event_callback(move |event| {
            let refused = refused.clone();
            async move {
                match event {
                    Event::ServerError(e) if is_refusal(&e) => refused.notify_one(),
                    Event::ServerError(e) => tracing::error!(error = %e, "NATS refused"),
                    other => tracing::debug!(event = %other, "NATS previews connection event"),
                }
            }
        });
    nats.connect_with(options).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_task_subscriptions_refusal_counts() {
        let refusal =
            ServerError::Other("Permissions Violation for Subscription to \"infer.task.>\"".into());
        assert!(is_refusal(&refusal));
        let other = ServerError::Other(
            "Permissions Violation for Subscription to \"infer.result.>\"".into(),
        );
        assert!(!is_refusal(&other));
        assert!(!is_refusal(&ServerError::AuthorizationViolation));
    }
}
