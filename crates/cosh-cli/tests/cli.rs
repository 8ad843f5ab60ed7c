//! The `cosh` command end to end, each test in a runtime directory of its own.

use std::path::PathBuf;
use std::process::{Command, Output};

fn runtime(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cosh-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn cosh(dir: &PathBuf, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cosh"))
        .env("COSH_RUNTIME_DIR", dir)
        .args(args)
        .output()
        .expect("cosh runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn up_status_down() {
    let dir = runtime("updown");
    let o = cosh(&dir, &["status"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("cosh up"), "{}", text(&o));
    let o = cosh(&dir, &["up", "--detach"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = cosh(&dir, &["up", "--detach"]);
    assert!(
        o.status.success() && text(&o).contains("already"),
        "{}",
        text(&o)
    );
    let o = cosh(&dir, &["status"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("buffers in use: 0"), "{}", text(&o));
    // The crossovers the block manager measured when it started, and from what.
    assert!(
        text(&o).contains("small transfers: inline on direct rings up to ")
            && text(&o).contains("chosen at start-up from: ring ")
            || text(&o).contains("small transfers: never inline (inline never paid"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains(
            "strong shares: a buffer never shared is copied into the receiver's memory up to "
        ) && text(&o).contains("copying a large buffer ")
            || text(&o).contains(
                "strong shares: always sealed and mapped by reference (copying never paid"
            ),
        "{}",
        text(&o)
    );
    let o = cosh(&dir, &["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(json["small"]["handoff_ns"].as_u64().is_some_and(|n| n > 0));
    assert!(
        json["small"]["copy_ns_per_mib"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    assert_eq!(
        json["domain_count"], 0,
        "the status command leaves itself out"
    );
    assert_eq!(json["transfers"]["moves"], 0);
    let o = cosh(&dir, &["down"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!dir.join("host.sock").exists());
    let o = cosh(&dir, &["down"]);
    assert!(!o.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_demo_verifies_every_byte_and_cleans_up() {
    let dir = runtime("demo");
    let o = cosh(&dir, &["demo", "--sizes", "4K,64K", "--rounds", "3"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("received and verified every byte: 30 aggregates"),
        "{out}"
    );
    for row in [
        "move    strong",
        "share   weak",
        "copy    strong",
        "unix socket",
        "pipe",
    ] {
        assert!(out.contains(row), "no {row:?} in {out}");
    }
    assert!(out.contains("stopped the block manager"), "{out}");
    assert!(!dir.join("host.sock").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_sizes_are_explained() {
    let dir = runtime("badsize");
    for bad in ["3X", "0", "2G"] {
        let o = cosh(&dir, &["demo", "--sizes", bad]);
        assert!(!o.status.success());
        assert!(text(&o).contains(bad), "{}", text(&o));
    }
}

#[test]
fn bench_fig2a_writes_csv_and_a_plot() {
    let dir = runtime("bench");
    std::fs::create_dir_all(&dir).expect("dir");
    let csv = dir.join("fig2a.csv");
    let svg = dir.join("fig2a.svg");
    let o = cosh(
        &dir,
        &[
            "bench",
            "fig2a",
            "--sizes",
            "4K,64K",
            "--samples",
            "5",
            "--quiet",
            "--csv",
            csv.to_str().expect("utf-8"),
            "--plot",
            svg.to_str().expect("utf-8"),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("ratios of medians"), "{}", text(&o));
    assert!(text(&o).contains("fast path"), "{}", text(&o));
    let table = std::fs::read_to_string(&csv).expect("csv");
    assert!(
        table.starts_with("case,size,delivered_ns,p10_ns,p90_ns,p99_ns"),
        "{table}"
    );
    for case in [
        "move strong,4096,",
        "share weak,65536,",
        "unix socket,4096,",
        "futex,64,",
        "\"weak bounce, polls\",65536,",
        "\"weak bounce, blocks\",65536,",
        "stream copy,65536,",
        "stream pipe,4096,",
    ] {
        assert!(table.contains(case), "no {case:?} in\n{table}");
    }
    let plot = std::fs::read_to_string(&svg).expect("svg");
    assert!(
        plot.starts_with("<svg") && plot.contains("share strong"),
        "{plot}"
    );
    let o = cosh(&dir, &["bench", "fig2a", "--", "--help"]);
    assert!(
        o.status.success()
            && text(&o).contains("--plot")
            && text(&o).contains("iceoryx2 publish/subscribe: single samples to a receiver asleep")
            && text(&o).contains("ping-pongs busy-polling and woken by its events"),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_topology_comes_up_shows_every_pool_and_goes_down() {
    let dir = runtime("topology");
    let o = cosh(&dir, &["up", "--topology", "default"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = cosh(&dir, &["up", "--topology", "default"]);
    assert!(text(&o).contains("already runs"), "{}", text(&o));
    let o = cosh(&dir, &["status", "--all"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("pool 0 (coherent memory)"), "{t}");
    assert!(t.contains("pool 1 (non-coherent, emulated memory)"), "{t}");
    assert!(t.contains("pool 2 (device, unshared memory)"), "{t}");
    // Every pool is linked to every other (links open at the first transfer).
    assert!(
        t.contains("link to pool 2 (on this machine): configured")
            && t.contains("link to pool 0 (on this machine): configured"),
        "{t}"
    );
    let o = cosh(&dir, &["status", "--all", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let pools: Vec<(u64, bool)> = json
        .as_array()
        .expect("one entry per pool")
        .iter()
        .map(|p| {
            (
                p["status"]["pool"].as_u64().expect("pool"),
                p["coherent"].as_bool().expect("coherent"),
            )
        })
        .collect();
    assert_eq!(
        pools,
        vec![(2, true), (0, true), (1, false)],
        "by socket name"
    );
    let o = cosh(&dir, &["down", "--all"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !dir.join("host.sock").exists()
            && !dir.join("nc.sock").exists()
            && !dir.join("device.sock").exists()
    );
    let o = cosh(&dir, &["status", "--all"]);
    assert!(!o.status.success());
    // A topology that names two pools alike is refused before anything starts.
    let bad = dir.join("bad.toml");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        &bad,
        "[[pool]]\nname = \"a\"\nid = 0\nkind = \"host\"\n[[pool]]\nname = \"a\"\nid = 1\nkind = \"nc\"\n",
    )
    .expect("write");
    let o = cosh(&dir, &["up", "--topology", bad.to_str().expect("utf-8")]);
    assert!(
        !o.status.success() && text(&o).contains("two pools are named"),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A free TCP port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a port")
}

#[test]
fn two_hosts_come_up_from_topologies_and_carry_a_transfer() {
    // Two "hosts": two runtime directories, each with its topology; host B's pool listens,
    // host A names it as a [[remote]] (plain TCP on loopback, asked for explicitly).
    let (a, b) = (runtime("host-a"), runtime("host-b"));
    std::fs::create_dir_all(&a).expect("dir");
    std::fs::create_dir_all(&b).expect("dir");
    let token = a.join("token");
    std::fs::write(&token, "a-token-shared-by-both-hosts\n").expect("token");
    let port = free_port();
    let links = format!(
        "[links]\ntoken_file = {:?}\ninsecure_plain_tcp = true\n",
        token.display().to_string()
    );
    let top_b = b.join("b.toml");
    std::fs::write(
        &top_b,
        format!("{links}[[pool]]\nname = \"b\"\nid = 7\nkind = \"device\"\nlisten = \"127.0.0.1:{port}\"\n[[remote]]\nid = 1\naddress = \"tcp://127.0.0.1:9\"\n"),
    )
    .expect("topology");
    let top_a = a.join("a.toml");
    std::fs::write(
        &top_a,
        format!("{links}[[pool]]\nname = \"a\"\nid = 1\nkind = \"host\"\n[[remote]]\nid = 7\naddress = \"tcp://127.0.0.1:{port}\"\n"),
    )
    .expect("topology");
    for (dir, top) in [(&b, &top_b), (&a, &top_a)] {
        let o = cosh(dir, &["up", "--topology", top.to_str().expect("utf-8")]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = cosh(&a, &["status", "--all"]);
    assert!(
        text(&o).contains("link to pool 7 (over TCP): configured"),
        "{}",
        text(&o)
    );
    // A domain of host A sends to one of host B, addressed like any other.
    let options = |dir: &PathBuf, sock: &str| {
        cosh::Options::new("cli-test")
            .socket(dir.join(sock))
            .no_spawn()
    };
    let mut da = cosh::Domain::connect_with(&options(&a, "a.sock")).expect("host a");
    let mut db = cosh::Domain::connect_with(&options(&b, "b.sock")).expect("host b");
    let x = da.alloc(3 << 20).expect("alloc");
    da.write(x, 0, b"across hosts").expect("write");
    da.transfer(x, db.id(), cosh::Mode::Move, cosh::TransferFlags::default())
        .expect("to host b");
    let got = db
        .receive(Some(da.id()), Some(std::time::Duration::ZERO))
        .expect("there");
    assert_eq!(db.read(got.agg, 0, 12).expect("read"), b"across hosts");
    let o = cosh(&b, &["status", "--all"]);
    assert!(
        text(&o).contains("link from pool 1 (over TCP): open"),
        "{}",
        text(&o)
    );
    drop((da, db));
    for dir in [&a, &b] {
        let o = cosh(dir, &["down", "--all"]);
        assert!(o.status.success(), "{}", text(&o));
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn cosh_pipe_carries_a_stream_between_two_commands() {
    use std::io::{Read, Write};
    use std::process::Stdio;
    let dir = runtime("pipe");
    let o = cosh(&dir, &["up", "--detach"]);
    assert!(o.status.success(), "{}", text(&o));
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cosh"))
            .env("COSH_RUNTIME_DIR", &dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cosh runs")
    };
    let mut recv = spawn(&["pipe", "recv", "stream", "--window-mib", "1"]);
    let mut send = spawn(&["pipe", "send", "stream", "--chunk-kib", "64"]);
    let data: Vec<u8> = (0..3_000_017u32).map(|i| (i % 251) as u8).collect();
    let mut input = send.stdin.take().expect("stdin");
    let feed = {
        let data = data.clone();
        std::thread::spawn(move || {
            input.write_all(&data).expect("feed");
        })
    };
    let mut got = Vec::new();
    recv.stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut got)
        .expect("read");
    feed.join().expect("feeder");
    let (s, r) = (
        send.wait_with_output().expect("send"),
        recv.wait_with_output().expect("recv"),
    );
    assert!(s.status.success(), "{}", text(&s));
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the stream arrived whole");
    // A receiver nobody sends to gives up with a message.
    let o = cosh(&dir, &["pipe", "recv", "nobody", "--wait", "1"]);
    assert!(
        !o.status.success() && text(&o).contains("no `cosh pipe send nobody`"),
        "{}",
        text(&o)
    );
    let o = cosh(&dir, &["down"]);
    assert!(o.status.success(), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_fig2b_and_bench_pipe_run_and_report() {
    let dir = runtime("bench2");
    std::fs::create_dir_all(&dir).expect("dir");
    let csv = dir.join("fig2b.csv");
    let o = cosh(
        &dir,
        &[
            "bench",
            "fig2b",
            "--sizes",
            "4K,64K",
            "--samples",
            "3",
            "--to",
            "device,remote",
            "--quiet",
            "--csv",
            csv.to_str().expect("utf-8"),
        ],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("device/memcpy") && t.contains("remote/tcp"),
        "{t}"
    );
    let table = std::fs::read_to_string(&csv).expect("csv");
    for case in [
        "host to device,4096,",
        "\"host to device, pipelined\",65536,",
        "host to remote,4096,",
        "memcpy,4096,",
        "process_vm_writev,65536,",
        "tcp loopback,4096,",
    ] {
        assert!(table.contains(case), "no {case:?} in\n{table}");
    }
    let o = cosh(
        &dir,
        &["bench", "pipe", "--sizes", "64K", "--total-mib", "8"],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("linux pipe") && t.contains("64 KiB"), "{t}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A trace of every kind of operation the replayer acts on, in the format of
/// `traces/FORMAT.md`; the final sizes are given by `final_sizes`.
/// The tree the trace of `write_trace` leaves when replayed.
const REPLAYED: [(&str, &str, u64); 3] = [
    ("out", "dir", 0),
    ("out/a.o", "file", 60000),
    ("out/b", "file", 300),
];

fn write_trace(dir: &std::path::Path, final_sizes: &[(&str, &str, u64)]) {
    std::fs::create_dir_all(dir).expect("trace dir");
    let header = "seq,t,dur,pid,tgid,prog,op,syscall,path,path2,fd,offset,size,result,errno,flags,mode,fsize";
    let rows = [
        "stat,newfstatat,in.txt,,,,,0,,0,,100",
        "open,openat,in.txt,,3,,,3,,O_RDONLY,,100",
        "read,read,in.txt,,3,0,4096,100,,,,",
        "read,read,in.txt,,3,100,4096,0,,,,",
        "mkdir,mkdir,out,,,,,0,,,0755,",
        "mkdir,mkdir,out,,,,,-1,EEXIST,,0755,",
        "open,openat,out/a.o,,4,,,4,,O_WRONLY|O_CREAT|O_TRUNC,0644,0",
        "write,write,out/a.o,,4,0,5000,5000,,,,",
        "write,pwrite64,out/a.o,,4,10,20,20,,,,",
        "write,write,out/a.o,,4,5000,70000,70000,,,,",
        "fstat,fstat,out/a.o,,4,,,0,,,,75000",
        "read,pread64,out/a.o,,4,4000,2000,2000,,,,",
        "truncate,ftruncate,out/a.o,,4,,60000,0,,,,60000",
        "stat,newfstatat,out/missing,,,,,-1,ENOENT,0,,",
        "open,openat,out/tmp,,5,,,5,,O_RDWR|O_CREAT|O_EXCL,0600,0",
        "write,write,out/tmp,,5,0,300,300,,,,",
        "rename,rename,out/tmp,out/b,,,,0,,,,",
        "unlink,unlink,in.txt,,,,,0,,,,",
        "read,pread64,in.txt,,3,50,50,50,,,,",
        "mkdir,mkdir,gone,,,,,0,,,0755,",
        "rmdir,rmdir,gone,,,,,0,,,,",
        "chmod,chmod,out/b,,,,,0,,,0755,",
        "readdir,getdents64,out,,6,,32768,48,,,,",
        "access,access,out/b,,,,,0,,F_OK,,",
        "readlink,readlink,out/b,,,,,-1,EINVAL,,,",
        "seek,lseek,out/a.o,,4,10,10,10,,SEEK_SET,,",
    ];
    let mut trace = format!("{header}\n");
    for (i, r) in rows.iter().enumerate() {
        trace.push_str(&format!("{i},0.{i:06},0.000001,7,7,prog,{r}\n"));
    }
    std::fs::write(dir.join("trace.csv"), trace).expect("trace");
    std::fs::write(
        dir.join("initial_files.csv"),
        "path,type,size,sha256\nin.txt,file,100,\n",
    )
    .expect("initial");
    let mut fin = String::from("path,type,size,sha256\n");
    for (p, t, n) in final_sizes {
        fin.push_str(&format!("{p},{t},{n},\n"));
    }
    std::fs::write(dir.join("final_files.csv"), fin).expect("final");
}

#[test]
fn replay_runs_a_trace_on_every_target_and_catches_a_wrong_one() {
    let dir = runtime("replay");
    let trace = dir.join("trace");
    write_trace(&trace, &REPLAYED);
    let t = trace.to_string_lossy().to_string();
    let csv = dir.join("replay.csv");
    let o = cosh(
        &dir,
        &[
            "replay",
            &t,
            "--targets",
            "tmpfs,coshfs,coshfs-legacy,coshfs-nocache,device-coshfs",
            "--tmpfs",
            &std::env::temp_dir().to_string_lossy(),
            "--warmup",
            "1",
            "--runs",
            "2",
            "--csv",
            &csv.to_string_lossy(),
        ],
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("inconsistencies during replay: 0"), "{out}");
    assert!(out.contains("coshfs (untimed): "), "{out}");
    assert_eq!(out.matches("    yes").count(), 5, "{out}");
    // Two timed runs each, and the untimed first replay's time apart.
    let table = std::fs::read_to_string(&csv).expect("csv");
    let mut lines = table.lines();
    assert_eq!(
        lines.next(),
        Some("target,runs_ms,median_ms,vs_tmpfs,exact,first_ms")
    );
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 6, "{line}");
        assert_eq!(f[1].split(';').count(), 2, "{line}");
        assert!(f[5].parse::<f64>().is_ok_and(|ms| ms > 0.0), "{line}");
    }
    // A trace whose final state the replay cannot reach is reported, and fails.
    write_trace(
        &trace,
        &[
            ("out", "dir", 0),
            ("out/a.o", "file", 61000),
            ("out/b", "file", 300),
        ],
    );
    let o = cosh(
        &dir,
        &[
            "replay",
            &t,
            "--targets",
            "coshfs",
            "--tmpfs",
            &std::env::temp_dir().to_string_lossy(),
        ],
    );
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("final: out/a.o") && out.contains("not exact"),
        "{out}"
    );
    // No trace there: said plainly.
    let o = cosh(&dir, &["replay", "/nonexistent-trace"]);
    assert!(
        !o.status.success() && text(&o).contains("no trace.csv.gz or trace.csv"),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_all_writes_a_report_folder() {
    let dir = runtime("bench-all");
    let trace = dir.join("trace");
    write_trace(&trace, &REPLAYED);
    let out = dir.join("report");
    let (t, o) = (
        trace.to_string_lossy().to_string(),
        out.to_string_lossy().to_string(),
    );
    let run = cosh(
        &dir,
        &[
            "bench",
            "all",
            "--",
            "--quick",
            "--only",
            "fig2c,table3",
            "--trace",
            &t,
            "--out",
            &o,
        ],
    );
    assert!(run.status.success(), "{}", text(&run));
    let report = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    for needle in [
        "## The machine",
        "| fig2c | ok |",
        "| table3 | ok |",
        "Figure 2c",
        "| tmpfs pread |",
        "![fig2c](fig2c.svg)",
        "| coshfs | ",
        "| first replay, untimed (ms) |",
        "here, the first replay (ms)",
        "the paper (ms)",
        "Ratios (",
        "## The targets of the earlier issues, from this run",
        "| the devtrace replay on CoshFS (aggregate API) no slower than on tmpfs | ",
        "| reads of 4 KiB and less (cached; every API) no slower than 1.5x tmpfs pread | at worst ",
    ] {
        assert!(report.contains(needle), "no {needle:?} in:\n{report}");
    }
    for file in [
        "fig2c.csv",
        "fig2c.svg",
        "fig2c.log",
        "table3.csv",
        "table3.log",
        "steps.csv",
        "machine.csv",
    ] {
        assert!(out.join(file).exists(), "no {file}");
    }
    // Written again from the folder alone, the report is the same.
    std::fs::remove_file(out.join("report.md")).expect("rm report.md");
    let again = cosh(&dir, &["bench", "all", "--", "--report-only", "--out", &o]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        std::fs::read_to_string(out.join("report.md")).expect("report.md again"),
        report
    );
    let run = cosh(
        &dir,
        &[
            "bench",
            "all",
            "--",
            "--report-only",
            "--quick",
            "--out",
            &o,
        ],
    );
    assert!(!run.status.success());
    assert!(text(&run).contains("cannot be used with"), "{}", text(&run));
    let table3 = std::fs::read_to_string(out.join("table3.csv")).expect("csv");
    assert_eq!(
        table3
            .lines()
            .filter(|l| l.split(',').nth(4) == Some("yes"))
            .count(),
        5,
        "{table3}"
    );
    // A step that does not exist, or Table 3 without a trace: said plainly.
    let run = cosh(&dir, &["bench", "all", "--", "--only", "fig9", "--out", &o]);
    assert!(!run.status.success());
    assert!(text(&run).contains("no step \"fig9\""), "{}", text(&run));
    let run = cosh(
        &dir,
        &["bench", "all", "--", "--only", "table3", "--out", &o],
    );
    assert!(!run.status.success());
    assert!(text(&run).contains("--trace DIR"), "{}", text(&run));
    let _ = std::fs::remove_dir_all(&dir);
}
