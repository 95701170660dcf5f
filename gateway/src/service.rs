//! The API over NATS request-reply, for clients that speak NATS and not
//! HTTP: every gateway registers the micro service `jetinfer-gateway` with
//! one endpoint per task, `infer.api.<task>` (`nats req infer.api.embed
//! '{"input":"hi"}'`), in the service's queue group, so each request is
//! answered by one gateway, whichever.
//!
//! A request is the JSON body `POST /infer` takes, its `task` implied by
//! the subject (a body may still name it, the same one); it goes through
//! the same validation, limits, routing, cache and queue as `/infer`
//! (`http::infer::serve`), and the reply is the very JSON `/infer` answers
//! with. An error's reply is `/infer`'s error body, with the standard
//! micro-service headers `Nats-Service-Error` (the message) and
//! `Nats-Service-Error-Code` (the HTTP status `/infer` would have sent).
//! Who may call is NATS's to decide (the roles of `shared::identity`); API
//! keys guard HTTP only, and `Idempotency-Key` is an HTTP header: neither
//! applies here.

use crate::http::error::ApiError;
use crate::http::infer::{admit, serve, Served};
use crate::http::{validate, AppState};
use async_nats::service::{Request, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use jetinfer_shared::protocol::Task;
use jetinfer_shared::subjects;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Name every gateway registers under; instances differ by gateway id.
pub const SERVICE_NAME: &str = "jetinfer-gateway";

/// Register the service and answer its requests until `stop` (or the
/// connection closes).
pub async fn run(
    client: async_nats::Client,
    state: Arc<AppState>,
    stop: CancellationToken,
) -> Result<(), async_nats::Error> {
    let service = client
        .service_builder()
        .description("jetinfer gateway: the /infer API over NATS request-reply, infer.api.<task>")
        .metadata(HashMap::from([(
            "gateway_id".to_owned(),
            state.gateway_id.clone(),
        )]))
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await?;
    let mut endpoints = Vec::new();
    for task in Task::ALL {
        let endpoint = service.endpoint(subjects::api_subject(task)).await?;
        endpoints.push(endpoint.map(move |request| (task, request)));
    }
    let mut requests = futures::stream::select_all(endpoints);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            next = requests.next() => {
                let Some((task, request)) = next else { break };
                tokio::spawn(answer(client.clone(), state.clone(), task, request));
            }
        }
    }
    service.stop().await?;
    Ok(())
}

/// Answer one request of `task`'s endpoint.
async fn answer(client: async_nats::Client, state: Arc<AppState>, task: Task, request: Request) {
    let started = Instant::now();
    let parsed = with_task(&request.message.payload, task, state.limits.max_body_bytes)
        .and_then(|body| validate::parse(&body, &state.limits))
        .inspect_err(|e| state.report.rejected(e));
    let result = match parsed {
        Ok(parsed) => match Box::pin(admit(&state, parsed)).await {
            Ok(accepted) => Box::pin(serve(&state, accepted, None, started)).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let result = result.and_then(|Served { result, .. }| result);
    let Some(reply) = request.message.reply.clone() else {
        return; // a publish, not a request: nobody to answer
    };
    let sent = match result {
        Ok(done) => match serde_json::to_vec(&done) {
            Ok(body) => request
                .respond(Ok(body.into()))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        Err(error) => {
            let (status, body) = error.body();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Service-Error", body.message.as_str());
            headers.insert("Nats-Service-Error-Code", status.as_str());
            let body = serde_json::to_vec(&body).unwrap_or_default();
            client
                .publish_with_headers(reply, headers, body.into())
                .await
                .map_err(|e| e.to_string())
        }
    };
    if let Err(e) = sent {
        tracing::debug!(task = %task, error = %e, "NATS API reply lost");
    }
}

/// The body as `/infer` takes it: `task` added from the subject when the
/// body names none. A body that is not a JSON object is passed on as it is,
/// for validation to refuse it as `/infer` does.
fn with_task(payload: &Bytes, task: Task, max_bytes: usize) -> Result<Bytes, ApiError> {
    if payload.len() > max_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "the request is larger than {max_bytes} bytes (MAX_BODY_BYTES)"
        )));
    }
    let Ok(mut body) =
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(payload)
    else {
        return Ok(payload.clone());
    };
    match body.get("task") {
        None => {
            body.insert("task".into(), task.as_str().into());
        }
        Some(named) if named == task.as_str() => {}
        Some(named) => {
            return Err(ApiError::InvalidInput(format!(
                "this is {}, the endpoint of task `{task}`; the body names task {named}: \
                 send it to {} or leave `task` out",
                subjects::api_subject(task),
                named
                    .as_str()
                    .and_then(|n| n.parse::<Task>().ok())
                    .map_or_else(|| "its task's endpoint".to_owned(), subjects::api_subject),
            )))
        }
    }
    serde_json::to_vec(&body)
        .map(Into::into)
        .map_err(|e| ApiError::InvalidJson(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> Bytes {
        Bytes::copy_from_slice(json.as_bytes())
    }

    #[test]
    fn the_subject_names_the_task() {
        let added = with_task(&body(r#"{"input":"hi"}"#), Task::Embed, 100).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&added).unwrap();
        assert_eq!(value["task"], "embed");
        assert_eq!(value["input"], "hi");
        assert!(with_task(&body(r#"{"task":"embed","input":"x"}"#), Task::Embed, 100).is_ok());
        let other = with_task(&body(r#"{"task":"echo","input":"x"}"#), Task::Embed, 100);
        let message = other.unwrap_err().to_string();
        assert!(message.contains("infer.api.echo"), "{message}");
    }

    #[test]
    fn what_is_not_an_object_is_left_for_validation() {
        for raw in ["[1]", "not json", "\"s\""] {
            assert_eq!(with_task(&body(raw), Task::Echo, 100).unwrap(), body(raw));
        }
        assert!(matches!(
            with_task(&body(&"x".repeat(101)), Task::Echo, 100),
            Err(ApiError::PayloadTooLarge(_))
        ));
    }
}
