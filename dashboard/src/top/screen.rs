//! The live screen of `jetinfer-top` (ratatui on crossterm): a header, then
//! one of three views — overview (totals, sparklines of throughput and p95,
//! workers, queue per consumer), events, recent requests — redrawn every
//! `TOP_REFRESH_MS` from the same snapshot the dashboard page renders.

use super::rows::{self, Table};
use crate::state::Snapshot;
use crate::watch::Watch;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Sparkline};
use ratatui::Frame;
use std::time::Duration;

/// What the screen shows below its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Overview,
    Events,
    Requests,
}

/// Drive the terminal until the user quits; the terminal is restored
/// whatever happens.
pub fn run(watch: &Watch, refresh: Duration) -> std::io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let mut view = View::Overview;
    let result = loop {
        let snapshot = watch.snapshot();
        if let Err(e) = terminal.draw(|frame| draw(frame, &snapshot, view)) {
            break Err(e);
        }
        match next_key(refresh) {
            Ok(Some(Key::Quit)) => break Ok(()),
            Ok(Some(Key::Show(v))) => view = v,
            Ok(None) => {}
            Err(e) => break Err(e),
        }
    };
    ratatui::restore();
    result
}

/// What a key asks for.
enum Key {
    Quit,
    Show(View),
}

/// The next meaningful key within `wait`, if any.
fn next_key(wait: Duration) -> std::io::Result<Option<Key>> {
    if !event::poll(wait)? {
        return Ok(None);
    }
    let Event::Key(key) = event::read()? else {
        return Ok(None);
    };
    if key.kind != KeyEventKind::Press {
        return Ok(None);
    }
    Ok(match key.code {
        KeyCode::Char('q') | KeyCode::Esc => Some(Key::Quit),
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Some(Key::Quit),
        KeyCode::Char('1') => Some(Key::Show(View::Overview)),
        KeyCode::Char('2') => Some(Key::Show(View::Events)),
        KeyCode::Char('3') => Some(Key::Show(View::Requests)),
        _ => None,
    })
}

fn draw(frame: &mut Frame, s: &Snapshot, view: View) {
    let [header, body] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(frame.area());
    let connected = s.nats == "connected";
    let tabs = [
        (View::Overview, "1 overview"),
        (View::Events, "2 events"),
        (View::Requests, "3 requests"),
    ]
    .map(|(v, name)| {
        if v == view {
            format!("[{name}]")
        } else {
            format!(" {name} ")
        }
    })
    .join(" ");
    let title = format!(
        "jetinfer top  NATS {}  {} UTC   {tabs}   q quit",
        s.nats,
        rows::clock(s.now_ms)
    );
    let style = match connected {
        true => Style::default().add_modifier(Modifier::BOLD),
        false => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
    };
    frame.render_widget(Paragraph::new(Line::styled(title, style)), header);
    match view {
        View::Overview => overview(frame, s, body),
        View::Events => frame.render_widget(table(&rows::events(s), "events (newest first)"), body),
        View::Requests => frame.render_widget(
            table(&rows::requests(s), "recent requests (newest first)"),
            body,
        ),
    }
}

fn overview(frame: &mut Frame, s: &Snapshot, area: Rect) {
    let workers = rows::workers(s);
    let queue = rows::queue(s);
    let [totals, sparks, workers_area, queue_area] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(5),
        Constraint::Length(workers.rows.len() as u16 + 3),
        Constraint::Min(3),
    ])
    .areas(area);
    let line: Vec<String> = (rows::totals(s).into_iter())
        .map(|(name, value)| format!("{name} {value}"))
        .collect();
    frame.render_widget(
        Paragraph::new(line.join("   ")).block(Block::bordered().title("totals")),
        totals,
    );
    let [throughput, latency] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(sparks);
    let completed: Vec<u64> = s.series.iter().map(|p| p.completed as u64).collect();
    let p95: Vec<u64> = (s.series.iter())
        .map(|p| p.p95.unwrap_or(0.0) as u64)
        .collect();
    frame.render_widget(
        spark(&completed, "answered/s, 5 min", throughput),
        throughput,
    );
    frame.render_widget(spark(&p95, "p95 ms, 5 min", latency), latency);
    frame.render_widget(table(&workers, "workers"), workers_area);
    frame.render_widget(table(&queue, "queue per consumer"), queue_area);
}

/// The newest points that fit `area`, as a sparkline titled `title`.
fn spark<'a>(points: &[u64], title: &'a str, area: Rect) -> Sparkline<'a> {
    let fit = area.width.saturating_sub(2) as usize;
    let newest = points[points.len().saturating_sub(fit)..].to_vec();
    Sparkline::default()
        .block(Block::bordered().title(title))
        .data(newest)
}

fn table<'a>(t: &'a Table, title: &'a str) -> ratatui::widgets::Table<'a> {
    let widths = t
        .widths(usize::MAX)
        .into_iter()
        .map(|w| Constraint::Length(w as u16));
    let rows = t.rows.iter().map(|r| {
        let dead = t.header.get(1) == Some(&"STATE") && r[1] == "dead";
        let row = Row::new(r.iter().map(String::as_str));
        match dead {
            true => row.style(Style::default().fg(Color::Red)),
            false => row,
        }
    });
    ratatui::widgets::Table::new(rows, widths)
        .header(Row::new(t.header.clone()).style(Style::default().add_modifier(Modifier::BOLD)))
        .column_spacing(2)
        .block(Block::bordered().title(title))
}
