//! SOCK_SEQPACKET Unix sockets: one message per request, descriptors passed with SCM_RIGHTS,
//! the peer's pid and uid from SO_PEERCRED.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

use crate::error::{Error, Result, sys};

/// The most descriptors one message carries.
pub const MAX_FDS: usize = 16;

/// A message received: its length in the caller's buffer and the descriptors attached.
#[derive(Debug)]
pub struct Message {
    /// Bytes received.
    pub len: usize,
    /// Descriptors attached (close-on-exec).
    pub fds: Vec<OwnedFd>,
}

/// The credentials of the process at the other end, as the kernel recorded them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Process id.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// A connected SOCK_SEQPACKET Unix socket.
#[derive(Debug)]
pub struct SeqPacket {
    fd: OwnedFd,
}

fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// A new, unconnected SOCK_SEQPACKET Unix socket.
fn seqpacket_socket() -> Result<OwnedFd> {
    sys(
        "socket",
        rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        ),
    )
}

fn unix_address(path: &Path) -> Result<SocketAddrUnix> {
    sys("socket address", SocketAddrUnix::new(path))
}

impl SeqPacket {
    /// A connected pair, for a parent and the child it spawns, or for tests.
    pub fn pair() -> Result<(SeqPacket, SeqPacket)> {
        let (a, b) = sys(
            "socketpair",
            rustix::net::socketpair(
                AddressFamily::UNIX,
                SocketType::SEQPACKET,
                SocketFlags::CLOEXEC,
                None,
            ),
        )?;
        Ok((SeqPacket { fd: a }, SeqPacket { fd: b }))
    }

    /// Connects to a listening socket at `path`.
    pub fn connect(path: &Path) -> Result<SeqPacket> {
        let fd = seqpacket_socket()?;
        let address = unix_address(path)?;
        sys("connect", retry(|| rustix::net::connect(&fd, &address)))?;
        Ok(SeqPacket { fd })
    }

    /// Takes over a descriptor that is a connected SOCK_SEQPACKET socket (inherited from a
    /// parent, say).
    pub fn from_fd(fd: OwnedFd) -> Result<SeqPacket> {
        let kind = sys(
            "getsockopt(SO_TYPE)",
            rustix::net::sockopt::socket_type(&fd),
        )?;
        if kind != SocketType::SEQPACKET {
            return Err(Error::BadDescriptor {
                reason: format!("expected a SOCK_SEQPACKET socket, got {kind:?}"),
            });
        }
        Ok(SeqPacket { fd })
    }

