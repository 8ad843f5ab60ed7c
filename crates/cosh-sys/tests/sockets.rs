//! SOCK_SEQPACKET sockets: messages keep their boundaries, descriptors travel with them, the
//! peer's credentials are the kernel's, and nothing is ever silently cut.

use cosh_sys::Error;
use cosh_sys::mapping::Prefault;
use cosh_sys::memfd::Memfd;
use cosh_sys::socket::{MAX_FDS, SeqPacket, SeqPacketListener};

#[test]
fn a_buffer_travels_by_descriptor_and_shows_the_same_bytes() {
    let (a, b) = SeqPacket::pair().expect("pair");
    let m = Memfd::create("travel", 4096).expect("create");
    m.map_write(Prefault::Now).expect("map").as_mut_slice()[..5].copy_from_slice(b"hello");
    a.send(b"buffer 1", &[m.as_fd()]).expect("send");
    let mut buf = [0u8; 64];
    let msg = b.recv(&mut buf).expect("recv").expect("a message");
    assert_eq!(&buf[..msg.len], b"buffer 1");
    assert_eq!(msg.fds.len(), 1);
    let flags = rustix::io::fcntl_getfd(&msg.fds[0]).expect("getfd");
    assert!(
        flags.contains(rustix::io::FdFlags::CLOEXEC),
        "received descriptors are close-on-exec"
    );
    let received = Memfd::from_fd(msg.fds.into_iter().next().expect("fd")).expect("a buffer");
    assert_eq!(
        &received.map_read(Prefault::Now).expect("map").as_slice()[..5],
        b"hello"
    );
}

#[test]
fn message_boundaries_hold_and_close_is_seen() {
    let (a, b) = SeqPacket::pair().expect("pair");
    a.send(b"one", &[]).expect("send");
    a.send(b"two!", &[]).expect("send");
    let mut buf = [0u8; 16];
    assert_eq!(b.recv(&mut buf).expect("recv").expect("message").len, 3);
    assert_eq!(b.recv(&mut buf).expect("recv").expect("message").len, 4);
    drop(a);
    assert!(b.recv(&mut buf).expect("recv").is_none(), "the peer closed");
    let (c, d) = SeqPacket::pair().expect("pair");
    drop(d);
    assert!(
        c.send(b"anyone?", &[]).is_err(),
        "a closed peer is an error, not SIGPIPE"
    );
}

#[test]
fn oversized_messages_and_descriptor_floods_are_errors() {
    let (a, b) = SeqPacket::pair().expect("pair");
    a.send(&[1u8; 100], &[]).expect("send");
    let mut small = [0u8; 10];
    assert!(matches!(
        b.recv(&mut small),
        Err(Error::Truncated { capacity: 10 })
    ));
    let m = Memfd::create("many", 0).expect("create");
    let too_many: Vec<_> = (0..=MAX_FDS).map(|_| m.as_fd()).collect();
    assert!(matches!(
        a.send(b"x", &too_many),
        Err(Error::TooManyDescriptors { .. })
    ));
    let just_enough: Vec<_> = (0..MAX_FDS).map(|_| m.as_fd()).collect();
    a.send(b"x", &just_enough).expect("send");
    let mut buf = [0u8; 4];
    assert_eq!(
        b.recv(&mut buf).expect("recv").expect("message").fds.len(),
        MAX_FDS
    );
}

#[test]
fn peer_credentials_come_from_the_kernel() {
    let (a, _b) = SeqPacket::pair().expect("pair");
    let cred = a.peer_credentials().expect("credentials");
    assert_eq!(cred.pid, rustix::process::getpid().as_raw_nonzero().get());
    assert_eq!(cred.uid, rustix::process::getuid().as_raw());
}

#[test]
fn a_listener_accepts_connections_and_removes_its_path() {
    let dir = std::env::temp_dir().join(format!("cosh-sys-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("socket");
    let listener = SeqPacketListener::bind(&path).expect("bind");
    let second = SeqPacketListener::bind(&path).expect_err("a second listener on the same path");
    assert_eq!(second.errno(), Some(rustix::io::Errno::ADDRINUSE));
    let client = SeqPacket::connect(&path).expect("connect");
    let server = listener.accept().expect("accept");
    client.send(b"hi", &[]).expect("send");
    let mut buf = [0u8; 8];
    assert_eq!(
        server.recv(&mut buf).expect("recv").expect("message").len,
        2
    );
    assert_eq!(
        server.peer_credentials().expect("cred").pid,
        std::process::id() as i32
    );
    drop(listener);
    assert!(
        !path.exists(),
        "the socket path is removed with the listener"
    );
    let _ = std::fs::remove_dir(&dir);
}
