//! Pipe throughput across processes: a producer process streams `--total-mib` MiB to a
//! consumer process in pieces of each size, through a Cosh pipe (`cosh-pipe`: aggregates by
//! strong move, and through its `Read`/`Write` adapters) and through a Linux pipe (a FIFO),
//! with a block manager process of its own, in one run. The producer starts the clock, sends
//! everything and stops it when the consumer says it has read the last byte; medians of five
//! passes after a warm-up.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use cosh::{Domain, DomainId, Options};
use cosh_pipe::{PipeReader, PipeWriter, Window};

use crate::{e, parse_size};

/// What `cosh bench pipe` measures.
#[derive(Parser, Debug, Clone)]
#[command(
    about = "Pipe throughput across processes: a Cosh pipe (aggregates, and its Read/Write adapters) against a Linux pipe, in one run."
)]
pub struct Args {
    /// Piece sizes, comma separated, with K or M suffixes.
    #[arg(long, value_delimiter = ',', default_value = "64K,1M,16M", value_parser = parse_size)]
    pub sizes: Vec<u64>,
    /// MiB streamed per pass.
    #[arg(long, default_value_t = 256, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub total_mib: u64,
    /// Also write the medians here as CSV (case, size, bytes_per_second).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Internal: run as the block manager on this socket.
    #[arg(long, hide = true, value_name = "SOCKET")]
    pub serve: Option<PathBuf>,
    /// Internal: run as the consumer on this socket.
    #[arg(long, hide = true, value_name = "SOCKET")]
    pub consumer: Option<PathBuf>,
}

/// Runs `cosh bench pipe` (helpers are this program started with `prefix`).
pub fn main_with(
    prefix: &[&str],
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<(), String> {
    let Some(args) = crate::parse_args::<Args>(args)? else {
        return Ok(());
    };
    if let Some(socket) = &args.serve {
        return crate::serve_block_manager(socket, 0, "host", None);
    }
    if let Some(socket) = &args.consumer {
        return consumer(socket);
    }
    run(&args, prefix)
}

struct Helper {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

impl Helper {
    fn ask(&mut self, line: &str) -> Result<String, String> {
        writeln!(self.to, "{line}")
            .and_then(|()| self.to.flush())
            .map_err(e)?;
        let mut answer = String::new();
        self.from.read_line(&mut answer).map_err(e)?;
        if answer.is_empty() {
            return Err("the consumer exited".into());
        }
        Ok(answer.trim().to_string())
    }
}

fn spawn(prefix: &[&str], flag: &str, socket: &Path) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(e)?;
    Command::new(exe)
        .args(prefix)
        .arg(flag)
        .arg(socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|x| format!("cannot start a helper: {x}"))
}

fn run(args: &Args, prefix: &[&str]) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("cosh-bench-pipe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    cosh_sys::runtime::ensure_runtime_dir(&dir).map_err(e)?;
    let socket = dir.join("host.sock");
    let mut manager = spawn(prefix, "--serve", &socket)?;
    crate::wait_for_socket(&socket, "block manager")?;
    let mut child = spawn(prefix, "--consumer", &socket)?;
    let to = child.stdin.take().ok_or("no stdin")?;
    let from = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut c = Helper { child, to, from };
    let producer = Domain::connect_with(
        &Options::new("bench-pipe-producer")
            .socket(&socket)
            .no_spawn(),
    )
    .map_err(e)?;
    let consumer_id: u64 = c
        .ask(&format!("hello {}", producer.id().to_bits()))?
        .parse()
        .map_err(e)?;
    let consumer_id = DomainId::from_bits(consumer_id);
    let mut producer = Some(producer);
    let total = args.total_mib << 20;
    let fifo = dir.join("fifo");
    let mut rows = Vec::new();
    for &size in &args.sizes {
        let mut times: [Vec<Duration>; 3] = Default::default();
        for pass in 0..6 {
            for (k, what) in ["aggregates", "adapters", "linux"].iter().enumerate() {
                let t = match *what {
                    "linux" => {
                        let _ = std::fs::remove_file(&fifo);
                        crate::make_fifo(&fifo)?;
                        writeln!(c.to, "linux {size} {total} {}", fifo.display()).map_err(e)?;
                        c.to.flush().map_err(e)?;
                        let mut f = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&fifo)
                            .map_err(e)?;
                        let data = vec![7u8; usize::try_from(size).map_err(e)?];
                        let started = Instant::now();
                        let mut left = total;
                        while left > 0 {
                            let n = left.min(size) as usize;
                            f.write_all(&data[..n]).map_err(e)?;
                            left -= n as u64;
                        }
                        drop(f);
                        let mut answer = String::new();
                        c.from.read_line(&mut answer).map_err(e)?;
                        started.elapsed()
                    }
                    kind => {
                        writeln!(c.to, "{kind} {size} {total}").map_err(e)?;
                        c.to.flush().map_err(e)?;
                        let d = producer.take().ok_or("no producer")?;
                        let mut w = PipeWriter::open(d, consumer_id).map_err(e)?;
                        w.set_chunk(size);
                        let data = vec![7u8; usize::try_from(size).map_err(e)?];
                        let started = Instant::now();
                        let mut left = total;
                        while left > 0 {
                            let n = left.min(size);
                            if kind == "adapters" {
                                w.write_all(&data[..n as usize]).map_err(e)?;
                            } else {
                                let d = w.domain();
                                let x = d.alloc_unzeroed(n).map_err(e)?;
                                // A producer makes its data in place: one touch per piece.
                                for p in d.write_pieces(x, 0).map_err(e)? {
                                    d.bytes_mut(&p).map_err(e)?[0] = 7;
                                }
                                w.send(x).map_err(e)?;
                            }
                            left -= n;
                        }
                        producer = Some(w.finish().map_err(e)?);
                        let mut answer = String::new();
                        c.from.read_line(&mut answer).map_err(e)?;
                        started.elapsed()
                    }
                };
                if pass > 0 {
                    times[k].push(t);
                }
            }
        }
        let med = |v: &mut Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let [mut a, mut b, mut l] = times;
        rows.push((size, med(&mut a), med(&mut b), med(&mut l)));
    }
    let _ = c.ask("exit");
    let _ = c.child.wait();
    if let Some(d) = producer {
        let _ = d.shutdown();
    }
    let _ = manager.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let gbps = |d: Duration| total as f64 / d.as_secs_f64() / 1e9;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "\n{} MiB per pass, producer and consumer processes, medians of 5 passes (GB/s; ratio to the Linux pipe):",
        args.total_mib
    );
    let _ = writeln!(
        err,
        "  {:>8}  {:>12}  {:>22}  {:>22}",
        "piece", "linux pipe", "cosh pipe, aggregates", "cosh pipe, read/write"
    );
    if let Some(path) = &args.csv {
        let mut text = String::from("case,size,bytes_per_second\n");
        for (size, a, b, l) in &rows {
            for (name, d) in [
                ("linux pipe", l),
                ("cosh pipe, aggregates", a),
                ("cosh pipe, read/write", b),
            ] {
                text.push_str(&format!(
                    "{},{size},{:.0}\n",
                    crate::report::csv_field(name),
                    gbps(*d) * 1e9
                ));
            }
        }
        std::fs::write(path, text).map_err(|x| format!("cannot write {}: {x}", path.display()))?;
    }
    for (size, a, b, l) in rows {
        let _ = writeln!(
            err,
            "  {:>8}  {:>12.2}  {:>14.2} ({:>4.1}x)  {:>14.2} ({:>4.1}x)",
            crate::report::human_size(size),
            gbps(l),
            gbps(a),
            l.as_secs_f64() / a.as_secs_f64(),
            gbps(b),
            l.as_secs_f64() / b.as_secs_f64()
        );
    }
    Ok(())
}

