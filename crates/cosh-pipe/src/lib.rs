//! Zero-copy pipes (paper §5): a producer domain hands a consumer domain aggregates by strong
//! move, in order. The pipe owns nothing but the two ends' bookkeeping: the bytes stay in the
//! aggregates, which move (by reference where the block manager can, else by copy) from the
//! producer to the consumer. Pipes work between any two pools: a domain id names its pool.
//!
//! **Flow control** (the paper's pipe lacked it): the consumer grants the producer credit for
//! a window of messages and bytes ([`Window`]), and returns credit as it consumes. A producer
//! out of credit waits for some, so a stalled consumer bounds the producer's memory: at most
//! one window of data is ever in flight. Credits travel as small weak moves from the consumer
//! to the producer (the first one, at open, grants the whole window; credit left over from an
//! earlier pipe between the same two domains is ignored); a message of zero bytes marks the
//! end of the stream.
//!
//! [`PipeWriter::send`] and [`PipeReader::recv`] give and take aggregates; `PipeWriter` is also
//! a `std::io::Write` and `PipeReader` a `std::io::Read`, adapters for code that has byte
//! buffers: writes are coalesced into aggregates of [`PipeWriter::chunk`] bytes (one copy in),
//! reads copy out of the aggregates received (one copy out).
//!
//! ```no_run
//! use cosh::Domain;
//! use cosh_pipe::{PipeReader, PipeWriter, Window};
//! use std::io::{Read, Write};
//!
//! // Two processes; here two connections, each the other's peer.
//! let producer = Domain::connect("producer")?;
//! let consumer = Domain::connect("consumer")?;
//! let (p, c) = (producer.id(), consumer.id());
//! let mut reader = PipeReader::open(consumer, p, Window::default())?;
//! let mut writer = PipeWriter::open(producer, c)?;
//! writer.write_all(b"hello")?;
//! writer.finish()?;
//! let mut text = String::new();
//! reader.read_to_string(&mut text)?;
//! assert_eq!(text, "hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

use std::time::Duration;

use cosh::{Agg, Domain, DomainId, Mode, Strength, TransferFlags};

/// What a pipe operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The aggregate layer failed (the peer is gone, the pool is full, ...).
    #[error(transparent)]
    Cosh(#[from] cosh::Error),
    /// The peer broke the pipe's protocol.
    #[error("pipe protocol: {0}")]
    Protocol(String),
    /// The stream already ended, or the other end closed it or went away.
    #[error("the pipe is closed")]
    Closed,
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Closed => std::io::ErrorKind::BrokenPipe,
            Error::Cosh(c) if c.kind() == cosh::ErrorKind::UnknownDomain => {
                std::io::ErrorKind::BrokenPipe
            }
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How much data may be in flight from producer to consumer: at most `messages` aggregates
/// and `bytes` bytes (whichever runs out first; a message larger than the whole byte window
/// still goes, alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Aggregates in flight.
    pub messages: u64,
    /// Bytes in flight.
    pub bytes: u64,
}

impl Default for Window {
    /// 16 messages, 64 MiB.
    fn default() -> Self {
        Window {
            messages: 16,
            bytes: 64 << 20,
        }
    }
}

/// An aggregate's length, from its pieces (known to the library without asking the block
/// manager for a whole buffer it allocated or received).
fn len_of(domain: &mut Domain, agg: Agg) -> Result<u64> {
    Ok(domain.read_pieces(agg, 0)?.iter().map(|p| p.0.len).sum())
}

/// A credit message: its kind, then messages and bytes granted, little-endian u64s.
const CREDIT_LEN: u64 = 24;
/// A reader opened: the whole window. Credit messages before it are stale (left over from an
/// earlier pipe between the same two domains) and ignored.
const OPEN: u64 = 1;
/// Credit returned as the reader consumed.
const MORE: u64 = 2;
/// The reader closed its end.
const CLOSE: u64 = 3;

fn strong() -> TransferFlags {
    TransferFlags::default()
}

fn weak() -> TransferFlags {
    TransferFlags {
        strength: Strength::Weak,
        ..TransferFlags::default()
    }
}

/// What a producer may still send one consumer, and that consumer's window.
#[derive(Clone, Copy, Debug, Default)]
struct Credit {
    /// Credit left: messages and bytes.
    left: (u64, u64),
    /// The consumer's window, from its first grant (zero until then).
    window: (u64, u64),
}

