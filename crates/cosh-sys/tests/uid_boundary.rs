//! The trust model at the uid boundary (DESIGN §3), checked with a real child process running
//! as another, non-root uid: a read-only descriptor of a buffer chmodded 0600 cannot be
//! reopened read/write through `/proc/self/fd` nor mapped writable, while a memfd left at its
//! default mode can; and a write seal holds even for a read/write descriptor.
//!
//! The child is this test binary run again (as uid 65534, from a copy in a world-readable
//! folder) with `--ignored --exact child_as_another_uid`; it gets its descriptors over a
//! socket on its standard input and prints what the kernel let it do.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use cosh_sys::mapping::Prefault;
use cosh_sys::memfd::Memfd;
use cosh_sys::socket::SeqPacket;
use rustix::fs::{MemfdFlags, Mode, OFlags};

const CHILD_UID: u32 = 65534;

fn outcome<T>(r: rustix::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(rustix::io::Errno::ACCESS) => "EACCES".into(),
        Err(rustix::io::Errno::PERM) => "EPERM".into(),
        Err(e) => format!("errno {}", e.raw_os_error()),
    }
}

fn reopen(fd: &OwnedFd, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd));
    rustix::fs::open(path.as_str(), flags | OFlags::CLOEXEC, Mode::empty())
}

/// The child's side; does nothing unless started by the parent test.
#[test]
#[ignore = "run by uid_boundary_holds_for_another_uid as another uid"]
#[allow(
    clippy::print_stdout,
    reason = "standard output is how the child reports to the parent"
)]
fn child_as_another_uid() {
    if std::env::var_os("COSH_UID_CHILD").is_none() {
        return;
    }
    let socket = SeqPacket::from_fd(rustix::io::dup(std::io::stdin().as_fd()).expect("dup stdin"))
        .expect("socket");
    let mut buf = [0u8; 16];
    let fds = socket.recv(&mut buf).expect("recv").expect("message").fds;
    let [private_ro, default_ro, sealed_rw]: [OwnedFd; 3] =
        fds.try_into().expect("three descriptors");
    let mut results = vec![format!("uid={}", rustix::process::getuid().as_raw())];
    results.push(format!(
        "private_reopen_rw={}",
        outcome(reopen(&private_ro, OFlags::RDWR))
    ));
    let private = Memfd::from_fd(private_ro).expect("a buffer");
    let map_write = private
        .map_write(Prefault::Now)
        .map(|_| ())
        .map_err(|e| e.errno().unwrap_or(rustix::io::Errno::IO));
    results.push(format!("private_map_write={}", outcome(map_write)));
    let read = private.map_read(Prefault::Now).expect("map read");
    results.push(format!(
        "private_read={}",
        String::from_utf8_lossy(&read.as_slice()[..6])
    ));
    results.push(format!(
        "default_reopen_rw={}",
        outcome(reopen(&default_ro, OFlags::RDWR))
    ));
    results.push(format!(
        "sealed_pwrite={}",
        outcome(rustix::io::pwrite(&sealed_rw, b"x", 0))
    ));
    results.push(format!(
        "sealed_truncate={}",
        outcome(rustix::fs::ftruncate(&sealed_rw, 0))
    ));
    println!("RESULT {}", results.join(" "));
}

#[test]
fn uid_boundary_holds_for_another_uid() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: switching to uid {CHILD_UID} needs root");
        return;
    }
    // Buffers as the block manager makes them: private (0600), then read-only descriptors.
    let private = Memfd::create("private", 4096).expect("create");
    private
        .map_write(Prefault::Now)
        .expect("map")
        .as_mut_slice()[..6]
        .copy_from_slice(b"secret");
    let private_ro = private.reopen_read_only().expect("reopen");
    // A memfd left at its default mode, for contrast.
    let default = rustix::fs::memfd_create("default", MemfdFlags::CLOEXEC).expect("memfd");
    rustix::fs::ftruncate(&default, 4096).expect("size");
    let default_ro = reopen(&default, OFlags::RDONLY).expect("reopen");
    // A sealed buffer handed out with a read/write descriptor.
    let sealed = Memfd::create("sealed", 4096).expect("create");
    sealed.seal_write().expect("seal");

    // Run a copy of this binary from a folder any uid can reach (not $TMPDIR, which may be
    // private).
    let dir = std::path::Path::new("/tmp").join(format!("cosh-uid-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let exe = dir.join("child");
    std::fs::copy(std::env::current_exe().expect("exe"), &exe).expect("copy");
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");

    let (ours, theirs) = SeqPacket::pair().expect("pair");
    let theirs: OwnedFd = rustix::io::dup(theirs.as_fd()).expect("dup");
    let mut child = Command::new(&exe)
        .args([
            "--ignored",
            "--exact",
            "child_as_another_uid",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("COSH_UID_CHILD", "1")
        .current_dir(&dir)
        .uid(CHILD_UID)
        .gid(CHILD_UID)
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child as another uid");
    ours.send(
        b"fds",
        &[private_ro.as_fd(), default_ro.as_fd(), sealed.as_fd()],
    )
    .expect("send");
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    let status = child.wait().expect("wait");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "child failed: {out}");
    let line = out
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no result from the child: {out}"));
    eprintln!("child as another uid: {line}");
    let expect = [
        format!("uid={CHILD_UID}"),
        "private_reopen_rw=EACCES".into(),
        "private_map_write=EACCES".into(),
        "private_read=secret".into(),
        "default_reopen_rw=ok".into(),
        "sealed_pwrite=EPERM".into(),
        "sealed_truncate=EPERM".into(),
    ];
    for e in expect {
        assert!(line.split(' ').any(|f| f == e), "expected {e} in {line}");
    }
}