/// The consumer process: obeys one-line commands, says `done` after each stream.
fn consumer(socket: &Path) -> Result<(), String> {
    let mut d = Some(
        Domain::connect_with(
            &Options::new("bench-pipe-consumer")
                .socket(socket)
                .no_spawn(),
        )
        .map_err(e)?,
    );
    let mut out = std::io::stdout().lock();
    let mut producer = DomainId::from_bits(0);
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(e)?;
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["hello", p] => {
                producer = DomainId::from_bits(p.parse().map_err(e)?);
                let id = d.as_ref().ok_or("no domain")?.id().to_bits();
                writeln!(out, "{id}").map_err(e)?;
            }
            ["linux", size, total, path] => {
                let size: usize = size.parse().map_err(e)?;
                let total: u64 = total.parse().map_err(e)?;
                let mut f = std::fs::File::open(path).map_err(e)?;
                let mut buf = vec![0u8; size];
                let mut got = 0u64;
                loop {
                    let n = f.read(&mut buf).map_err(e)?;
                    if n == 0 {
                        break;
                    }
                    got += n as u64;
                }
                if got != total {
                    return Err(format!("read {got} of {total} bytes from the FIFO"));
                }
                writeln!(out, "done").map_err(e)?;
            }
            [kind @ ("aggregates" | "adapters"), size, total] => {
                let size: usize = size.parse().map_err(e)?;
                let total: u64 = total.parse().map_err(e)?;
                let domain = d.take().ok_or("no domain")?;
                let mut r = PipeReader::open(domain, producer, Window::default()).map_err(e)?;
                let mut got = 0u64;
                if *kind == "adapters" {
                    let mut buf = vec![0u8; size];
                    loop {
                        let n = r.read(&mut buf).map_err(e)?;
                        if n == 0 {
                            break;
                        }
                        got += n as u64;
                    }
                } else {
                    while let Some(x) = r.recv(None).map_err(e)? {
                        let dm = r.domain();
                        // A consumer reads its data in place: the first and last byte.
                        for p in dm.read_pieces(x, 0).map_err(e)? {
                            let b = dm.bytes(&p).map_err(e)?;
                            std::hint::black_box((b.first(), b.last()));
                            got += b.len() as u64;
                        }
                        dm.decref(x).map_err(e)?;
                    }
                }
                d = Some(r.close().map_err(e)?);
                if got != total {
                    return Err(format!("read {got} of {total} bytes from the Cosh pipe"));
                }
                writeln!(out, "done").map_err(e)?;
            }
            ["exit"] => {
                writeln!(out, "bye").map_err(e)?;
                break;
            }
            _ => return Err(format!("consumer: unknown command {line:?}")),
        }
        out.flush().map_err(e)?;
    }
    Ok(())
}
