//! Links to block managers on other hosts: one TCP connection per direction (the sending side
//! opens it), with TLS (rustls) unless plain TCP was asked for explicitly, and a shared token
//! that the opener presents first. No memory is shared, so a transfer's bytes travel on the
//! stream right after its `Stream` frame: written straight from the source's slots, read
//! straight into the receiver's new buffer.
//!
//! Each connection has an I/O thread with the socket in non-blocking mode, driven by `poll`
//! on the socket and an eventfd the main loop rings when it has something for it; it talks to
//! the main loop over channels (the main loop polls one eventfd for every connection).

use std::collections::VecDeque;
use std::io::{ErrorKind as IoKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use cosh_proto::link::LinkMessage;
use cosh_proto::{HEADER_LEN, MAX_FRAME, Message, decode};
use cosh_sys::eventfd::EventFd;
use cosh_sys::mapping::{Mapping, ReadOnly, ReadWrite};
use rustix::event::{PollFd, PollFlags};

/// Bytes of a source slot to send.
pub(crate) struct BodyPiece {
    pub(crate) map: Arc<Mapping<ReadOnly>>,
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

/// The main loop → an I/O thread.
pub(crate) enum ToIo {
    /// Send a frame, then a transfer's bytes.
    Send {
        frame: Vec<u8>,
        body: Vec<BodyPiece>,
    },
    /// Memory for the transfer whose header came last (`None`: read and drop its bytes).
    Buffer(Option<Mapping<ReadWrite>>),
    /// Close the connection.
    Close,
}

/// An I/O thread → the main loop.
pub(crate) enum FromIo {
    /// A frame other than `Stream`.
    Frame(Message),
    /// A `Stream` header: the thread waits for [`ToIo::Buffer`].
    Stream(LinkMessage),
    /// The bytes of the last `Stream` are in the buffer lent (or were dropped).
    Filled(Option<Mapping<ReadWrite>>, Result<(), String>),
    /// The connection ended.
    Closed(String),
}

/// The socket, with or without TLS.
pub(crate) enum Transport {
    Plain(TcpStream),
    Tls(Box<rustls::Connection>, TcpStream),
}

fn tls_error(e: rustls::Error) -> std::io::Error {
    std::io::Error::other(format!("TLS: {e}"))
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) | Transport::Tls(_, s) => s,
        }
    }

    /// Reads plaintext: `Ok(0)` at the end of the stream, `WouldBlock` when nothing waits.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(c, s) => loop {
                match c.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == IoKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if c.read_tls(s)? == 0 {
                    return Ok(0);
                }
                c.process_new_packets().map_err(tls_error)?;
            },
        }
    }

    /// Writes plaintext; returns how much was taken (`WouldBlock` when nothing).
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(c, s) => {
                let n = c.writer().write(buf)?;
                while c.wants_write() {
                    match c.write_tls(s) {
                        Ok(_) => {}
                        Err(e) if e.kind() == IoKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                if n == 0 && !buf.is_empty() {
                    return Err(IoKind::WouldBlock.into());
                }
                Ok(n)
            }
        }
    }

    /// Sends what TLS holds back; whether some remains.
    fn flush(&mut self) -> std::io::Result<bool> {
        if let Transport::Tls(c, s) = self {
            while c.wants_write() {
                match c.write_tls(s) {
                    Ok(_) => {}
                    Err(e) if e.kind() == IoKind::WouldBlock => return Ok(true),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(false)
    }
}

/// One connection's I/O thread, as the main loop holds it.
pub(crate) struct RemoteIo {
    tx: Sender<ToIo>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl RemoteIo {
    /// Starts the thread for `transport`; what it hears goes to `out` as `(key, FromIo)`, and
    /// `bell` is rung.
    pub(crate) fn start(
        key: u64,
        transport: Transport,
        out: Sender<(u64, FromIo)>,
        bell: Arc<EventFd>,
    ) -> Result<RemoteIo, String> {
        transport
            .tcp()
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let _ = transport.tcp().set_nodelay(true);
        // A peer that vanishes (its host down, the network cut) fails the link within seconds
        // rather than after TCP's retransmissions give up: unacknowledged data for 10 s, or an
        // idle connection whose probes go unanswered.
        let fd = transport.tcp();
        let _ = rustix::net::sockopt::set_tcp_user_timeout(fd, 10_000);
        let _ = rustix::net::sockopt::set_socket_keepalive(fd, true);
        let _ = rustix::net::sockopt::set_tcp_keepidle(fd, std::time::Duration::from_secs(10));
        let _ = rustix::net::sockopt::set_tcp_keepintvl(fd, std::time::Duration::from_secs(2));
        let _ = rustix::net::sockopt::set_tcp_keepcnt(fd, 3);
        let wake = Arc::new(EventFd::new().map_err(|e| e.to_string())?);
        let (tx, rx) = channel();
        let w = Arc::clone(&wake);
        let thread = std::thread::Builder::new()
            .name("cosh-link".into())
            .spawn(move || {
                let why = Io::new(transport, rx, &w, key, &out, &bell).run();
                let _ = out.send((key, FromIo::Closed(why)));
                let _ = bell.ring();
            })
            .map_err(|e| e.to_string())?;
        Ok(RemoteIo {
            tx,
            wake,
            thread: Some(thread),
        })
    }

    /// Hands the thread something to do; `false` if it is gone.
    pub(crate) fn send(&self, m: ToIo) -> bool {
        self.tx.send(m).is_ok() && self.wake.ring().is_ok()
    }
}

impl Drop for RemoteIo {
    fn drop(&mut self) {
        // The thread sends what it has, closes and ends on its own: the main loop does not
        // wait for the other end.
        let _ = self.send(ToIo::Close);
        drop(self.thread.take());
    }
}

/// Something being sent.
struct Outgoing {
    frame: Vec<u8>,
    body: Vec<BodyPiece>,
    /// Bytes of frame then body already sent.
    sent: usize,
}

impl Outgoing {
    /// The next bytes to send, if any.
    fn next(&self) -> Option<&[u8]> {
        if self.sent < self.frame.len() {
            return Some(&self.frame[self.sent..]);
        }
        let mut at = self.frame.len();
        for p in &self.body {
            if self.sent < at + p.len {
                let from = p.offset + (self.sent - at);
                return p.map.as_slice().get(from..p.offset + p.len);
            }
            at += p.len;
        }
        None
    }
}

/// What the reading side is doing.
enum In {
    /// A frame: its bytes so far.
    Frame(Vec<u8>),
    /// A `Stream` header went to the main loop: no reading until its buffer comes.
    Waiting(u64),
    /// Reading a transfer's bytes into `to` (or dropping them).
    Body {
        to: Option<Mapping<ReadWrite>>,
        len: usize,
        at: usize,
    },
}

struct Io<'a> {
    transport: Transport,
    rx: Receiver<ToIo>,
    wake: &'a EventFd,
    key: u64,
    out: &'a Sender<(u64, FromIo)>,
    bell: &'a EventFd,
    sending: VecDeque<Outgoing>,
    reading: In,
    scratch: Vec<u8>,
}

impl<'a> Io<'a> {
    fn new(
        transport: Transport,
        rx: Receiver<ToIo>,
        wake: &'a EventFd,
        key: u64,
        out: &'a Sender<(u64, FromIo)>,
        bell: &'a EventFd,
    ) -> Self {
        Io {
            transport,
            rx,
            wake,
            key,
            out,
            bell,
            sending: VecDeque::new(),
            reading: In::Frame(Vec::with_capacity(HEADER_LEN)),
            scratch: vec![0; 256 * 1024],
        }
    }

    fn tell(&self, m: FromIo) -> Result<(), String> {
        self.out
            .send((self.key, m))
            .map_err(|_| "the block manager stopped".to_string())?;
        self.bell.ring().map_err(|e| e.to_string())
    }

    /// Runs until the connection ends; returns why.
    fn run(mut self) -> String {
        loop {
            let _ = self.wake.take();
            loop {
                match self.rx.try_recv() {
                    Ok(ToIo::Send { frame, body }) => self.sending.push_back(Outgoing {
                        frame,
                        body,
                        sent: 0,
                    }),
                    Ok(ToIo::Buffer(to)) => {
                        let In::Waiting(len) = self.reading else {
                            return "a buffer nobody asked for".into();
                        };
                        let Ok(len) = usize::try_from(len) else {
                            return "a transfer beyond the address space".into();
                        };
                        if to.as_ref().is_some_and(|m| m.len() < len) {
                            return "a buffer too short".into();
                        }
                        if len == 0 {
                            self.reading = In::Frame(Vec::with_capacity(HEADER_LEN));
                            if let Err(e) = self.tell(FromIo::Filled(to, Ok(()))) {
                                return e;
                            }
                        } else {
                            self.reading = In::Body { to, len, at: 0 };
                        }
                    }
                    Ok(ToIo::Close) | Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        self.linger();
                        return "closed".into();
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                }
            }
            if let Err(e) = self.write_some() {
                return e;
            }
            match self.read_some() {
                Ok(true) => {}
                Ok(false) => return "the other end closed the connection".into(),
                Err(e) => return e,
            }
            let pending = match self.transport.flush() {
                Ok(p) => p,
                Err(e) => return e.to_string(),
            };
            let mut flags = PollFlags::empty();
            if !matches!(self.reading, In::Waiting(_)) {
                flags |= PollFlags::IN;
            }
            if pending || !self.sending.is_empty() {
                flags |= PollFlags::OUT;
            }
            let mut fds = [
                PollFd::new(self.transport.tcp(), flags),
                PollFd::new(self.wake, PollFlags::IN),
            ];
            if let Err(e) = rustix::event::poll(&mut fds, None)
                && e != rustix::io::Errno::INTR
            {
                return e.to_string();
            }
        }
    }

    /// Before closing: sends what is queued, says goodbye, and reads until the other end
    /// closes too (a second at most), so that a last frame (a refusal) is read rather than
    /// lost to a reset.
    fn linger(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let mut said_goodbye = false;
        while std::time::Instant::now() < deadline {
            if self.write_some().is_err() {
                return;
            }
            let pending = match self.transport.flush() {
                Ok(p) => p,
                Err(_) => return,
            };
            if self.sending.is_empty() && !pending && !said_goodbye {
                said_goodbye = true;
                if let Transport::Tls(c, _) = &mut self.transport {
                    c.send_close_notify();
                    let _ = self.transport.flush();
                }
                let _ = self.transport.tcp().shutdown(std::net::Shutdown::Write);
            }
            match self.transport.read(&mut self.scratch) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == IoKind::WouldBlock => {}
                Err(_) => return,
            }
            let mut fds = [PollFd::new(
                self.transport.tcp(),
                PollFlags::IN | PollFlags::OUT,
            )];
            let wait = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 10_000_000,
            };
            let _ = rustix::event::poll(&mut fds, Some(&wait));
        }
    }

    fn write_some(&mut self) -> Result<(), String> {
        while let Some(o) = self.sending.front_mut() {
            let Some(bytes) = o.next() else {
                self.sending.pop_front();
                continue;
            };
            match self.transport.write(bytes) {
                Ok(n) => o.sent += n,
                Err(e) if e.kind() == IoKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == IoKind::Interrupted => {}
                Err(e) => return Err(format!("sending: {e}")),
            }
        }
        Ok(())
    }

    /// Reads what is there; `Ok(false)` at the end of the stream.
    fn read_some(&mut self) -> Result<bool, String> {
        loop {
            let n = match &mut self.reading {
                In::Waiting(_) => return Ok(true),
                In::Frame(buf) => {
                    let want = if buf.len() < HEADER_LEN {
                        HEADER_LEN
                    } else {
                        let len = u32::from_le_bytes([buf[6], buf[7], buf[8], buf[9]]) as usize;
                        if HEADER_LEN + len > MAX_FRAME {
                            return Err(format!("a frame of {len} bytes"));
                        }
                        HEADER_LEN + len
                    };
                    let have = buf.len();
                    buf.resize(want, 0);
                    let got = self.transport.read(&mut buf[have..]);
                    let n = match &got {
                        Ok(n) => *n,
                        Err(_) => 0,
                    };
                    buf.truncate(have + n);
                    got
                }
                In::Body { to, len, at } => {
                    let end = (*at + self.scratch.len()).min(*len);
                    let got = match to {
                        Some(m) => self.transport.read(&mut m.as_mut_slice()[*at..end]),
                        None => self.transport.read(&mut self.scratch[..end - *at]),
                    };
                    if let Ok(n) = got {
                        *at += n;
                    }
                    got
                }
            };
            match n {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(e) if e.kind() == IoKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == IoKind::Interrupted => continue,
                Err(e) => return Err(format!("receiving: {e}")),
            }
            match &self.reading {
                In::Frame(buf) if buf.len() >= HEADER_LEN => {
                    let len = u32::from_le_bytes([buf[6], buf[7], buf[8], buf[9]]) as usize;
                    if buf.len() == HEADER_LEN + len {
                        let m = decode(buf).map_err(|e| format!("protocol violation: {e}"))?;
                        self.reading = In::Frame(Vec::with_capacity(HEADER_LEN));
                        match m {
                            Message::Link(s @ LinkMessage::Stream { len, .. }) => {
                                self.reading = In::Waiting(len);
                                self.tell(FromIo::Stream(s))?;
                            }
                            other => self.tell(FromIo::Frame(other))?,
                        }
                    }
                }
                In::Body { len, at, .. } if at == len => self.body_done()?,
                _ => {}
            }
        }
    }

    fn body_done(&mut self) -> Result<(), String> {
        let done = std::mem::replace(&mut self.reading, In::Frame(Vec::with_capacity(HEADER_LEN)));
        if let In::Body { to, .. } = done {
            self.tell(FromIo::Filled(to, Ok(())))?;
        }
        Ok(())
    }
}