impl Credit {
    /// Whether a message of `len` bytes may go: one message of credit and its bytes; one
    /// larger than the whole byte window goes alone, once everything before it was consumed.
    fn allows(&self, len: u64) -> bool {
        let bytes = self.left.1 >= len
            || (len > self.window.1 && self.window.1 > 0 && self.left.1 == self.window.1);
        self.left.0 > 0 && bytes
    }

    fn spend(&mut self, len: u64) {
        self.left.0 -= 1;
        self.left.1 = self.left.1.saturating_sub(len);
    }

    /// Takes the credit messages `consumer` sent; with `wait`, blocks until at least one
    /// comes. `Err(Closed)` if the consumer closed its end.
    fn take(&mut self, domain: &mut Domain, consumer: DomainId, wait: bool) -> Result<()> {
        loop {
            let timeout = if wait { None } else { Some(Duration::ZERO) };
            let got = match domain.receive(Some(consumer), timeout) {
                Ok(g) => g,
                Err(e) if !wait && e.kind() == cosh::ErrorKind::NothingPending => return Ok(()),
                // The consumer is gone: the pipe is broken.
                Err(e) if e.kind() == cosh::ErrorKind::UnknownDomain => return Err(Error::Closed),
                Err(e) => return Err(e.into()),
            };
            let bytes = domain.read(got.agg, 0, CREDIT_LEN);
            domain.decref(got.agg)?;
            let bytes = bytes?;
            let word = |i: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
                u64::from_le_bytes(w)
            };
            let (kind, m, b) = (word(0), word(1), word(2));
            let opened = self.window != (0, 0);
            match kind {
                OPEN => {
                    self.window = (m.max(1), b.max(1));
                    self.left = self.window;
                }
                // Left over from an earlier pipe between the same domains.
                MORE | CLOSE if !opened => continue,
                CLOSE => return Err(Error::Closed),
                MORE => {
                    // Never more than the window, whatever a consumer returns.
                    self.left.0 = self.left.0.saturating_add(m).min(self.window.0);
                    self.left.1 = self.left.1.saturating_add(b).min(self.window.1);
                }
                _ => return Err(Error::Protocol(format!("a credit message of kind {kind}"))),
            }
            // Only block for the first credit message; take the rest as they are.
            if wait {
                return Ok(());
            }
        }
    }

    /// Waits until a message of `len` bytes may go to `consumer`.
    fn wait_for(&mut self, domain: &mut Domain, consumer: DomainId, len: u64) -> Result<()> {
        while !self.allows(len) {
            self.take(domain, consumer, true)?;
        }
        Ok(())
    }
}

/// The producer's end.
pub struct PipeWriter {
    domain: Domain,
    consumer: DomainId,
    credit: Credit,
    /// Bytes written through `Write` not sent yet, and how many.
    staging: Option<(Agg, u64)>,
    chunk: u64,
}

impl PipeWriter {
    /// The producer's end of a pipe to `consumer` (whose [`PipeReader`] names this domain).
    pub fn open(domain: Domain, consumer: DomainId) -> Result<PipeWriter> {
        Ok(PipeWriter {
            domain,
            consumer,
            credit: Credit::default(),
            staging: None,
            chunk: 1 << 20,
        })
    }

    /// The domain this end uses (to allocate and fill aggregates to send).
    pub fn domain(&mut self) -> &mut Domain {
        &mut self.domain
    }

    /// How many bytes `write` gathers into one aggregate before sending it (1 MiB by
    /// default).
    pub fn chunk(&self) -> u64 {
        self.chunk
    }

    /// Sets [`PipeWriter::chunk`] (at least 1).
    pub fn set_chunk(&mut self, bytes: u64) {
        self.chunk = bytes.max(1);
    }

    /// Credit left (messages, bytes): what may be sent before waiting for the consumer.
    pub fn credit(&self) -> (u64, u64) {
        self.credit.left
    }

    /// Sends `agg` (this domain's, read/write) to the consumer by strong move, in order,
    /// once credit allows; the handle goes with it (on an error it stays the caller's, but for
    /// [`Error::Closed`] after the consumer went away).
    pub fn send(&mut self, agg: Agg) -> Result<()> {
        self.flush_staging()?;
        self.send_now(agg)
    }

