//! `cosh demo`: a producer process and two consumer processes pass aggregates in every mode and
//! strength through the block manager; the consumers verify every byte; the same data then
//! goes through a Unix socket and a pipe for comparison.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use cosh::{Domain, Mode, TransferFlags, TransferReport};

use crate::{Outcome, connect, human, print_status, start_detached};

/// Options of `cosh demo`.
#[derive(clap::Args, Debug)]
pub(crate) struct DemoArgs {
    /// Transfers per mode, strength and size.
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Aggregate sizes, comma separated, with K or M suffixes.
    #[arg(long, value_delimiter = ',', default_value = "4K,1M,16M", value_parser = parse_size)]
    sizes: Vec<u64>,
    /// Leave running a block manager that the demo started.
    #[arg(long)]
    keep: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 4K, 1M or 4096)"))?;
    let scale = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1024,
        "M" | "MB" | "MIB" => 1024 * 1024,
        _ => return Err(format!("unknown unit in {s:?} (use K or M)")),
    };
    let size = n
        .checked_mul(scale)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if !(8..=1 << 30).contains(&size) {
        return Err(format!("{s:?}: sizes run from 8 bytes to 1 GiB"));
    }
    Ok(size)
}

const CASES: [(Mode, bool); 5] = [
    (Mode::Move, false),
    (Mode::Move, true),
    (Mode::Share, false),
    (Mode::Share, true),
    (Mode::Copy, false),
];

struct Consumer {
    child: Child,
    out: BufReader<ChildStdout>,
    id: cosh::DomainId,
}

impl Consumer {
    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.out.read_line(&mut line) {
            Ok(0) | Err(_) => Err("a consumer process ended early".into()),
            Ok(_) => Ok(line.trim().to_string()),
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.1} us")
    }
}

/// How a case was carried out, from its reports.
fn how(reports: &[TransferReport]) -> String {
    let referenced: u64 = reports.iter().map(|r| r.referenced_bytes).sum();
    let copied: u64 = reports.iter().map(|r| r.copied_bytes).sum();
    let sealed: u32 = reports.iter().map(|r| r.sealed_buffers).sum();
    let weak = reports.iter().filter(|r| r.weak).count();
    let mut parts = Vec::new();
    if referenced > 0 {
        parts.push(if weak > 0 {
            "descriptor only".to_string()
        } else {
            "by reference".to_string()
        });
    }
    if sealed > 0 {
        parts.push(format!("{sealed} seals"));
    }
    if copied > 0 {
        parts.push(format!("copied {}", human(copied)));
    }
    parts.join(", ")
}

pub(crate) fn run(socket: &Path, args: &DemoArgs) -> Outcome {
    let started = match connect(socket, "cosh-demo") {
        Ok(_) => {
            println!("using the block manager at {}", socket.display());
            None
        }
        Err(_) => {
            let pid = start_detached(socket, crate::Serve::host())?;
            println!(
                "started a block manager (pid {pid}) at {}",
                socket.display()
            );
            Some(pid)
        }
    };
    let result = demo(socket, args);
    if started.is_some() && !args.keep {
        if let Ok(d) = connect(socket, "cosh-demo") {
            let _ = d.shutdown();
        }
        println!("stopped the block manager the demo started (--keep leaves it running)");
    }
    result
}

