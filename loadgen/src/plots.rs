//! PNG charts of a run (plotters): latency histogram, latency over time,
//! throughput over time, and requests per worker.

use crate::client::Record;
use crate::report::Summary;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Fonts tried, in order, when `--font` is not given (Debian: fonts-dejavu-core).
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

type PlotResult = Result<(), Box<dyn std::error::Error>>;
/// Draws one chart from the successful records and the summary.
type Draw = fn(&Path, &[&Record], &Summary) -> PlotResult;

/// Register a TrueType font for chart text; plotters draws no text without one.
pub fn load_font(font: Option<&Path>) -> anyhow::Result<()> {
    let candidates: Vec<PathBuf> = match font {
        Some(f) => vec![f.to_path_buf()],
        None => FONTS.iter().map(PathBuf::from).collect(),
    };
    let path = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
        anyhow::anyhow!("no font for the plots: install fonts-dejavu-core or pass --font FILE.ttf")
    })?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a usable TrueType font", path.display()))?;
    Ok(())
}

/// Write the four charts into `dir`; returns their paths.
pub fn write_all(
    dir: &Path,
    records: &[Record],
    summary: &Summary,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let ok: Vec<&Record> = records.iter().filter(|r| r.ok()).collect();
    let charts: [(&str, Draw); 4] = [
        ("latency_histogram.png", histogram),
        ("latency_over_time.png", latency_over_time),
        ("throughput_over_time.png", throughput_over_time),
        ("per_worker.png", per_worker),
    ];
    let mut written = Vec::new();
    for (name, draw) in charts {
        let path = dir.join(name);
        draw(&path, &ok, summary)
            .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn histogram(path: &Path, ok: &[&Record], s: &Summary) -> PlotResult {
    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = s.latency_ms.max.max(1.0);
    let bins = 40u32;
    let width = max / f64::from(bins);
    let mut counts = vec![0u32; bins as usize];
    for r in ok {
        let b = ((r.latency_ms / width) as usize).min(bins as usize - 1);
        counts[b] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "latency histogram (successful requests)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..max, 0u32..top + top / 10 + 1)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms)")
        .y_desc("requests")
        .draw()?;
    chart.draw_series(counts.iter().enumerate().map(|(i, c)| {
        let x0 = i as f64 * width;
        Rectangle::new([(x0, 0), (x0 + width, *c)], BLUE.mix(0.6).filled())
    }))?;
    root.present()?;
    Ok(())
}

fn latency_over_time(path: &Path, ok: &[&Record], s: &Summary) -> PlotResult {
    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let end = ok.iter().map(|r| r.sent_at_ms / 1000.0).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption("latency by send time", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..end * 1.02, 0f64..s.latency_ms.max.max(1.0) * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("sent at (s)")
        .y_desc("latency (ms)")
        .draw()?;
    chart.draw_series(ok.iter().map(|r| {
        Circle::new(
            (r.sent_at_ms / 1000.0, r.latency_ms),
            2,
            BLUE.mix(0.5).filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}

fn throughput_over_time(path: &Path, ok: &[&Record], _: &Summary) -> PlotResult {
    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let seconds = ok
        .iter()
        .map(|r| ((r.sent_at_ms + r.latency_ms) / 1000.0) as usize)
        .max()
        .unwrap_or(0)
        + 1;
    let mut per_second = vec![0u32; seconds];
    for r in ok {
        per_second[((r.sent_at_ms + r.latency_ms) / 1000.0) as usize] += 1;
    }
    let top = per_second.iter().copied().max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption("answers per second", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0usize..seconds, 0u32..top + top / 10 + 1)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("requests/s")
        .draw()?;
    chart.draw_series(LineSeries::new(
        per_second.iter().enumerate().map(|(i, c)| (i, *c)),
        &BLUE,
    ))?;
    root.present()?;
    Ok(())
}

fn per_worker(path: &Path, _: &[&Record], s: &Summary) -> PlotResult {
    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let workers: Vec<(&String, &usize)> = s.per_worker.iter().collect();
    let top = workers.iter().map(|(_, n)| **n).max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption("successful requests per worker", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        // A segmented 0..n-1 has one segment per worker.
        .build_cartesian_2d(
            (0..workers.len().max(1) - 1).into_segmented(),
            0usize..top + top / 10 + 1,
        )?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => workers
                .get(*i)
                .map_or(String::new(), |(w, _)| w.to_string()),
            _ => String::new(),
        })
        .y_desc("requests")
        .draw()?;
    chart.draw_series(workers.iter().enumerate().map(|(i, (_, n))| {
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0),
                (SegmentValue::Exact(i + 1), **n),
            ],
            BLUE.mix(0.6).filled(),
        );
        bar.set_margin(0, 0, 20, 20);
        bar
    }))?;
    root.present()?;
    Ok(())
}
