//! CoshFS as a service: clients (each its own domain) against a server (its own domain) over
//! the request protocol. Every namespace error with its errno, the strict semantics (a read
//! that starts after a write completed sees it, also from a cache; a read is a snapshot even
//! while another client writes), both APIs, unlinked files read through open handles, a
//! client that lies about its domain, and handles closed when a client goes away.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cosh::{Domain, Options};
use cosh_fs::{Client, Fh, FsError, OpenFlags, Server};

struct Setup {
    dir: PathBuf,
}

/// What linked pools of these tests prove themselves with.
const LINK_TOKEN: &str = "a-token-for-these-tests-only";

impl Setup {
    /// A block manager and a CoshFS service, each on a thread of this process.
    fn start(tag: &str) -> Setup {
        Setup::start_pools(tag, None)
    }

    /// The service's pool (0), linked to pool 1 where `link` says, listening on TCP at
    /// `listen`.
    fn start_pools(tag: &str, link: Option<(cosh_blockmgr::LinkAddr, Option<u16>)>) -> Setup {
        let dir = std::env::temp_dir().join(format!("cosh-fs-svc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        cosh_sys::runtime::ensure_runtime_dir(&dir).expect("dir");
        let mut config = cosh_blockmgr::Config::host_at(&dir);
        config.socket = dir.join("host.sock");
        if let Some((addr, listen)) = link {
            config.links.insert(cosh::PoolId(1), addr);
            config.listen = listen.map(|port| ([127, 0, 0, 1], port).into());
            config.link_token = Some(LINK_TOKEN.into());
        }
        let manager = cosh_blockmgr::BlockManager::bind(config).expect("bind");
        std::thread::spawn(move || manager.run());
        let server = Server::with_domain(Setup::domain_at(&dir, "coshfs"), &dir.join("fs.sock"))
            .expect("serve");
        std::thread::spawn(move || server.run());
        Setup { dir }
    }

    /// Also a pool of `kind` (1) linked to the service's host pool (0); clients named with
    /// [`Setup::device_client`] live there.
    fn start_with_pool(tag: &str, kind: cosh_pool::PoolKind) -> Setup {
        let dir = std::env::temp_dir().join(format!("cosh-fs-svc-{tag}-{}", std::process::id()));
        let setup = Setup::start_pools(
            tag,
            Some((cosh_blockmgr::LinkAddr::Unix(dir.join("device.sock")), None)),
        );
        let mut config = cosh_blockmgr::Config::host_at(&dir);
        config.socket = dir.join("device.sock");
        config.pool = cosh::PoolId(1);
        config.kind = kind;
        config.links.insert(
            cosh::PoolId(0),
            cosh_blockmgr::LinkAddr::Unix(dir.join("host.sock")),
        );
        let manager = cosh_blockmgr::BlockManager::bind(config).expect("bind device");
        std::thread::spawn(move || manager.run());
        setup
    }

    /// Also a pool (1) of another host: linked to the service's pool over TCP (loopback
    /// here), both ways, so every byte between them travels on the stream.
    fn start_with_remote_pool(tag: &str) -> Setup {
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        };
        let (host_port, remote_port) = (port(), port());
        let tcp = |port| cosh_blockmgr::LinkAddr::Tcp {
            host: "127.0.0.1".into(),
            port,
            tls: false,
        };
        let setup = Setup::start_pools(tag, Some((tcp(remote_port), Some(host_port))));
        let dir = &setup.dir;
        let mut config = cosh_blockmgr::Config::host_at(dir);
        config.socket = dir.join("device.sock");
        config.pool = cosh::PoolId(1);
        config.links.insert(cosh::PoolId(0), tcp(host_port));
        config.listen = Some(([127, 0, 0, 1], remote_port).into());
        config.link_token = Some(LINK_TOKEN.into());
        let manager = cosh_blockmgr::BlockManager::bind(config).expect("bind remote");
        std::thread::spawn(move || manager.run());
        setup
    }

    /// A client whose domain lives in the second pool.
    fn device_client(&self, name: &str) -> Client {
        let d = Domain::connect_with(
            &Options::new(name)
                .socket(self.dir.join("device.sock"))
                .no_spawn(),
        )
        .expect("connect to the device pool");
        Client::connect(d, &self.dir.join("fs.sock")).expect("client")
    }

    fn domain_at(dir: &Path, name: &str) -> Domain {
        Domain::connect_with(&Options::new(name).socket(dir.join("host.sock")).no_spawn())
            .expect("connect")
    }

    fn client(&self, name: &str) -> Client {
        Client::connect(Setup::domain_at(&self.dir, name), &self.dir.join("fs.sock"))
            .expect("client")
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn whole(c: &mut Client, fh: Fh) -> Vec<u8> {
    let size = c.fstat(fh).expect("fstat").size;
    let e = c.read(fh, 0, size).expect("read");
    let mut out = vec![0; e.len() as usize];
    assert_eq!(c.copy_out(&e, &mut out).expect("copy"), out.len());
    out
}

#[test]
fn every_namespace_error_arrives_with_its_errno() {
    let s = Setup::start("errors");
    let mut c = s.client("c");
    c.mkdir("/a").expect("mkdir");
    c.mkdir("/a/b").expect("mkdir");
    let f = c.create("/a/f").expect("create");
    let errno = |e: FsError| e.errno();
    let excl = OpenFlags {
        create: true,
        excl: true,
        ..OpenFlags::default()
    };
    assert_eq!(errno(c.open("/a/f", excl).expect_err("exists")), 17);
    assert_eq!(errno(c.mkdir("/a").expect_err("exists")), 17);
    assert_eq!(errno(c.stat("/nope").expect_err("missing")), 2);
    assert_eq!(
        errno(c.open("/nope", OpenFlags::existing()).expect_err("missing")),
        2
    );
    assert_eq!(errno(c.create("/nope/x").expect_err("no parent")), 2);
    assert_eq!(errno(c.create("/a/f/x").expect_err("not a dir")), 20);
    assert_eq!(errno(c.readdir("/a/f").expect_err("not a dir")), 20);
    assert_eq!(errno(c.rmdir("/a/f").expect_err("a file")), 20);
    assert_eq!(errno(c.create("/a").expect_err("a dir")), 21);
    assert_eq!(errno(c.unlink("/a/b").expect_err("a dir")), 21);
    assert_eq!(errno(c.rmdir("/a").expect_err("not empty")), 39);
    assert_eq!(errno(c.create("relative").expect_err("relative")), 22);
    assert_eq!(
        errno(c.rename("/a", "/a/b/c").expect_err("into itself")),
        22
    );
    let long = format!("/{}", "x".repeat(256));
    assert_eq!(errno(c.create(&long).expect_err("too long")), 36);
    c.close(f).expect("close");
    assert_eq!(errno(c.close(f).expect_err("closed")), 9);
    assert_eq!(errno(c.read(f, 0, 1).expect_err("closed")), 9);
    // The errors say what they are about.
    let e = c.stat("/a/zz").expect_err("missing");
    assert!(e.to_string().contains("/a/zz"), "{e}");
    // And the namespace is what the successful calls made it.
    let names: Vec<String> = c
        .readdir("/a")
        .expect("readdir")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["b", "f"]);
}

#[test]
fn a_read_after_a_completed_write_sees_it_even_from_a_cache() {
    let s = Setup::start("raw");
    let mut writer = s.client("writer");
    // Every write waits for its answer here, so the reader may cache the file meanwhile.
    writer.set_write_behind(false);
    let mut reader = s.client("reader");
    let w = writer.create("/f").expect("create");
    writer.write_from(w, 0, b"version one").expect("write");
    let r = reader.open("/f", OpenFlags::existing()).expect("open");
    assert_eq!(whole(&mut reader, r), b"version one");
    assert_eq!(whole(&mut reader, r), b"version one");
    let after_first = reader.stats();
    assert_eq!((after_first.misses, after_first.hits), (1, 1));
    // The writer's write completes; the reader's next read must see it.
    writer.write_from(w, 8, b"two").expect("write");
    assert_eq!(whole(&mut reader, r), b"version two");
    assert_eq!(reader.stats().invalidations, 1);
    // Truncation by path, a large write by aggregate, an O_TRUNC open: each seen at once.
    writer.truncate("/f", 7).expect("truncate");
    assert_eq!(whole(&mut reader, r), b"version");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let agg = writer.domain().alloc(big.len() as u64).expect("alloc");
    writer.domain().write(agg, 0, &big).expect("fill");
    writer.write(w, 0, agg).expect("write agg");
    assert_eq!(whole(&mut reader, r), big);
    writer.open("/f", OpenFlags::create()).expect("reopen");
    assert!(whole(&mut reader, r).is_empty());
    // The writer reads its own writes too.
    writer.write_from(w, 0, b"mine").expect("write");
    assert_eq!(whole(&mut writer, w), b"mine");
}

#[test]
fn reads_are_snapshots_while_another_client_writes() {
    let s = Setup::start("snap");
    let mut writer = s.client("writer");
    let mut reader = s.client("reader");
    const LEN: usize = 200_000;
    let w = writer.create("/f").expect("create");
    writer.write_from(w, 0, &vec![0u8; LEN]).expect("write");
    let r = reader.open("/f", OpenFlags::existing()).expect("open");
    let held = reader.read(r, 0, LEN as u64).expect("read");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    // The writer rewrites the whole file with one byte value per version, by both APIs.
    let t = std::thread::spawn(move || {
        let mut v = 1u8;
        while !stop2.load(Ordering::Relaxed) {
            if v.is_multiple_of(2) {
                writer.write_from(w, 0, &vec![v; LEN]).expect("write");
            } else {
                let a = writer.domain().alloc(LEN as u64).expect("alloc");
                writer.domain().write(a, 0, &vec![v; LEN]).expect("fill");
                writer.write(w, 0, a).expect("write");
            }
            v = v.wrapping_add(1).max(1);
        }
        writer
    });
    let mut versions = std::collections::BTreeSet::new();
    for _ in 0..200 {
        // Every read sees one whole version, never a mix.
        for legacy in [false, true] {
            let mut buf = vec![0xEE; LEN];
            if legacy {
                assert_eq!(reader.read_into(r, 0, &mut buf).expect("read"), LEN);
            } else {
                let e = reader.read(r, 0, LEN as u64).expect("read");
                reader.copy_out(&e, &mut buf).expect("copy");
            }
            assert!(buf.iter().all(|&b| b == buf[0]), "a torn read");
            versions.insert(buf[0]);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _writer = t.join().expect("writer");
    // The extent read before any of it is unchanged.
    let mut buf = vec![0xEE; LEN];
    reader.copy_out(&held, &mut buf).expect("copy");
    assert!(buf.iter().all(|&b| b == 0), "the held snapshot changed");
    assert!(versions.len() > 1, "the reads saw only {versions:?}");
}

#[test]
fn both_apis_agree_at_every_size_and_offset() {
    let s = Setup::start("apis");
    let mut c = s.client("c");
    let f = c.create("/data").expect("create");
    let content: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 253) as u8).collect();
    // Written in uneven pieces, by both APIs.
    let mut at = 0;
    for (i, n) in [1usize, 4095, 65536, 65537, 300_000, 7, usize::MAX]
        .into_iter()
        .enumerate()
    {
        let n = n.min(content.len() - at);
        if i % 2 == 0 {
            c.write_from(f, at as u64, &content[at..at + n])
                .expect("write");
        } else {
            let a = c.domain().alloc(n as u64).expect("alloc");
            c.domain().write(a, 0, &content[at..at + n]).expect("fill");
            assert_eq!(c.write(f, at as u64, a).expect("write"), n as u64);
        }
        at += n;
    }
    assert_eq!(at, content.len());
    // The writer's last handle closed, its lease ends and others may cache the file.
    c.close(f).expect("close");
    let f = c.open("/data", OpenFlags::existing()).expect("open");
    // Read by a client that did not write it (the writer reads a file it is writing without
    // caching it, at first), and by the writer.
    let mut reader = s.client("reader");
    let rf = reader.open("/data", OpenFlags::existing()).expect("open");
    let writer = f;
    for (who, caching) in [(0, true), (1, true), (0, false)] {
        let (c, f) = if who == 0 {
            (&mut reader, rf)
        } else {
            (&mut c, writer)
        };
        c.set_caching(caching);
        for (off, len) in [(0, 512), (4000, 5000), (65_000, 70_000), (1_499_000, 4096)] {
            let want = &content[off..(off + len).min(content.len())];
            let mut buf = vec![0; len];
            let n = c.read_into(f, off as u64, &mut buf).expect("read_into");
            assert_eq!(&buf[..n], want, "legacy at {off}+{len}");
            let agg = c
                .read_agg(f, off as u64, len as u64)
                .expect("read_agg")
                .expect("bytes");
            let got = c.domain().read(agg, 0, want.len() as u64).expect("bytes");
            c.domain().decref(agg).expect("decref");
            assert_eq!(got, want, "aggregate at {off}+{len}");
        }
        assert!(c.read(f, 1_500_000, 10).expect("read").is_empty());
    }
    let s = reader.stats();
    assert!(s.uncached > 0 && s.hits > 0 && s.misses == 1, "{s:?}");
    assert!(c.stats().uncached > 0, "{:?}", c.stats());
}

#[test]
fn unlinked_files_stay_readable_through_open_handles() {
    let s = Setup::start("unlink");
    let mut a = s.client("a");
    let mut b = s.client("b");
    let f = a.create("/tmpfile").expect("create");
    a.write_from(f, 0, b"still here").expect("write");
    let g = b.open("/tmpfile", OpenFlags::existing()).expect("open");
    a.unlink("/tmpfile").expect("unlink");
    assert_eq!(b.stat("/tmpfile").expect_err("gone").errno(), 2);
    assert_eq!(whole(&mut b, g), b"still here");
    a.write_from(f, 0, b"STILL").expect("write");
    assert_eq!(whole(&mut b, g), b"STILL here");
    // A new file at the same name is another file.
    let h = a.create("/tmpfile").expect("create");
    assert!(whole(&mut a, h).is_empty());
    assert_eq!(whole(&mut b, g), b"STILL here");
}

#[test]
fn a_client_cannot_claim_another_domain() {
    let s = Setup::start("claim");
    let victim = Setup::domain_at(&s.dir, "victim");
    let liar = cosh_sys::socket::SeqPacket::connect(&s.dir.join("fs.sock")).expect("connect");
    let mut out = Vec::new();
    let mut buf = vec![0; cosh_fs::proto::MAX_MESSAGE];
    let mut ask = |r: &cosh_fs::proto::Request| {
        cosh_fs::proto::encode(r, &mut out).expect("encode");
        liar.send(&out, &[]).expect("send");
        let m = liar.recv(&mut buf).expect("recv").expect("open");
        cosh_fs::proto::decode::<cosh_fs::proto::ToClient>(&buf[..m.len]).expect("decode")
    };
    ask(&cosh_fs::proto::Request::Hello {
        version: cosh_fs::proto::VERSION,
        domain: victim.id().to_bits(),
    });
    // A made-up ticket proves nothing, and nothing else is served before a proof.
    let proof = ask(&cosh_fs::proto::Request::Prove { ticket: 12345 });
    assert!(
        matches!(
            proof,
            cosh_fs::proto::ToClient::Reply(cosh_fs::proto::Reply::Failed { errno: 22, .. })
        ),
        "{proof:?}"
    );
    let stat = ask(&cosh_fs::proto::Request::Stat { path: "/".into() });
    assert!(
        matches!(
            stat,
            cosh_fs::proto::ToClient::Reply(cosh_fs::proto::Reply::Failed { errno: 22, .. })
        ),
        "{stat:?}"
    );
    drop(victim);
}

#[test]
fn a_client_that_goes_away_leaves_nothing_open() {
    let s = Setup::start("gone");
    let mut a = s.client("a");
    let f = a.create("/f").expect("create");
    a.write_from(f, 0, &vec![1; 100_000]).expect("write");
    a.unlink("/f").expect("unlink");
    drop(a);
    // The service closed the handle: the unlinked file's memory is free. The service's
    // domain holds nothing but the root's (empty) files.
    let mut probe = s.client("probe");
    let server = probe.server().to_bits();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let status = probe.domain().status().expect("status");
        let held = status
            .domains
            .iter()
            .find(|d| d.domain == server)
            .map(|d| d.aggregates);
        if held == Some(0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the service still holds {held:?} aggregates"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_client_in_a_device_pool_writes_reads_and_caches_exactly() {
    other_pool_client(cosh_pool::PoolKind::Device, "device");
}

#[test]
fn a_client_in_a_non_coherent_pool_writes_reads_and_caches_exactly() {
    other_pool_client(cosh_pool::PoolKind::Nc, "nc");
}

#[test]
fn a_client_in_a_remote_pool_writes_reads_and_caches_exactly() {
    let s = Setup::start_with_remote_pool("remote");
    other_pool(&s, cosh_pool::PoolKind::Host);
    // Every byte went over the TCP links, both ways.
    let status = Setup::domain_at(&s.dir, "look").status().expect("status");
    assert!(
        status.transfers.exported > 0 && status.transfers.imported > 0,
        "{status:?}"
    );
    assert!(
        status
            .links
            .iter()
            .any(|l| l.pool == 1 && l.remote && l.open)
            && status.links.iter().all(|l| l.remote),
        "{:?}",
        status.links
    );
}

fn other_pool_client(kind: cosh_pool::PoolKind, tag: &str) {
    other_pool(&Setup::start_with_pool(tag, kind), kind);
}

/// A client in pool 1 (of `kind`) and one in the service's pool, each writing and reading
/// what the other wrote.
fn other_pool(s: &Setup, kind: cosh_pool::PoolKind) {
    let mut dev = s.device_client("dev");
    let mut host = s.client("host");
    assert_eq!(dev.domain().pool_kind(), kind);
    // Writes from the device: inline, and a large aggregate by strong move across pools.
    let f = dev.create("/from-device").expect("create");
    dev.write_from(f, 0, b"small").expect("write");
    let big: Vec<u8> = (0..2_500_000u32).map(|i| (i % 241) as u8).collect();
    let a = dev.domain().alloc(big.len() as u64).expect("alloc");
    dev.domain().write(a, 0, &big).expect("fill");
    assert_eq!(dev.write(f, 5, a).expect("write agg"), big.len() as u64);
    let mut want = b"small".to_vec();
    want.extend_from_slice(&big);
    let h = host
        .open("/from-device", OpenFlags::existing())
        .expect("open");
    assert_eq!(whole(&mut host, h), want);
    // The device caches what the host writes (a copy in its own pool), and sees every change
    // (the host waits for each write here, so it takes no lease).
    host.set_write_behind(false);
    let g = host.create("/from-host").expect("create");
    host.write_from(g, 0, &vec![3u8; 100_000]).expect("write");
    let r = dev.open("/from-host", OpenFlags::existing()).expect("open");
    assert_eq!(whole(&mut dev, r), vec![3u8; 100_000]);
    assert_eq!(whole(&mut dev, r), vec![3u8; 100_000]);
    host.write_from(g, 50_000, b"changed").expect("write");
    let mut changed = vec![3u8; 100_000];
    changed[50_000..50_007].copy_from_slice(b"changed");
    assert_eq!(whole(&mut dev, r), changed);
    let st = dev.stats();
    assert!(
        st.hits >= 1 && st.invalidations == 1 && st.misses == 2 && st.uncached == 0,
        "{st:?}"
    );
    // Another pool shares no coherent memory with the service: no write log there.
    dev.write_from(f, 0, b"SMALL").expect("write behind");
    want[..5].copy_from_slice(b"SMALL");
    let st = dev.stats();
    assert!(st.writes_behind >= 1 && st.writes_logged == 0, "{st:?}");
    // Writing behind, the host takes the file's write lease: the device reads it from the
    // service.
    host.set_write_behind(true);
    host.write_from(g, 0, &[3u8; 10]).expect("write");
    assert_eq!(whole(&mut dev, r), changed);
    assert_eq!(dev.stats().uncached, 1, "{:?}", dev.stats());
    // Once the host closes it, the device caches it again.
    host.close(g).expect("close");
    assert_eq!(whole(&mut dev, r), changed);
    assert_eq!(whole(&mut dev, r), changed);
    let st = dev.stats();
    assert!(st.hits >= 2 && st.misses == 3, "{st:?}");
    // Uncached reads across pools too, small (copied) and large (shared, so copied by the
    // copy engine into the device's pool).
    dev.set_caching(false);
    let mut buf = vec![0u8; 2_000_000];
    let n = dev.read_into(f, 100, &mut buf).expect("read");
    assert_eq!(&buf[..n], &want[100..100 + n]);
    assert_eq!(n, 2_000_000);
    let mut small = [0u8; 7];
    dev.read_into(r, 50_000, &mut small).expect("read");
    assert_eq!(&small, b"changed");
}

#[test]
fn writes_behind_are_seen_by_the_next_read_anywhere() {
    let s = Setup::start("behind");
    let mut writer = s.client("writer");
    let mut reader = s.client("reader");
    let w = writer.create("/log").expect("create");
    let r = reader.open("/log", OpenFlags::existing()).expect("open");
    let mut model = Vec::new();
    for i in 0..300u32 {
        // Small appends, not waited for; each is seen by the very next read of the other
        // client (whatever is still queued in the writer's socket is applied first).
        let line = format!("line {i}\n");
        writer
            .write_from(w, model.len() as u64, line.as_bytes())
            .expect("write");
        model.extend_from_slice(line.as_bytes());
        if i % 7 == 0 {
            assert_eq!(reader.stat("/log").expect("stat").size, model.len() as u64);
            let mut buf = vec![0u8; line.len()];
            let at = (model.len() - line.len()) as u64;
            assert_eq!(reader.read_into(r, at, &mut buf).expect("read"), line.len());
            assert_eq!(buf, line.as_bytes());
        }
    }
    assert_eq!(whole(&mut reader, r), model);
    // In the service's pool they travel through the shared write log.
    let st = writer.stats();
    assert!(st.writes_behind >= 300, "{st:?}");
    assert_eq!(st.writes_logged, st.writes_behind, "{st:?}");
    // While the writer holds the lease the reader does not cache the file; after, it does.
    assert_eq!(reader.stats().misses, 0, "{:?}", reader.stats());
    writer.close(w).expect("close");
    assert_eq!(whole(&mut reader, r), model);
    assert_eq!(whole(&mut reader, r), model);
    assert_eq!(reader.stats().misses, 1);
    // The writer reads its own writes behind at once too.
    let w = writer.open("/log", OpenFlags::existing()).expect("open");
    writer.write_from(w, 0, b"LINE").expect("write");
    let mut buf = [0u8; 4];
    writer.read_into(w, 0, &mut buf).expect("read");
    assert_eq!(&buf, b"LINE");
    // A write behind that fails is reported, at the latest by fsync (and once).
    writer.write_from(w, u64::MAX - 2, b"abc").expect("sent");
    let e = writer.fsync(w).expect_err("the failed write is reported");
    assert_eq!(e.errno(), 22, "{e}");
    assert!(writer.stat("/log").is_ok(), "reported once");
    writer.write_from(w, u64::MAX - 2, b"abc").expect("sent");
    assert_eq!(writer.close(w).expect_err("reported by close").errno(), 22);
}

#[test]
fn a_client_busy_elsewhere_can_be_told_of_every_change_it_caches() {
    let s = Setup::start("notices");
    let mut idle = s.client("idle");
    let mut busy = s.client("busy");
    // The idle client is told of as many files as it may be: it caches some (opening them
    // looked them up, and their directory, too) and looks up the others; it also misses
    // many names.
    let files = Client::MAX_CACHED_FILES;
    let names = Client::MAX_NOTIFIED_FILES - files - 1;
    let missing = Client::MAX_CACHED_PATHS - files - names - 1;
    let mut handles = Vec::new();
    for i in 0..files + names {
        let f = busy.create(&format!("/f{i}")).expect("create");
        busy.write_from(f, 0, b"old").expect("write");
        busy.close(f).expect("close");
    }
    for i in 0..files {
        let f = idle
            .open(&format!("/f{i}"), OpenFlags::existing())
            .expect("open");
        assert_eq!(whole(&mut idle, f), b"old");
        handles.push(f);
    }
    for i in files..files + names {
        assert_eq!(idle.stat(&format!("/f{i}")).expect("stat").size, 3);
    }
    for i in 0..missing {
        assert!(idle.stat(&format!("/missing{i}")).is_err());
    }
    let before = idle.stats();
    for i in 0..files + names {
        assert_eq!(idle.stat(&format!("/f{i}")).expect("stat").size, 3);
    }
    assert_eq!(
        idle.stats().lookup_hits - before.lookup_hits,
        (files + names) as u64,
        "every lookup is still cached"
    );
    let before = idle.stats();
    // Another client changes every one of them while the idle client reads nothing.
    for i in 0..files + names {
        let f = busy
            .open(&format!("/f{i}"), OpenFlags::existing())
            .expect("open");
        busy.write_from(f, 0, b"NEW!").expect("write");
        busy.close(f).expect("close");
    }
    // Every notice was queued: the idle client was not cut off, and sees every change.
    for (i, f) in handles.into_iter().enumerate() {
        assert_eq!(whole(&mut idle, f), b"NEW!", "file {i}");
    }
    for i in files..files + names {
        assert_eq!(idle.stat(&format!("/f{i}")).expect("stat").size, 4);
    }
    let after = idle.stats();
    assert_eq!(after.invalidations - before.invalidations, files as u64);
}

#[test]
fn a_lease_holder_knows_its_files_attributes_as_the_service_does() {
    let s = Setup::start("leaseattrs");
    let mut writer = s.client("writer");
    let mut other = s.client("other");
    let f = writer.create("/f").expect("create");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as i64
    };
    writer.write_from(f, 0, b"lease").expect("write");
    let asked = writer.stats().attr_hits;
    for i in 1..=50u64 {
        let made = now();
        writer.write_from(f, i * 100, &[7u8; 100]).expect("write");
        // Answered by the writer itself: its writes are all that changed the file...
        let mine = writer.fstat(f).expect("fstat");
        assert_eq!(mine.size, (i + 1) * 100);
        assert!(mine.mtime_ns >= made && mine.mtime_ns <= now(), "{mine:?}");
        // ... and exactly what the service says once it applied them.
        assert_eq!(other.stat("/f").expect("stat"), mine);
    }
    assert_eq!(writer.stats().attr_hits - asked, 50);
    // Changes made by others reach the lease holder.
    other.chmod("/f", 0o600).expect("chmod");
    assert_eq!(writer.fstat(f).expect("fstat").mode, 0o600);
    let g = other.open("/f", OpenFlags::existing()).expect("open");
    other.write_from(g, 10_000, b"x").expect("write");
    assert_eq!(writer.fstat(f).expect("fstat").size, 10_001);
    writer.write_from(f, 20_000, b"y").expect("write");
    assert_eq!(writer.fstat(f).expect("fstat").size, 20_001);
    assert_eq!(
        other.fstat(g).expect("fstat"),
        writer.fstat(f).expect("fstat")
    );
}

#[test]
fn lookups_a_client_keeps_through_its_own_changes_stay_exact() {
    let s = Setup::start("ownlookups");
    let mut a = s.client("a");
    let mut b = s.client("b");
    a.mkdir("/d").expect("mkdir");
    let f = a.create("/d/f").expect("create");
    for i in 0..10 {
        a.write_from(f, i * 10, &[1u8; 10]).expect("write");
    }
    let hits = a.stats().lookup_hits;
    // The file's lookup follows the client's writes behind; its directory's, the create.
    assert_eq!(a.stat("/d/f").expect("stat").size, 100);
    assert_eq!(a.stat("/d").expect("stat").size, 1);
    a.set_mtime("/d/f", 12_345).expect("utime");
    assert_eq!(a.stat("/d/f").expect("stat").mtime_ns, 12_345);
    a.close(f).expect("close");
    let mine = a.stat("/d/f").expect("stat");
    assert_eq!(
        a.stats().lookup_hits - hits,
        4,
        "all answered by the client"
    );
    assert_eq!(b.stat("/d/f").expect("stat"), mine);
    // Another client's write, after the lease: the client hears of it.
    let g = b.open("/d/f", OpenFlags::existing()).expect("open");
    b.write_from(g, 200, b"x").expect("write");
    b.close(g).expect("close");
    assert_eq!(a.stat("/d/f").expect("stat").size, 201);
    a.unlink("/d/f").expect("unlink");
    assert_eq!(a.stat("/d").expect("stat").size, 0);
    assert!(a.stat("/d/f").is_err());
    assert_eq!(a.stat("/d").expect("stat"), b.stat("/d").expect("stat"));
}

#[test]
fn overlapping_writes_through_a_full_write_log_land_in_order() {
    let s = Setup::start("fulllog");
    let mut writer = s.client("writer");
    let mut reader = s.client("reader");
    let w = writer.create("/f").expect("create");
    let r = reader.open("/f", OpenFlags::existing()).expect("open");
    // Far more than the log holds, each write overlapping the last: whether a write went
    // through the log or waited for a full one, the later bytes must win.
    let mut model = vec![0u8; 3 << 20];
    let piece = 64 * 1024;
    for i in 0..200usize {
        let at = (i * 12_345) % (model.len() - piece);
        let bytes = vec![(i % 251) as u8 + 1; piece];
        writer.write_from(w, at as u64, &bytes).expect("write");
        model[at..at + piece].copy_from_slice(&bytes);
        if i % 50 == 49 {
            let end = model.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            assert_eq!(whole(&mut reader, r), model[..end]);
        }
    }
    let end = model.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    assert_eq!(whole(&mut reader, r), model[..end]);
    let st = writer.stats();
    assert_eq!(st.writes_logged + st.log_full, 200, "{st:?}");
}

#[test]
fn a_client_that_breaks_the_protocol_is_cut_off_and_nobody_else_notices() {
    let s = Setup::start("garbage");
    let mut good = s.client("good");
    let f = good.create("/f").expect("create");
    good.write_from(f, 0, b"still fine").expect("write");
    for garbage in [&b"\xff\xff\xff\xff\xff"[..], &[], &[7u8; 3000][..]] {
        let bad = cosh_sys::socket::SeqPacket::connect(&s.dir.join("fs.sock")).expect("connect");
        if !garbage.is_empty() {
            bad.send(garbage, &[]).expect("send");
        } else {
            // Requests before Hello and Prove are refused, and answered as such.
            let mut out = Vec::new();
            cosh_fs::proto::encode(
                &cosh_fs::proto::Request::Stat { path: "/f".into() },
                &mut out,
            )
            .expect("encode");
            bad.send(&out, &[]).expect("send");
            let mut buf = vec![0; cosh_fs::proto::MAX_MESSAGE];
            let m = bad.recv(&mut buf).expect("recv").expect("answered");
            let r =
                cosh_fs::proto::decode::<cosh_fs::proto::ToClient>(&buf[..m.len]).expect("decode");
            assert!(
                matches!(
                    r,
                    cosh_fs::proto::ToClient::Reply(cosh_fs::proto::Reply::Failed {
                        errno: 22,
                        ..
                    })
                ),
                "{r:?}"
            );
            continue;
        }
        let mut buf = vec![0; 64];
        // The service hangs up on it.
        assert!(bad.recv(&mut buf).expect("recv").is_none(), "not cut off");
    }
    let mut buf = [0u8; 10];
    assert_eq!(good.read_into(f, 0, &mut buf).expect("read"), 10);
    assert_eq!(&buf, b"still fine");
}

#[test]
fn ranges_of_a_kept_aggregate_are_written_and_the_aggregate_stays_the_callers() {
    let s = Setup::start("range");
    let mut c = s.client("c");
    let f = c.create("/r").expect("create");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 239) as u8).collect();
    let keep = c.domain().alloc(bytes.len() as u64).expect("alloc");
    c.domain().write(keep, 0, &bytes).expect("fill");
    // A small range (copied inline) and a large one (a strong copy).
    assert_eq!(c.write_range(f, 0, keep, 10, 100).expect("small"), 100);
    assert_eq!(
        c.write_range(f, 100, keep, 1000, 200_000).expect("large"),
        200_000
    );
    let mut want = bytes[10..110].to_vec();
    want.extend_from_slice(&bytes[1000..201_000]);
    let mut reader = s.client("reader");
    let r = reader.open("/r", OpenFlags::existing()).expect("open");
    assert_eq!(whole(&mut reader, r), want);
    // The caller still has its aggregate, whole and writable.
    c.domain().write(keep, 0, b"mine").expect("still writable");
    assert_eq!(c.domain().read(keep, 4, 6).expect("read"), &bytes[4..10]);
    assert_eq!(
        whole(&mut reader, r),
        want,
        "the file did not change with it"
    );
    let e = c
        .write_range(f, 0, keep, 299_990, 100)
        .expect_err("past the end");
    assert_eq!(e.errno(), 22);
}

