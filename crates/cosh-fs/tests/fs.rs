//! CoshFS's core against a block manager: the namespace and every error it can give (with
//! errno values), writes in place and by aggregate, reads that are snapshots (copy on write),
//! data that stays readable through an open handle after unlink, truncation, rename's rules,
//! and memory given back.

use cosh::{Domain, Options};
use cosh_fs::{Fs, FsError};

fn fs(tag: &str) -> (Fs, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("cosh-fs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    cosh_sys::runtime::ensure_runtime_dir(&dir).expect("dir");
    let mut config = cosh_blockmgr::Config::host_at(&dir);
    config.socket = dir.join("host.sock");
    let manager = cosh_blockmgr::BlockManager::bind(config).expect("bind");
    std::thread::spawn(move || manager.run());
    let d = Domain::connect_with(
        &Options::new("coshfs")
            .socket(dir.join("host.sock"))
            .no_spawn(),
    )
    .expect("connect");
    (Fs::new(d), dir)
}

/// An aggregate of `bytes`, in the service's domain.
fn agg(fs: &mut Fs, bytes: &[u8]) -> cosh::Agg {
    let d = fs.domain();
    let a = d.alloc(bytes.len() as u64).expect("alloc");
    d.write(a, 0, bytes).expect("write");
    a
}

fn contents(fs: &mut Fs, h: u64) -> Vec<u8> {
    match fs.read(h, 0, u64::MAX).expect("read") {
        Some(a) => {
            let d = fs.domain();
            let n = d.len(a).expect("len");
            let bytes = d.read(a, 0, n).expect("bytes");
            d.decref(a).expect("decref");
            bytes
        }
        None => Vec::new(),
    }
}

/// The service's domain holds no aggregate but the chunk buffers it keeps spare, and none
/// once it gives those back: every buffer was given back.
fn assert_holds_nothing(fs: &mut Fs) {
    let spare = fs.memory().spare_buffers() as u64;
    assert_eq!(holds(fs), spare);
    fs.memory().release_spare().expect("release");
    assert_eq!(fs.memory().spare_bytes(), 0);
    assert_eq!(holds(fs), 0);
}

/// Aggregates the service's domain holds.
/// The aggregates the service's domain holds, but the buffers its library keeps waiting
/// for small copies.
fn holds(fs: &mut Fs) -> u64 {
    let status = fs.domain().status().expect("status");
    let me = fs.domain().id().to_bits();
    let mine = status
        .domains
        .iter()
        .find(|d| d.domain == me)
        .expect("listed");
    mine.aggregates - fs.domain().waiting_buffers() as u64
}

#[test]
fn the_namespace_and_its_errors() {
    let (mut fs, dir) = fs("names");
    fs.mkdir("/a").expect("mkdir");
    fs.mkdir("/a/b").expect("mkdir");
    fs.create("/a/f").expect("create");
    assert_eq!(fs.readdir("/a").expect("readdir"), vec!["b", "f"]);
    assert!(fs.stat("/a").expect("stat").dir);
    assert_eq!(fs.stat("/a/f").expect("stat").size, 0);
    let errno = |e: FsError| e.errno();
    assert_eq!(errno(fs.create("/a/f").expect_err("exists")), 17);
    assert_eq!(errno(fs.mkdir("/a").expect_err("exists")), 17);
    assert_eq!(errno(fs.stat("/nope").expect_err("missing")), 2);
    assert_eq!(errno(fs.create("/nope/x").expect_err("no parent")), 2);
    assert_eq!(errno(fs.create("/a/f/x").expect_err("not a dir")), 20);
    assert_eq!(errno(fs.readdir("/a/f").expect_err("not a dir")), 20);
    assert_eq!(errno(fs.open("/a").expect_err("a dir")), 21);
    assert_eq!(errno(fs.unlink("/a/b").expect_err("a dir")), 21);
    assert_eq!(errno(fs.rmdir("/a").expect_err("not empty")), 39);
    assert_eq!(errno(fs.rmdir("/a/f").expect_err("a file")), 20);
    assert_eq!(errno(fs.create("relative").expect_err("relative")), 22);
    assert_eq!(errno(fs.create("/a/../f").expect_err("dot-dot")), 22);
    assert_eq!(errno(fs.close(99).expect_err("bad handle")), 9);
    assert_eq!(
        errno(fs.rename("/a", "/a/b/c").expect_err("into itself")),
        22
    );
    assert_eq!(
        errno(fs.rename("/a/f", "/a/b").expect_err("file over dir")),
        21
    );
    fs.rmdir("/a/b").expect("rmdir");
    fs.rename("/a/f", "/g").expect("rename");
    assert_eq!(errno(fs.stat("/a/f").expect_err("moved")), 2);
    assert_eq!(fs.readdir("/").expect("readdir"), vec!["a", "g"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn writes_rebuild_files_and_reads_are_snapshots() {
    let (mut fs, dir) = fs("data");
    fs.create("/f").expect("create");
    let h = fs.open("/f").expect("open");
    let x = agg(&mut fs, b"hello world");
    fs.write(h, 0, x).expect("write");
    let snapshot = fs.read(h, 0, 5).expect("read").expect("bytes");
    // Overwrite the middle, extend past the end with a gap of zeros.
    let y = agg(&mut fs, b"W");
    fs.write(h, 6, y).expect("write");
    let z = agg(&mut fs, b"!");
    fs.write(h, 13, z).expect("write");
    assert_eq!(contents(&mut fs, h), b"hello World\0\0!");
    assert_eq!(fs.stat("/f").expect("stat").size, 14);
    // The earlier read still says what the file said then.
    let d = fs.domain();
    assert_eq!(d.read(snapshot, 0, 5).expect("read"), b"hello");
    d.decref(snapshot).expect("decref");
    // Reads past the end: fewer bytes, then nothing.
    let tail = fs.read(h, 12, 100).expect("read").expect("bytes");
    assert_eq!(fs.domain().len(tail).expect("len"), 2);
    fs.domain().decref(tail).expect("decref");
    assert!(fs.read(h, 14, 10).expect("read").is_none());
    // Truncate cuts and extends.
    fs.truncate("/f", 5).expect("truncate");
    assert_eq!(contents(&mut fs, h), b"hello");
    fs.truncate("/f", 7).expect("truncate");
    assert_eq!(contents(&mut fs, h), b"hello\0\0");
    fs.close(h).expect("close");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn small_appends_go_in_place_and_unlinked_data_lives_while_open() {
    let (mut fs, dir) = fs("coalesce");
    fs.create("/log").expect("create");
    let h = fs.open("/log").expect("open");
    let mut expect = Vec::new();
    for i in 0..200u32 {
        let line = format!("line {i}\n");
        let a = agg(&mut fs, line.as_bytes());
        let at = expect.len() as u64;
        fs.write(h, at, a).expect("append");
        expect.extend_from_slice(line.as_bytes());
    }
    assert_eq!(contents(&mut fs, h), expect);
    // Appended in place: one buffer, and a read hands out one piece, not 200.
    assert_eq!(fs.buffers(h).expect("buffers"), 1);
    let all = fs.read(h, 0, u64::MAX).expect("read").expect("bytes");
    let pieces = fs.domain().read_pieces(all, 0).expect("pieces").len();
    fs.domain().decref(all).expect("decref");
    assert_eq!(pieces, 1);
    // Unlinked while open: the name goes, the data stays until close.
    fs.unlink("/log").expect("unlink");
    assert_eq!(fs.stat("/log").expect_err("gone").errno(), 2);
    assert_eq!(contents(&mut fs, h), expect);
    fs.close(h).expect("close");
    // Everything given back: the service holds no aggregate.
    assert_holds_nothing(&mut fs);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rename_replaces_a_file_and_moves_directories() {
    let (mut fs, dir) = fs("rename");
    fs.mkdir("/d").expect("mkdir");
    fs.create("/d/a").expect("create");
    fs.create("/b").expect("create");
    let h = fs.open("/b").expect("open");
    let x = agg(&mut fs, b"old b");
    fs.write(h, 0, x).expect("write");
    let ha = fs.open("/d/a").expect("open");
    let y = agg(&mut fs, b"new");
    fs.write(ha, 0, y).expect("write");
    fs.close(ha).expect("close");
    // /d/a replaces /b; the open handle of the old /b still reads it.
    fs.rename("/d/a", "/b").expect("rename");
    let hb = fs.open("/b").expect("open");
    assert_eq!(contents(&mut fs, hb), b"new");
    assert_eq!(contents(&mut fs, h), b"old b");
    fs.close(h).expect("close");
    fs.close(hb).expect("close");
    // A directory moves with what it holds.
    fs.mkdir("/e").expect("mkdir");
    fs.create("/d/c").expect("create");
    fs.rename("/d", "/e/d").expect("rename dir");
    assert_eq!(fs.readdir("/e/d").expect("readdir"), vec!["c"]);
    assert_eq!(fs.stat("/d").expect_err("moved").errno(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

/// Random appends, overwrites, gaps, truncations and reads by both paths (bytes in place, and
/// aggregates), against a byte vector; snapshots taken along the way never change.
#[test]
fn in_place_appends_and_rebuilds_agree_with_a_byte_vector() {
    let (mut fs, dir) = fs("model");
    fs.create("/m").expect("create");
    let h = fs.open("/m").expect("open");
    let mut model: Vec<u8> = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut held: Vec<(cosh::Agg, Vec<u8>)> = Vec::new();
    for step in 0..400u32 {
        let byte = (step % 250) as u8 + 1;
        match next(10) {
            0..=4 => {
                // Mostly appends, some overwrites and gaps, small and large.
                let len = if next(8) == 0 {
                    next(300_000) + 1
                } else {
                    next(5000) + 1
                };
                let offset = match next(4) {
                    0 => next(model.len() as u64 + 1),
                    1 => model.len() as u64 + next(3000),
                    _ => model.len() as u64,
                };
                let data = vec![byte; len as usize];
                if next(3) == 0 {
                    let a = agg(&mut fs, &data);
                    fs.write(h, offset, a).expect("write");
                } else {
                    fs.write_bytes(h, offset, &data).expect("write_bytes");
                }
                let end = (offset + len) as usize;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[offset as usize..end].copy_from_slice(&data);
            }
            5 => {
                let len = next(model.len() as u64 + 5000);
                fs.ftruncate(h, len).expect("truncate");
                model.resize(len as usize, 0);
            }
            6 | 7 => {
                let off = next(model.len() as u64 + 10);
                let len = next(70_000);
                let got = fs.read_bytes(h, off, len).expect("read_bytes");
                let lo = (off as usize).min(model.len());
                let hi = ((off + len) as usize).min(model.len());
                assert_eq!(got, model[lo..hi], "read_bytes at step {step}");
            }
            _ => {
                // A snapshot of everything, kept until the end.
                if let Some(a) = fs.read(h, 0, u64::MAX).expect("read") {
                    held.push((a, model.clone()));
                }
            }
        }
        assert_eq!(
            fs.stat("/m").expect("stat").size,
            model.len() as u64,
            "size at step {step}"
        );
    }
    assert_eq!(contents(&mut fs, h), model);
    for (a, want) in held {
        let d = fs.domain();
        assert_eq!(
            d.read(a, 0, want.len() as u64).expect("read"),
            want,
            "a snapshot changed"
        );
        d.decref(a).expect("decref");
    }
    fs.close(h).expect("close");
    fs.unlink("/m").expect("unlink");
    assert_holds_nothing(&mut fs);
    let _ = std::fs::remove_dir_all(dir);
}

/// Large aggregates written at chunk boundaries are taken as they are; writes after a read
/// copy the chunk they touch, and the read stays what it was.
#[test]
fn aligned_aggregates_are_adopted_and_shared_chunks_are_copied_on_write() {
    let (mut fs, dir) = fs("adopt");
    fs.create("/big").expect("create");
    let h = fs.open("/big").expect("open");
    const MIB: usize = 1 << 20;
    let mut model: Vec<u8> = (0..3 * MIB + 500).map(|i| (i % 253) as u8).collect();
    let a = agg(&mut fs, &model);
    fs.write(h, 0, a).expect("write");
    assert_eq!(fs.buffers(h).expect("buffers"), 4);
    let before = fs.read(h, 0, u64::MAX).expect("read").expect("bytes");
    // Overwrite the second MiB by aggregate, and a few bytes of the first by bytes.
    let second = vec![7u8; MIB];
    let b = agg(&mut fs, &second);
    fs.write(h, MIB as u64, b).expect("write");
    model[MIB..2 * MIB].copy_from_slice(&second);
    fs.write_bytes(h, 10, b"hello").expect("write_bytes");
    model[10..15].copy_from_slice(b"hello");
    assert_eq!(contents(&mut fs, h), model);
    let d = fs.domain();
    let old = d.read(before, 0, 20).expect("read");
    assert_eq!(old, (0..20).map(|i| (i % 253) as u8).collect::<Vec<_>>());
    d.decref(before).expect("decref");
    // Holes read as zeros; extending by truncate too.
    fs.write_bytes(h, 6 * MIB as u64, b"end")
        .expect("write past the end");
    fs.ftruncate(h, 6 * MIB as u64 + 10).expect("extend");
    model.resize(6 * MIB, 0);
    model.extend_from_slice(b"end\0\0\0\0\0\0\0");
    assert_eq!(contents(&mut fs, h), model);
    assert_eq!(
        fs.read_bytes(h, 4 * MIB as u64, 8).expect("hole"),
        vec![0; 8]
    );
    fs.close(h).expect("close");
    let _ = std::fs::remove_dir_all(dir);
}

/// Far offsets make holes, not work; past the largest file size they are refused.
#[test]
fn far_writes_make_holes_and_huge_ones_are_refused() {
    let (mut fs, dir) = fs("far");
    fs.create("/sparse").expect("create");
    let h = fs.open("/sparse").expect("open");
    fs.write_bytes(h, 10, b"near").expect("write");
    let far = cosh_fs::data::MAX_FILE - 4;
    fs.write_bytes(h, far, b"far!")
        .expect("a write at the very end");
    assert_eq!(
        fs.stat("/sparse").expect("stat").size,
        cosh_fs::data::MAX_FILE
    );
    assert_eq!(fs.buffers(h).expect("buffers"), 2, "holes take no buffers");
    assert_eq!(fs.read_bytes(h, far - 4, 8).expect("read"), b"\0\0\0\0far!");
    assert_eq!(fs.read_bytes(h, 1 << 30, 4).expect("hole"), vec![0; 4]);
    // An aggregate of a range across holes: zeros and the bytes, nothing else made.
    let a = fs.read(h, far - 4, 8).expect("read").expect("bytes");
    assert_eq!(fs.domain().read(a, 0, 8).expect("bytes"), b"\0\0\0\0far!");
    fs.domain().decref(a).expect("decref");
    let e = fs.write_bytes(h, far + 1, b"four").expect_err("too big");
    assert_eq!(e.errno(), 27, "{e}");
    assert_eq!(fs.ftruncate(h, u64::MAX).expect_err("too big").errno(), 27);
    fs.ftruncate(h, 14).expect("shrink");
    assert_eq!(fs.read_bytes(h, 0, 100).expect("read").len(), 14);
    fs.close(h).expect("close");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn small_files_share_arenas_and_handed_out_bytes_never_change() {
    let (mut fs, dir) = fs("arenas");
    let content = |i: usize| vec![(i % 250) as u8 + 1; 3000];
    // Files `name{i}` for `i` in `range`, each with `content(i)`, left open.
    let make = |fs: &mut Fs, name: &str, range: std::ops::Range<usize>, handles: &mut Vec<u64>| {
        for i in range {
            let path = format!("/{name}{i}");
            fs.create(&path).expect("create");
            let h = fs.open(&path).expect("open");
            fs.write_bytes(h, 0, &content(i)).expect("write");
            handles.push(h);
        }
    };
    let mut handles = Vec::new();
    make(&mut fs, "f", 0..200, &mut handles);
    // Two hundred 3,000-byte files are slots of one buffer: one request to the block
    // manager, not two hundred.
    assert_eq!(fs.memory().arenas(), 1);
    assert_eq!(holds(&mut fs), 1);
    // A handed-out file keeps what it said, however its slot is reused afterwards.
    let shown = fs.read(handles[0], 0, 3000).expect("read").expect("bytes");
    fs.write_bytes(handles[0], 0, b"changed").expect("write");
    fs.unlink("/f1").expect("unlink");
    fs.close(handles[1]).expect("close");
    make(&mut fs, "g", 200..260, &mut handles);
    assert_eq!(fs.domain().read(shown, 0, 3000).expect("read"), content(0));
    let mut changed = content(0);
    changed[..7].copy_from_slice(b"changed");
    assert_eq!(contents(&mut fs, handles[0]), changed);
    for (k, &h) in handles.iter().enumerate().skip(2) {
        assert_eq!(contents(&mut fs, h), content(k), "file {k}");
    }
    fs.domain().decref(shown).expect("decref");
    // Every file gone: nothing is held but spare buffers (none from an arena whose slot was
    // handed out).
    for (k, h) in handles.into_iter().enumerate() {
        if k != 1 {
            fs.close(h).expect("close");
        }
    }
    for name in fs.readdir("/").expect("readdir") {
        fs.unlink(&format!("/{name}")).expect("unlink");
    }
    assert_eq!(fs.memory().arenas(), 0);
    assert_holds_nothing(&mut fs);
    let _ = std::fs::remove_dir_all(dir);
}
