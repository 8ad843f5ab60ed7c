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

/// Figure 2a's title.
pub(crate) const FIG2A_TITLE: &str = "One-way transfer latency (median), Cosh and baselines";
/// Figure 2b's title.
pub(crate) const FIG2B_TITLE: &str =
    "Transfers across pools: one-way latency and pipelined inter-arrival (median)";
/// Figure 2c's title.
pub(crate) const FIG2C_TITLE: &str =
    "Repeated reads of one file: CoshFS and tmpfs pread (median per read)";

/// Draws median one-way latency against size, log-log, one line per case.
pub fn write_svg(path: &Path, rows: &[Row]) -> Result<(), String> {
    write_svg_titled(path, rows, FIG2A_TITLE)
}

/// Reads rows back from a CSV that [`write_csv`] wrote.
pub(crate) fn read_csv(path: &Path) -> Result<Vec<Row>, String> {
    let bad = |why: String| format!("{}: {why}", path.display());
    let mut reader = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
    let mut rows = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| bad(e.to_string()))?;
        let at = |i: usize| record.get(i).unwrap_or("");
        let number = |i: usize| -> Result<u64, String> {
            at(i)
                .parse()
                .map_err(|_| bad(format!("row {}: column {} is {:?}", line + 2, i + 1, at(i))))
        };
        let ns = |i: usize| number(i).map(Duration::from_nanos);
        let bound = |i: usize| at(i).parse().ok().map(Duration::from_nanos);
        rows.push(Row {
            case: at(0).to_string(),
            size: number(1)?,
            delivered: ns(2)?,
            p10: ns(3)?,
            p90: ns(4)?,
            p99: ns(5)?,
            readable: ns(6)?,
            samples: usize::try_from(number(7)?).unwrap_or(usize::MAX),
            readable_ci: bound(8).zip(bound(9)),
        });
    }
    Ok(rows)
}

/// Line colours, strong enough to tell apart on white; cycled past the last.
const COLOURS: [(u8, u8, u8); 20] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (0, 0, 128),
    (128, 0, 0),
    (0, 100, 0),
    (255, 0, 255),
    (0, 128, 128),
    (128, 128, 0),
    (75, 0, 130),
    (210, 105, 30),
    (0, 0, 0),
    (70, 130, 180),
];