#[test]
fn cached_attributes_follow_every_change_whoever_makes_it() {
    let s = Setup::start("attrs");
    let mut a = s.client("a");
    let mut b = s.client("b");
    let f = a.create("/f").expect("create");
    a.write_from(f, 0, b"0123456789").expect("write");
    a.close(f).expect("close");
    let g = b.open("/f", OpenFlags::existing()).expect("open");
    assert_eq!(whole(&mut b, g), b"0123456789");
    let before = b.stats().attr_hits;
    let st = b.fstat(g).expect("fstat");
    assert_eq!((st.size, st.mode, st.nlink), (10, 0o644, 1));
    assert_eq!(b.stats().attr_hits, before + 1, "answered from the cache");
    // Another client's chmod, mtime and unlink are seen at once.
    a.chmod("/f", 0o600).expect("chmod");
    assert_eq!(b.fstat(g).expect("fstat").mode, 0o600);
    assert_eq!(whole(&mut b, g), b"0123456789");
    a.set_mtime("/f", 1_000_000_000).expect("utime");
    assert_eq!(b.fstat(g).expect("fstat").mtime_ns, 1_000_000_000);
    assert_eq!(whole(&mut b, g), b"0123456789");
    // The client's own change, by path, too.
    b.chmod("/f", 0o640).expect("chmod");
    assert_eq!(b.fstat(g).expect("fstat").mode, 0o640);
    assert_eq!(whole(&mut b, g), b"0123456789");
    a.unlink("/f").expect("unlink");
    assert_eq!(b.fstat(g).expect("fstat").nlink, 0);
    // fsync still waits for the service, cache or not.
    b.fsync(g).expect("fsync");
}