    fn send_now(&mut self, agg: Agg) -> Result<()> {
        let len = len_of(&mut self.domain, agg)?;
        self.credit.wait_for(&mut self.domain, self.consumer, len)?;
        match self
            .domain
            .transfer(agg, self.consumer, Mode::Move, strong())
        {
            Ok(_) => {}
            // The consumer is gone: the pipe is broken.
            Err(e) if e.kind() == cosh::ErrorKind::UnknownDomain => {
                let _ = self.domain.decref(agg);
                return Err(Error::Closed);
            }
            Err(e) => return Err(e.into()),
        }
        self.domain.decref(agg)?;
        self.credit.spend(len);
        Ok(())
    }

    fn flush_staging(&mut self) -> Result<()> {
        if let Some((agg, used)) = self.staging.take() {
            let agg = if used < len_of(&mut self.domain, agg)? {
                let part = self.domain.select(agg, 0, used)?;
                self.domain.decref(agg)?;
                part
            } else {
                agg
            };
            self.send_now(agg)?;
        }
        Ok(())
    }

    /// Sends what `write` gathered, then the end of the stream, and gives the domain back.
    /// (A writer dropped without `finish` ends the stream with its domain: the consumer's
    /// next read fails with a broken pipe.)
    pub fn finish(mut self) -> Result<Domain> {
        self.flush_staging()?;
        let end = self.domain.alloc(0)?;
        // The end of the stream needs no credit.
        self.domain
            .transfer(end, self.consumer, Mode::Move, strong())?;
        self.domain.decref(end)?;
        Ok(self.domain)
    }
}

impl std::io::Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let (agg, used) = match self.staging.take() {
            Some(s) => s,
            None => (
                self.domain
                    .alloc_unzeroed(self.chunk)
                    .map_err(Error::from)?,
                0,
            ),
        };
        let room = usize::try_from(self.chunk - used).unwrap_or(usize::MAX);
        let n = room.min(data.len());
        self.domain
            .write(agg, used, &data[..n])
            .map_err(Error::from)?;
        let used = used + n as u64;
        if used == self.chunk {
            self.send_now(agg)?;
        } else {
            self.staging = Some((agg, used));
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(self.flush_staging()?)
    }
}

/// The producer's end of a multicast pipe: every aggregate goes to every consumer by strong
/// share (read-only; the first consumer may get a copy where the block manager measured that
/// a copy costs less than a seal, the others share the sealed buffer), in order, each
/// consumer with its own window: the slowest bounds the producer. A consumer that closes
/// leaves the others be; when none is left, sends fail with [`Error::Closed`]. Consumers use
/// an ordinary [`PipeReader`].
pub struct MulticastWriter {
    domain: Domain,
    consumers: Vec<(DomainId, Credit)>,
}

impl MulticastWriter {
    /// The producer's end of a multicast pipe to `consumers`.
    pub fn open(domain: Domain, consumers: &[DomainId]) -> Result<MulticastWriter> {
        Ok(MulticastWriter {
            domain,
            consumers: consumers.iter().map(|c| (*c, Credit::default())).collect(),
        })
    }

    /// The domain this end uses.
    pub fn domain(&mut self) -> &mut Domain {
        &mut self.domain
    }

    /// Consumers still reading.
    pub fn consumers(&self) -> Vec<DomainId> {
        self.consumers.iter().map(|(c, _)| *c).collect()
    }

