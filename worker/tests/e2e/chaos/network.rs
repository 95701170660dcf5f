//! The gateway's own connection to nats-server cut again and again under
//! load: results published during each gap must still reach their clients.

use super::{assert_answered_once, report, LIMIT};
use crate::stack::{Setup, Stack};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Cuts of the gateway's link, this far apart.
const CUTS: usize = 16;
const CUT_EVERY: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_survive_the_gateway_connection_being_cut_under_load() {
    tokio::time::timeout(LIMIT, async {
        let setup = Setup {
            cut_link: true,
            ..Setup::default()
        };
        let stack = Stack::start_with(2, &[], setup).await;
        let link = stack.gateway_link.as_ref().expect("a cuttable link");
        let cutting = AtomicBool::new(true);
        // 32 closed-loop clients, sending until the last cut is behind them.
        let client = |c: usize| {
            let (stack, cutting) = (&stack, &cutting);
            async move {
                let mut answers: Vec<(u16, Value)> = Vec::new();
                let mut i = 0;
                while cutting.load(Ordering::SeqCst) || i < 3 {
                    let text = format!("client {c} request {i}");
                    answers.push(stack.infer(json!({"task": "embed", "input": text})).await);
                    i += 1;
                }
                answers
            }
        };
        let cuts = async {
            let mut closed = 0;
            for _ in 0..CUTS {
                tokio::time::sleep(CUT_EVERY).await;
                closed += link.cut();
            }
            cutting.store(false, Ordering::SeqCst);
            closed
        };
        let (answers, closed) =
            futures::future::join(futures::future::join_all((0..32).map(client)), cuts).await;
        let answers: Vec<(u16, Value)> = answers.into_iter().flatten().collect();
        report("cut gateway link", &answers);
        eprintln!("cut gateway link: {CUTS} cuts closed {closed} connections");
        assert!(
            closed >= CUTS,
            "every cut found the gateway connected: {closed}"
        );
        assert_answered_once(&answers);
        for (status, body) in &answers {
            assert_eq!(*status, 200, "{body}");
        }
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}