#[test]
fn a_lease_holder_reads_its_own_new_file_locally_and_still_sees_others_writes() {
    let s = Setup::start("shadow");
    let mut a = s.client("a");
    let mut b = s.client("b");
    let f = a.create("/new").expect("create");
    let mut model: Vec<u8> = Vec::new();
    // Appends, a gap and an overwrite, all written behind; reads come from A's own copy.
    for (off, data) in [
        (0u64, &b"hello "[..]),
        (6, b"world"),
        (20, b"gap"),
        (2, b"LL"),
    ] {
        a.write_from(f, off, data).expect("write");
        let end = off as usize + data.len();
        if model.len() < end {
            model.resize(end, 0);
        }
        model[off as usize..end].copy_from_slice(data);
        let mut buf = vec![0u8; 64];
        let n = a.read_into(f, 0, &mut buf).expect("read");
        assert_eq!(&buf[..n], &model[..], "after writing at {off}");
        let e = a.read(f, 1, 8).expect("read");
        let mut got = vec![0u8; e.len() as usize];
        a.copy_out(&e, &mut got).expect("copy");
        assert_eq!(got, &model[1..9.min(model.len())]);
    }
    assert!(a.stats().shadow_reads >= 8, "{:?}", a.stats());
    // An extent of the client's own copy is a snapshot too: later writes leave it be.
    let held = a.read(f, 0, 5).expect("read");
    a.write_from(f, 0, b"ZZZZZ").expect("write");
    let mut got = [0u8; 5];
    a.copy_out(&held, &mut got).expect("copy");
    assert_eq!(&got, &model[..5]);
    model[..5].copy_from_slice(b"ZZZZZ");
    a.ftruncate(f, 8).expect("truncate");
    model.truncate(8);
    assert_eq!(whole(&mut a, f), model);
    // B cannot take the lease, so it writes through the service; A sees it at once.
    let g = b.open("/new", OpenFlags::existing()).expect("open");
    b.write_from(g, 0, b"B").expect("write");
    model[0] = b'B';
    assert_eq!(whole(&mut a, f), model);
    assert_eq!(whole(&mut b, g), model);
    // And A's later writes are seen by B as well.
    a.write_from(f, 8, b"+A").expect("write");
    model.extend_from_slice(b"+A");
    assert_eq!(whole(&mut b, g), model);
    assert_eq!(whole(&mut a, f), model);
}