    /// Switches the socket between blocking and non-blocking mode. In non-blocking mode
    /// [`SeqPacket::send`] and [`SeqPacket::recv`] fail with `EAGAIN`
    /// ([`Error::would_block`]) instead of waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<()> {
        sys(
            "ioctl(FIONBIO)",
            rustix::io::ioctl_fionbio(&self.fd, nonblocking),
        )
    }

    /// Sends one message with up to [`MAX_FDS`] descriptors attached. Never raises SIGPIPE: a
    /// closed peer is an error.
    pub fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        if fds.len() > MAX_FDS {
            return Err(Error::TooManyDescriptors { max: MAX_FDS });
        }
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(Error::TooManyDescriptors { max: MAX_FDS });
        }
        let sent = sys(
            "sendmsg",
            retry(|| {
                rustix::net::sendmsg(
                    &self.fd,
                    &[IoSlice::new(bytes)],
                    &mut control,
                    SendFlags::NOSIGNAL,
                )
            }),
        )?;
        if sent != bytes.len() {
            return Err(Error::Sys {
                op: "sendmsg (short write)",
                errno: Errno::MSGSIZE,
            });
        }
        Ok(())
    }

    /// Receives one message into `buf`, blocking until one arrives. `None` means the peer
    /// closed the connection (no message of this protocol is empty). A message longer than
    /// `buf`, or carrying more than [`MAX_FDS`] descriptors, is an error, never a silent cut.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<Message>> {
        self.recv_with(buf, RecvFlags::CMSG_CLOEXEC)
    }

    /// Like [`SeqPacket::recv`], without waiting: `Ok(None)` still means the peer closed,
    /// and an empty queue is `EAGAIN` ([`Error::would_block`]), whatever the socket's mode.
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<Option<Message>> {
        self.recv_with(buf, RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT)
    }

    fn recv_with(&self, buf: &mut [u8], flags: RecvFlags) -> Result<Option<Message>> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let capacity = buf.len();
        let got = sys(
            "recvmsg",
            retry(|| {
                rustix::net::recvmsg(&self.fd, &mut [IoSliceMut::new(buf)], &mut control, flags)
            }),
        )?;
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if got.flags.contains(ReturnFlags::CTRUNC) {
            return Err(Error::TooManyDescriptors { max: MAX_FDS });
        }
        if got.flags.contains(ReturnFlags::TRUNC) {
            return Err(Error::Truncated { capacity });
        }
        if got.bytes == 0 && fds.is_empty() {
            return Ok(None);
        }
        Ok(Some(Message {
            len: got.bytes,
            fds,
        }))
    }

    /// The credentials of the process at the other end.
    pub fn peer_credentials(&self) -> Result<PeerCredentials> {
        let cred = sys(
            "getsockopt(SO_PEERCRED)",
            rustix::net::sockopt::socket_peercred(&self.fd),
        )?;
        Ok(PeerCredentials {
            pid: cred.pid.as_raw_nonzero().get(),
            uid: cred.uid.as_raw(),
            gid: cred.gid.as_raw(),
        })
    }
}

impl AsFd for SeqPacket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A listening SOCK_SEQPACKET socket bound to a path; the path is removed when it is dropped.
#[derive(Debug)]
pub struct SeqPacketListener {
    fd: OwnedFd,
    path: PathBuf,
    /// With [`SeqPacketListener::bind_exclusive`]: the lock that makes this listener the only
    /// owner of the path, held until drop (after the socket file is removed).
    lock: Option<OwnedFd>,
}

impl SeqPacketListener {
    /// Binds and listens at `path`. Fails with `EADDRINUSE` if something is bound there.
    pub fn bind(path: &Path) -> Result<SeqPacketListener> {
        let fd = seqpacket_socket()?;
        let address = unix_address(path)?;
        sys("bind", rustix::net::bind(&fd, &address))?;
        sys("listen", rustix::net::listen(&fd, 128))?;
        Ok(SeqPacketListener {
            fd,
            path: path.to_path_buf(),
            lock: None,
        })
    }

    /// Binds at `path` as its only owner. An exclusive lock on `path` + `.lock` (kept for the
    /// listener's life) decides between servers starting at once; the winner replaces a stale
    /// socket left by a server that crashed, and a loser gets [`Error::AlreadyServing`].
    pub fn bind_exclusive(path: &Path) -> Result<SeqPacketListener> {
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock = sys(
            "open lock file",
            rustix::fs::open(
                Path::new(&lock_path),
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CREATE | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::from_raw_mode(0o600),
            ),
        )?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                return Err(Error::AlreadyServing {
                    path: path.to_path_buf(),
                });
            }
            Err(errno) => return Err(Error::Sys { op: "flock", errno }),
        }
        // We own the path now: whatever socket file is there was left by a dead server.
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Sys {
                    op: "remove stale socket",
                    errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
                });
            }
        }
        let mut listener = SeqPacketListener::bind(path)?;
        listener.lock = Some(lock);
        Ok(listener)
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> Result<SeqPacket> {
        let fd = sys(
            "accept",
            retry(|| rustix::net::accept_with(&self.fd, SocketFlags::CLOEXEC)),
        )?;
        Ok(SeqPacket { fd })
    }

    /// Where the socket is bound.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsFd for SeqPacketListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for SeqPacketListener {
    fn drop(&mut self) {
        // Removed while the lock (if any) is still held, so no new owner's socket is removed.
        let _ = std::fs::remove_file(&self.path);
        drop(self.lock.take());
    }
}