fn demo(socket: &Path, args: &DemoArgs) -> Outcome {
    let e = |e: cosh::Error| e.to_string();
    let producer_name = format!("demo-producer-{}", std::process::id());
    let mut producer = connect(socket, &producer_name).map_err(e)?;
    producer.register(&producer_name).map_err(e)?;
    let exe = std::env::current_exe().map_err(|x| format!("cannot find myself: {x}"))?;
    let mut consumers = Vec::new();
    for i in 1..=2 {
        let name = format!("demo-consumer-{}-{i}", std::process::id());
        let mut child = Command::new(&exe)
            .arg("--socket")
            .arg(socket)
            .args([
                "__demo-consumer",
                "--name",
                &name,
                "--producer",
                &producer_name,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|x| format!("cannot start a consumer: {x}"))?;
        let out = BufReader::new(child.stdout.take().ok_or("no consumer stdout")?);
        let mut c = Consumer {
            child,
            out,
            id: cosh::DomainId::from_bits(0),
        };
        let ready = c.line()?;
        let bits = ready
            .strip_prefix("ready ")
            .and_then(|b| b.parse().ok())
            .ok_or_else(|| format!("a consumer said {ready:?}"))?;
        c.id = cosh::DomainId::from_bits(bits);
        consumers.push(c);
    }
    println!(
        "producer {} (pid {}) sends to consumers {} (pid {}) and {} (pid {}), {} rounds per case\n",
        producer.id(),
        std::process::id(),
        consumers[0].id,
        consumers[0].child.id(),
        consumers[1].id,
        consumers[1].child.id(),
        args.rounds
    );
    println!(
        "{:<7} {:<7} {:>9} {:>12}   how it was carried out",
        "mode", "", "size", "transfer"
    );
    let mut sent_bytes = 0u64;
    let mut sent = 0u64;
    let mut index = 0u64;
    for &size in &args.sizes {
        for (mode, weak) in CASES {
            let flags = if weak {
                TransferFlags::weak()
            } else {
                TransferFlags::strong()
            };
            let mut times = Vec::new();
            let mut reports = Vec::new();
            for r in 0..args.rounds {
                let which = r as usize % 2;
                let dest = consumers[which].id;
                let agg = producer.alloc(size).map_err(e)?;
                cosh::pattern::stamp(&mut producer, agg, index).map_err(e)?;
                index += 1;
                let start = Instant::now();
                let report = producer.transfer(agg, dest, mode, flags).map_err(e)?;
                times.push(start.elapsed());
                reports.push(report);
                producer.decref(agg).map_err(e)?;
                // Wait until the consumer has checked and dropped it, so that cases do not
                // overlap (and its buffer is recycled for the next round).
                let ack = consumers[which].line()?;
                if ack != "ok" {
                    return Err(format!("consumer {dest}: {ack}"));
                }
                sent += 1;
                sent_bytes += size;
            }
            println!(
                "{:<7} {:<7} {:>9} {:>12}   {}",
                mode.name(),
                if weak { "weak" } else { "strong" },
                human(size),
                micros(median(&mut times)),
                how(&reports)
            );
        }
    }
    // A zero-length move tells each consumer to report and exit.
    let mut received = 0u64;
    let mut received_bytes = 0u64;
    for c in &mut consumers {
        let end = producer.alloc(0).map_err(e)?;
        producer
            .transfer(end, c.id, Mode::Move, TransferFlags::strong())
            .map_err(e)?;
        producer.decref(end).map_err(e)?;
        let report = c.line()?;
        let field = |name: &str| -> u64 {
            report
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        if field("corrupt") > 0 || !report.starts_with("done") {
            return Err(format!("consumer {} found bad data: {report}", c.id));
        }
        received += field("received");
        received_bytes += field("bytes");
    }
    if received != sent || received_bytes != sent_bytes {
        return Err(format!(
            "sent {sent} aggregates ({sent_bytes} bytes) but the consumers verified {received} ({received_bytes} bytes)"
        ));
    }
    println!(
        "\nthe consumers received and verified every byte: {received} aggregates, {}",
        human(received_bytes)
    );
    println!("\nthe same data through a Unix socket and a pipe (writer to reader thread):");
    for &size in &args.sizes {
        let socket_time = baseline_socket(size, args.rounds).map_err(|x| x.to_string())?;
        let pipe_time = baseline_pipe(size, args.rounds).map_err(|x| x.to_string())?;
        println!(
            "{:<15} {:>9} {:>12}\n{:<15} {:>9} {:>12}",
            "unix socket",
            human(size),
            micros(socket_time),
            "pipe",
            human(size),
            micros(pipe_time)
        );
    }
    println!(
        "\n(transfer: the median time of the sender's transfer call, which returns once the \
         receiver can take the aggregate; move and copy copy into the receiver's memory, a strong \
         share seals the sender's buffer, weak transfers pass a descriptor. The consumer checks \
         every aggregate before the next is sent. See `cargo bench -p cosh-bench` for one-way \
         latencies.)\n"
    );
    let s = producer.status().map_err(e)?;
    print_status(socket, &s, producer.pool_kind());
    Ok(())
}

/// Median time to push `size` bytes through a stream to a reader thread that reads them all.
fn through(
    mut writer: impl Write,
    mut reader: impl Read + Send + 'static,
    size: u64,
    rounds: u32,
) -> std::io::Result<Duration> {
    let len = usize::try_from(size).unwrap_or(usize::MAX);
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut buf = vec![0u8; len];
        for _ in 0..rounds {
            if reader.read_exact(&mut buf).is_err() {
                return;
            }
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut times = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        writer.write_all(&data)?;
        rx.recv()
            .map_err(|_| std::io::Error::other("the reader thread stopped"))?;
        times.push(start.elapsed());
    }
    let _ = thread.join();
    Ok(median(&mut times))
}

fn baseline_socket(size: u64, rounds: u32) -> std::io::Result<Duration> {
    let (w, r) = UnixStream::pair()?;
    through(w, r, size, rounds)
}

fn baseline_pipe(size: u64, rounds: u32) -> std::io::Result<Duration> {
    let (r, w) = rustix::pipe::pipe().map_err(std::io::Error::from)?;
    through(std::fs::File::from(w), std::fs::File::from(r), size, rounds)
}

/// A consumer process: registers, trusts the producer, receives until a zero-length
/// aggregate, checking every byte, then reports.
pub(crate) fn consumer(socket: &Path, name: &str, producer: &str) -> Outcome {
    let e = |e: cosh::Error| e.to_string();
    let mut d: Domain = connect(socket, name).map_err(e)?;
    d.register(name).map_err(e)?;
    let source = d.lookup(producer).map_err(e)?;
    d.trust(source).map_err(e)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {}", d.id().to_bits()).map_err(|x| x.to_string())?;
    out.flush().map_err(|x| x.to_string())?;
    let (mut received, mut bytes, mut corrupt) = (0u64, 0u64, 0u64);
    loop {
        let got = d
            .receive(Some(source), Some(Duration::from_secs(120)))
            .map_err(e)?;
        let len = d.len(got.agg).map_err(e)?;
        if len == 0 {
            break;
        }
        let ok = cosh::pattern::verify(&mut d, got.agg).map_err(e)?;
        if !ok {
            corrupt += 1;
        }
        received += 1;
        bytes += len;
        d.decref(got.agg).map_err(e)?;
        let ack = if ok { "ok" } else { "corrupt" };
        writeln!(out, "{ack}").map_err(|x| x.to_string())?;
        out.flush().map_err(|x| x.to_string())?;
    }
    writeln!(
        out,
        "done received={received} bytes={bytes} corrupt={corrupt}"
    )
    .map_err(|x| x.to_string())?;
    out.flush().map_err(|x| x.to_string())
}