#[test]
fn cached_lookups_follow_every_namespace_change() {
    let s = Setup::start("lookups");
    let mut a = s.client("a");
    let mut b = s.client("b");
    a.mkdir("/d").expect("mkdir");
    let x = a.create("/d/x").expect("create");
    a.close(x).expect("close");
    // Found and missing names are both remembered.
    assert_eq!(b.stat("/d/x").expect("stat").size, 0);
    assert_eq!(b.stat("/d/y").expect_err("missing").errno(), 2);
    let hits = b.stats().lookup_hits;
    assert!(b.stat("/d/x").is_ok() && b.stat("/d/y").is_err());
    assert_eq!(b.stats().lookup_hits, hits + 2, "answered from the cache");
    // Another client makes, moves and removes names: seen at once.
    let y = a.create("/d/y").expect("create");
    assert!(b.stat("/d/y").is_ok(), "a new name");
    a.rename("/d/x", "/d/z").expect("rename");
    assert_eq!(b.stat("/d/x").expect_err("moved").errno(), 2);
    let z = b.stat("/d/z").expect("moved here");
    // Its content and attributes too.
    a.write_from(y, 0, b"grown").expect("write");
    assert_eq!(b.stat("/d/y").expect("stat").size, 5);
    a.chmod("/d/z", 0o600).expect("chmod");
    assert_eq!(b.stat("/d/z").expect("stat").mode, 0o600);
    a.close(y).expect("close");
    a.unlink("/d/y").expect("unlink");
    assert_eq!(b.stat("/d/y").expect_err("gone").errno(), 2);
    // And the client's own changes, without asking anyone.
    b.unlink("/d/z").expect("unlink");
    assert_eq!(b.stat("/d/z").expect_err("gone").errno(), 2);
    b.mkdir("/d/e").expect("mkdir");
    assert!(b.stat("/d/e").expect("made").dir);
    b.rename("/d", "/f").expect("rename a directory");
    assert_eq!(b.stat("/d/e").expect_err("moved").errno(), 2);
    assert!(b.stat("/f/e").expect("moved here").dir);
    assert_eq!(a.stat("/d").expect_err("moved").errno(), 2);
    assert_ne!(z.ino, 0);
}
