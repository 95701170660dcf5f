//! `jetinfer-top --once`: one snapshot as plain text, tables padded into
//! columns, for scripts, CI logs and a quick look without a terminal UI.

use super::rows::{self, Table};
use crate::state::Snapshot;
use std::fmt::Write;

/// Events printed by `--once`.
const EVENTS: usize = 10;

/// The whole snapshot, ready to print.
pub fn render(s: &Snapshot) -> String {
    let mut out = format!(
        "jetinfer top  NATS {}  {} UTC\n\n",
        s.nats,
        rows::clock(s.now_ms)
    );
    let totals: Vec<String> = (rows::totals(s).into_iter())
        .map(|(name, value)| format!("{name} {value}"))
        .collect();
    out += &totals.join("  ");
    out += "\n\nworkers\n";
    out += &columns(&rows::workers(s), usize::MAX);
    out += "\nqueue\n";
    if let Some(error) = &s.queue.error {
        let _ = writeln!(out, "  cannot read the queue: {error}");
    }
    out += &columns(&rows::queue(s), usize::MAX);
    out += "\nevents (newest first)\n";
    out += &columns(&rows::events(s), EVENTS);
    out
}

/// `table`'s first `limit` rows, each column as wide as its widest cell.
fn columns(table: &Table, limit: usize) -> String {
    let shown = &table.rows[..table.rows.len().min(limit)];
    let widths = table.widths(limit);
    let mut out = String::new();
    let header: Vec<String> = table.header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(shown) {
        let cells: Vec<String> = (row.iter().zip(&widths))
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
    }
    if shown.is_empty() {
        out += "  (none)\n";
    }
    out
}