/// [`write_svg`] with a title of its own: the median time until the receiver can read the
/// bytes (as in the tables) against size, log-log, one line per case that has more than one
/// size (the floors measured at one size only are in the tables); baselines dashed.
pub(crate) fn write_svg_titled(path: &Path, rows: &[Row], title: &str) -> Result<(), String> {
    use plotters::prelude::*;
    let e = |x: &dyn std::fmt::Display| x.to_string();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|x| e(&x))?;
    }
    let sizes_of = |case: &str| rows.iter().filter(|r| r.case == case).count();
    let mut plotted: Vec<&Row> = rows.iter().filter(|r| sizes_of(&r.case) > 1).collect();
    if plotted.is_empty() {
        // One size measured: points, not lines.
        plotted = rows.iter().collect();
    }
    let us = |r: &Row| r.readable.as_secs_f64() * 1e6;
    let (Some(min_size), Some(max_size)) = (
        plotted.iter().map(|r| r.size).min(),
        plotted.iter().map(|r| r.size).max(),
    ) else {
        return Err("nothing to plot".into());
    };
    let min_us = plotted
        .iter()
        .map(|r| us(r))
        .fold(f64::INFINITY, f64::min)
        .max(0.01);
    let max_us = plotted
        .iter()
        .map(|r| us(r))
        .fold(0.0, f64::max)
        .max(min_us * 10.0);
    let mut cases: Vec<&str> = Vec::new();
    let mut sizes: Vec<f64> = Vec::new();
    for r in &plotted {
        if !cases.contains(&r.case.as_str()) {
            cases.push(&r.case);
        }
        if !sizes.contains(&(r.size as f64)) {
            sizes.push(r.size as f64);
        }
    }
    let (lo, hi) = (min_us / 1.5, max_us * 1.5);
    let decades: Vec<f64> = (-3..=7)
        .map(|k| 10f64.powi(k))
        .filter(|d| (lo..=hi).contains(d))
        .collect();
    let root = SVGBackend::new(path, (1100, 750)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (min_size as f64 / 1.2..max_size as f64 * 1.2)
                .log_scale()
                .with_key_points(sizes),
            (lo..hi).log_scale().with_key_points(decades),
        )
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("size")
        .y_desc("microseconds (median, until the receiver can read the bytes)")
        .x_label_formatter(&|x| human(x.round() as u64))
        .y_label_formatter(&|y| {
            if *y < 1.0 {
                format!("{y}")
            } else {
                format!("{y:.0}")
            }
        })
        .draw()
        .map_err(|x| e(&x))?;
    for (i, case) in cases.iter().enumerate() {
        let (r, g, b) = COLOURS[i % COLOURS.len()];
        let colour = RGBColor(r, g, b);
        let baseline = crate::all::is_baseline(case);
        let points: Vec<(f64, f64)> = plotted
            .iter()
            .filter(|r| r.case == *case)
            .map(|r| (r.size as f64, us(r)))
            .collect();
        let style = colour.stroke_width(2);
        if baseline {
            chart
                .draw_series(DashedLineSeries::new(points.clone(), 8, 5, style))
                .map_err(|x| e(&x))?
                .label(format!("{case} (baseline)"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 8, y)], colour.stroke_width(2))
                });
        } else {
            chart
                .draw_series(LineSeries::new(points.clone(), style))
                .map_err(|x| e(&x))?
                .label(*case)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, colour.filled())),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(case: &str, size: u64, delivered_us: u64, readable_us: u64) -> Row {
        let us = Duration::from_micros;
        Row {
            case: case.to_string(),
            size,
            delivered: us(delivered_us),
            p10: us(delivered_us),
            p90: us(delivered_us),
            p99: us(delivered_us),
            readable: us(readable_us),
            readable_ci: Some((us(readable_us - 1), us(readable_us + 1))),
            samples: 100,
        }
    }

    #[test]
    fn figures_plot_the_time_until_the_bytes_can_be_read_from_the_csv_alone() {
        let dir = std::env::temp_dir().join(format!("cosh-figure-{}", std::process::id()));
        let csv = dir.join("fig.csv");
        // A weak move delivered in 2 µs and readable after 5000 (the receiver's mapping); a
        // floor measured at one size only; a name that needs quoting.
        let rows = vec![
            row("move weak", 4096, 2, 30),
            row("move weak", 16 << 20, 2, 5000),
            row("pipe", 4096, 20, 20),
            row("pipe", 16 << 20, 9000, 9000),
            row("a \"quoted\", case", 4096, 3, 3),
            row("futex", 64, 21, 21),
        ];
        write_csv(&csv, &rows).expect("csv");
        let back = read_csv(&csv).expect("read back");
        assert_eq!(back.len(), rows.len());
        for (a, b) in rows.iter().zip(&back) {
            assert_eq!(
                (
                    &a.case,
                    a.size,
                    a.delivered,
                    a.readable,
                    a.readable_ci,
                    a.samples
                ),
                (
                    &b.case,
                    b.size,
                    b.delivered,
                    b.readable,
                    b.readable_ci,
                    b.samples
                )
            );
        }
        let svg = dir.join("fig.svg");
        write_svg_titled(&svg, &back, "test").expect("svg");
        let text = std::fs::read_to_string(&svg).expect("svg text");
        // The axis reaches the readable 5000 µs (a decade label of 1000), the sizes are
        // named, and the one-size floor is left to the tables.
        let label = |t: &str| format!(">\n{t}\n</text>");
        for needle in ["1000", "4 KiB", "16 MiB", "move weak", "pipe (baseline)"] {
            assert!(text.contains(&label(needle)), "no {needle:?} in the figure");
        }
        assert!(!text.contains(&label("futex")), "a one-size floor drawn");
        assert!(
            !text.contains(&label("64 B")),
            "a one-size floor's size drawn"
        );
        // A bad number is an error naming the row and column.
        std::fs::write(&csv, "case,size,delivered_ns\nx,4096,lots\n").expect("bad csv");
        let err = read_csv(&csv).expect_err("a bad number");
        assert!(err.contains("row 2: column 3 is \"lots\""), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
