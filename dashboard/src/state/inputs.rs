//! Request content is private: what the dashboard may say about the text of
//! a request. By default nothing but its length and a short hash (both from
//! the gateway's request event); request text only where an operator opted
//! in with `DASHBOARD_SHOW_INPUTS=true`.

use jetinfer_shared::protocol::RequestRecord;
use serde::Serialize;

/// Whether the page shows request text, as the snapshot tells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Inputs {
    /// No text: lengths and hashes only, and the task subjects are not read.
    #[default]
    Hidden,
    /// Previews of pending and finished requests (`DASHBOARD_SHOW_INPUTS`).
    Shown,
    /// Previews were asked for but none come: NATS refused the dashboard's
    /// subscription to the task subjects (its role lacks `infer.task.>`).
    /// Finished requests show what the gateway sent, pending ones no text.
    Refused,
}

impl Inputs {
    /// Whether text that reaches the dashboard may be shown.
    fn shows_text(self) -> bool {
        self != Inputs::Hidden
    }

    /// `record` as the page may see it. Hidden, a record that still carries
    /// its input came from a gateway that shows content, so its output
    /// preview may quote request text too (an echo, a candidate, a label):
    /// both go. A record without input has the gateway's private output
    /// summary, which stays.
    pub(super) fn admit(self, mut record: RequestRecord) -> RequestRecord {
        if !self.shows_text() && !record.input.is_empty() {
            record.input.clear();
            record.output = None;
        }
        record
    }
}
