//! The runtime directory rules and single-owner socket paths.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use cosh_sys::Error;
use cosh_sys::runtime::{ensure_runtime_dir, runtime_dir_from};
use cosh_sys::socket::{SeqPacket, SeqPacketListener};

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
    let pairs: Vec<(String, OsString)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

#[test]
fn the_runtime_directory_follows_the_documented_order() {
    let both = env(&[
        ("COSH_RUNTIME_DIR", "/x/cosh"),
        ("XDG_RUNTIME_DIR", "/run/user/1000"),
    ]);
    assert_eq!(runtime_dir_from(&both, 1000), PathBuf::from("/x/cosh"));
    let xdg = env(&[("XDG_RUNTIME_DIR", "/run/user/1000")]);
    assert_eq!(
        runtime_dir_from(&xdg, 1000),
        PathBuf::from("/run/user/1000/cosh")
    );
    let empty = env(&[("COSH_RUNTIME_DIR", ""), ("XDG_RUNTIME_DIR", "")]);
    assert_eq!(runtime_dir_from(&empty, 0), PathBuf::from("/run/cosh"));
    assert_eq!(
        runtime_dir_from(&empty, 1000),
        PathBuf::from("/tmp/cosh-1000")
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cosh-sys-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn the_runtime_directory_is_created_private_and_squatters_are_refused() {
    let dir = scratch("rt");
    ensure_runtime_dir(&dir).expect("created");
    assert_eq!(
        std::fs::metadata(&dir).expect("meta").permissions().mode() & 0o777,
        0o700
    );
    ensure_runtime_dir(&dir).expect("an existing private directory is fine");

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let e = ensure_runtime_dir(&dir).expect_err("world-writable");
    assert!(
        matches!(e, Error::UnsafeRuntimeDir { .. }) && e.to_string().contains("chmod go-w"),
        "{e}"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");

    let link = scratch("rt-link");
    std::os::unix::fs::symlink(&dir, &link).expect("symlink");
    assert!(
        ensure_runtime_dir(&link)
            .expect_err("symlink")
            .to_string()
            .contains("symbolic link")
    );

    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&dir, Some(65534), None).expect("chown");
        let e = ensure_runtime_dir(&dir).expect_err("another owner");
        assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
    }
    let _ = std::fs::remove_file(&link);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn only_one_server_owns_a_socket_path_and_stale_sockets_are_replaced() {
    let dir = scratch("excl");
    ensure_runtime_dir(&dir).expect("dir");
    let path = dir.join("pool0.sock");

    // A socket file left by a server that died: bound, then closed without removing it.
    {
        let fd = rustix::net::socket(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            None,
        )
        .expect("socket");
        let address = rustix::net::SocketAddrUnix::new(&path).expect("address");
        rustix::net::bind(&fd, &address).expect("bind");
        rustix::net::listen(&fd, 1).expect("listen");
    }
    assert!(path.exists());
    assert!(
        SeqPacket::connect(&path).is_err(),
        "nobody listens behind a stale socket"
    );

    let first = SeqPacketListener::bind_exclusive(&path).expect("replaces the stale socket");
    let e = SeqPacketListener::bind_exclusive(&path).expect_err("a second server");
    assert!(matches!(e, Error::AlreadyServing { .. }), "{e}");
    assert!(e.to_string().contains("COSH_RUNTIME_DIR"), "{e}");
    let client = SeqPacket::connect(&path).expect("the first server still serves");
    drop(client);
    drop(first);
    assert!(!path.exists(), "a clean shutdown removes the socket");
    let again = SeqPacketListener::bind_exclusive(&path).expect("free again");
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}