    /// Shares `agg` with every consumer once each has credit; the handle goes.
    pub fn send(&mut self, agg: Agg) -> Result<()> {
        let len = len_of(&mut self.domain, agg)?;
        let mut i = 0;
        while i < self.consumers.len() {
            let (c, credit) = &mut self.consumers[i];
            let c = *c;
            match credit.wait_for(&mut self.domain, c, len) {
                Ok(()) => {}
                Err(Error::Closed) => {
                    self.consumers.remove(i);
                    continue;
                }
                Err(e) => return Err(e),
            }
            match self.domain.transfer(agg, c, Mode::Share, strong()) {
                Ok(_) => {}
                // The consumer went away (it closed its end and left): the others read on.
                Err(e) if e.kind() == cosh::ErrorKind::UnknownDomain => {
                    self.consumers.remove(i);
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            self.consumers[i].1.spend(len);
            i += 1;
        }
        self.domain.decref(agg)?;
        if self.consumers.is_empty() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Ends the stream for every consumer and gives the domain back.
    pub fn finish(mut self) -> Result<Domain> {
        for (c, _) in &self.consumers {
            let end = self.domain.alloc(0)?;
            let sent = self.domain.transfer(end, *c, Mode::Share, strong());
            self.domain.decref(end)?;
            match sent {
                Ok(_) => {}
                Err(e) if e.kind() == cosh::ErrorKind::UnknownDomain => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.domain)
    }
}

/// The consumer's end.
pub struct PipeReader {
    domain: Domain,
    producer: DomainId,
    window: Window,
    /// Credit consumed and not yet returned.
    owed: (u64, u64),
    /// What `read` has left of the current aggregate: it, its length and the offset.
    current: Option<(Agg, u64, u64)>,
    ended: bool,
}

impl PipeReader {
    /// The consumer's end of a pipe from `producer`, granting it `window` at once.
    pub fn open(domain: Domain, producer: DomainId, window: Window) -> Result<PipeReader> {
        let mut r = PipeReader {
            domain,
            producer,
            window: Window {
                messages: window.messages.max(1),
                bytes: window.bytes.max(1),
            },
            owed: (0, 0),
            current: None,
            ended: false,
        };
        let w = r.window;
        r.grant(OPEN, w.messages, w.bytes)?;
        Ok(r)
    }

    /// The domain this end uses (to read and drop what it received).
    pub fn domain(&mut self) -> &mut Domain {
        &mut self.domain
    }

    fn grant(&mut self, kind: u64, messages: u64, bytes: u64) -> Result<()> {
        let agg = self.domain.alloc(CREDIT_LEN)?;
        let mut text = [0u8; 24];
        text[..8].copy_from_slice(&kind.to_le_bytes());
        text[8..16].copy_from_slice(&messages.to_le_bytes());
        text[16..].copy_from_slice(&bytes.to_le_bytes());
        self.domain.write(agg, 0, &text)?;
        let sent = self.domain.transfer(agg, self.producer, Mode::Move, weak());
        self.domain.decref(agg)?;
        match sent {
            Ok(_) => Ok(()),
            // A producer that finished and left needs no more credit; what it sent can still
            // be read.
            Err(e) if e.kind() == cosh::ErrorKind::UnknownDomain => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The next aggregate from the producer (this domain's: read/write from a pipe,
    /// read-only from a [`MulticastWriter`]), waiting up to
    /// `timeout` (`None`: for ever); `Ok(None)` at the end of the stream. Credit for it goes
    /// back to the producer (in batches of half the window).
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<Agg>> {
        if self.ended {
            return Ok(None);
        }
        let got = self.domain.receive(Some(self.producer), timeout)?;
        if got.mode == Mode::Copy {
            self.domain.decref(got.agg)?;
            return Err(Error::Protocol(
                "a copy where the pipe moves (or, multicast, shares) aggregates".into(),
            ));
        }
        let len = len_of(&mut self.domain, got.agg)?;
        if len == 0 {
            self.domain.decref(got.agg)?;
            self.ended = true;
            return Ok(None);
        }
        self.owed.0 += 1;
        self.owed.1 += len;
        if self.owed.0 * 2 >= self.window.messages || self.owed.1 * 2 >= self.window.bytes {
            let (m, b) = std::mem::take(&mut self.owed);
            self.grant(MORE, m, b)?;
        }
        Ok(Some(got.agg))
    }

    /// Ends the pipe from this side (the producer's next send that needs credit fails with
    /// [`Error::Closed`]) and gives the domain back.
    pub fn close(mut self) -> Result<Domain> {
        if !self.ended {
            self.grant(CLOSE, 0, 0)?;
        }
        if let Some((agg, _, _)) = self.current.take() {
            self.domain.decref(agg)?;
        }
        Ok(self.domain)
    }
}

impl std::io::Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some((agg, len, at)) = self.current {
                let n = (len - at).min(out.len() as u64);
                let bytes = self.domain.read(agg, at, n).map_err(Error::from)?;
                out[..bytes.len()].copy_from_slice(&bytes);
                if at + n == len {
                    self.current = None;
                    self.domain.decref(agg).map_err(Error::from)?;
                } else {
                    self.current = Some((agg, len, at + n));
                }
                return Ok(bytes.len());
            }
            match self.recv(None)? {
                Some(agg) => {
                    let len = self.domain.len(agg).map_err(Error::from)?;
                    self.current = Some((agg, len, 0));
                }
                None => return Ok(0),
            }
        }
    }
}
