//! Reporting: the table, CSV, a summary of ratios, and an SVG plot of latency against size.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::Row;

pub(crate) fn human_size(bytes: u64) -> String {
    human(bytes)
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// Prints the rows as a table on standard error.
pub fn print(rows: &[Row]) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "\n{:<32} {:>8} {:>14} {:>10} {:>10} {:>10} {:>14} {:>8}",
        "case", "size", "delivered us", "p10", "p90", "p99", "readable us", "samples"
    );
    for r in rows {
        let _ = writeln!(
            err,
            "{:<32} {:>8} {:>14} {:>10} {:>10} {:>10} {:>14} {:>8}",
            r.case,
            human(r.size),
            us(r.delivered),
            us(r.p10),
            us(r.p90),
            us(r.p99),
            us(r.readable),
            r.samples
        );
    }
}

/// The median of `case` at `size`, if measured.
fn median(rows: &[Row], case: &str, size: u64) -> Option<f64> {
    rows.iter()
        .find(|r| r.case == case && r.size == size)
        .map(|r| r.delivered.as_secs_f64())
}

/// `a / b` as a ratio, or `-` when either is missing.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

/// Prints, for each size, the ratios the paper's Figure 2a is about.
pub fn print_ratios(rows: &[Row]) {
    let mut sizes: Vec<u64> = rows
        .iter()
        .filter(|r| r.case != "ring spin" && r.case != "ring futex" && r.case != "futex")
        .map(|r| r.size)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "\nratios of medians (higher is better for Cosh):\n{:>8} {:>16} {:>16} {:>16} {:>16} {:>16}",
        "size", "socket/weak mv", "pipe/weak share", "memcpy/strong mv", "memcpy/copy", "pipe/copy"
    );
    for size in sizes {
        let _ = writeln!(
            err,
            "{:>8} {:>16} {:>16} {:>16} {:>16} {:>16}",
            human(size),
            ratio(
                median(rows, "unix socket", size),
                median(rows, "move weak", size)
            ),
            ratio(median(rows, "pipe", size), median(rows, "share weak", size)),
            ratio(
                median(rows, "memcpy", size),
                median(rows, "move strong", size)
            ),
            ratio(median(rows, "memcpy", size), median(rows, "copy", size)),
            ratio(median(rows, "pipe", size), median(rows, "copy", size)),
        );
    }
}

/// Prints the fast path's ratios: against iceoryx2 and the raw futex ping-pong, flatness
/// with size, and streamed bandwidth against memcpy and a pipe.
pub fn print_fast_ratios(rows: &[Row]) {
    let mut sizes: Vec<u64> = rows
        .iter()
        .filter(|r| r.case == "weak bounce, polls")
        .map(|r| r.size)
        .collect();
    sizes.sort_unstable();
    let Some(&smallest) = sizes.first() else {
        return;
    };
    // Flatness is measured from 4 KiB (one page, the smallest buffer of its own: smaller
    // allocations share slab buffers and are copied).
    let base = sizes
        .iter()
        .copied()
        .find(|s| *s >= 4 << 10)
        .unwrap_or(smallest);
    let futex = median(rows, "futex", 64);
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "\nfast path (weak: a buffer bounced on direct rings, one way; streams: time per transfer):\n\
         {:>8} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14}",
        "size",
        "ice rtt/weak",
        "weak blk/futex",
        "weak/weak@base",
        "memcpy/strm cp",
        "memcpy/strm mv",
        "pipe/strm cp",
        "pipe/strm mv"
    );
    for size in sizes {
        let at = |case: &str| median(rows, case, size);
        let polls = at("weak bounce, polls");
        let (memcpy, pipe) = (at("memcpy"), at("stream pipe"));
        let (copy, moved) = (at("stream copy"), at("stream move strong"));
        let _ = writeln!(
            err,
            "{:>8} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14}",
            human(size),
            ratio(at("iceoryx2 round trip"), polls),
            ratio(at("weak bounce, blocks"), futex),
            ratio(polls, median(rows, "weak bounce, polls", base)),
            ratio(memcpy, copy),
            ratio(memcpy, moved),
            ratio(pipe, copy),
            ratio(pipe, moved),
        );
    }
}

/// A CSV field: quoted (quotes doubled) when it holds a comma, a quote or a line break.
pub(crate) fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Writes the rows as CSV.
pub fn write_csv(path: &Path, rows: &[Row]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::File::create(path)?;
    writeln!(
        f,
        "case,size,delivered_ns,p10_ns,p90_ns,p99_ns,readable_ns,samples,readable_lo_ns,readable_hi_ns"
    )?;
    for r in rows {
        writeln!(
            f,
            "{},{},{},{},{},{},{},{},{},{}",
            csv_field(&r.case),
            r.size,
            r.delivered.as_nanos(),
            r.p10.as_nanos(),
            r.p90.as_nanos(),
            r.p99.as_nanos(),
            r.readable.as_nanos(),
            r.samples,
            r.readable_ci
                .map(|(lo, _)| lo.as_nanos().to_string())
                .unwrap_or_default(),
            r.readable_ci
                .map(|(_, hi)| hi.as_nanos().to_string())
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

/// Draws median one-way latency against size, log-log, one line per case.
pub fn write_svg(path: &Path, rows: &[Row]) -> Result<(), String> {
    write_svg_titled(
        path,
        rows,
        "One-way transfer latency (median), Cosh and baselines",
    )
}

/// [`write_svg`] with a title of its own.
pub(crate) fn write_svg_titled(path: &Path, rows: &[Row], title: &str) -> Result<(), String> {
    use plotters::prelude::*;
    let e = |x: &dyn std::fmt::Display| x.to_string();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|x| e(&x))?;
    }
    let plotted: Vec<&Row> = rows.iter().filter(|r| r.size >= 1024).collect();
    let (Some(min_size), Some(max_size)) = (
        plotted.iter().map(|r| r.size).min(),
        plotted.iter().map(|r| r.size).max(),
    ) else {
        return Err("nothing to plot".into());
    };
    let min_us = plotted
        .iter()
        .map(|r| r.delivered.as_secs_f64() * 1e6)
        .fold(f64::INFINITY, f64::min)
        .max(0.05);
    let max_us = plotted
        .iter()
        .map(|r| r.delivered.as_secs_f64() * 1e6)
        .fold(0.0, f64::max)
        .max(min_us * 10.0);
    let mut cases: Vec<&str> = Vec::new();
    for r in &plotted {
        if !cases.contains(&r.case.as_str()) {
            cases.push(&r.case);
        }
    }
    let root = SVGBackend::new(path, (1100, 750)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (min_size as f64..max_size as f64 * 1.2).log_scale(),
            (min_us / 1.5..max_us * 1.5).log_scale(),
        )
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("aggregate size (bytes)")
        .y_desc("microseconds")
        .draw()
        .map_err(|x| e(&x))?;
    for (i, case) in cases.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = plotted
            .iter()
            .filter(|r| r.case == *case)
            .map(|r| (r.size as f64, r.delivered.as_secs_f64() * 1e6))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(*case)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
