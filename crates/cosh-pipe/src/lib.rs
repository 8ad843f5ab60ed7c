//! Zero-copy pipes (paper §5): a producer domain hands a consumer domain aggregates by strong
//! move, in order. The pipe owns nothing but the two ends' bookkeeping: the bytes stay in the
//! aggregates, which move (by reference where the block manager can, else by copy) from the
//! producer to the consumer. Pipes work between any two pools: a domain id names its pool.
//!
//! **Flow control** (the paper's pipe lacked it): the consumer grants the producer credit for
//! a window of messages and bytes ([`Window`]), and returns credit as it consumes. A producer
//! out of credit waits for some, so a stalled consumer bounds the producer's memory: at most
//! one window of data is ever in flight. Credits travel as small weak moves from the consumer
//! to the producer; a message of zero bytes marks the end of the stream.
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
    /// The stream already ended.
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

/// A credit message: messages and bytes granted, little-endian.
const CREDIT_LEN: u64 = 16;

fn strong() -> TransferFlags {
    TransferFlags::default()
}

fn weak() -> TransferFlags {
    TransferFlags {
        strength: Strength::Weak,
        ..TransferFlags::default()
    }
}

/// The producer's end.
pub struct PipeWriter {
    domain: Domain,
    consumer: DomainId,
    /// Credit left: messages and bytes.
    credit: (u64, u64),
    /// The consumer's window, from its first grant (zero until then).
    window: (u64, u64),
    /// Bytes written through `Write` not sent yet, and how many.
    staging: Option<(Agg, u64)>,
    chunk: u64,
    finished: bool,
}

impl PipeWriter {
    /// The producer's end of a pipe to `consumer` (whose [`PipeReader`] names this domain).
    pub fn open(domain: Domain, consumer: DomainId) -> Result<PipeWriter> {
        Ok(PipeWriter {
            domain,
            consumer,
            credit: (0, 0),
            window: (0, 0),
            staging: None,
            chunk: 1 << 20,
            finished: false,
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
        self.credit
    }

    /// Takes credit messages the consumer sent; with `wait`, blocks until at least one
    /// comes.
    fn take_credit(&mut self, wait: bool) -> Result<()> {
        loop {
            let timeout = if wait { None } else { Some(Duration::ZERO) };
            let got = match self.domain.receive(Some(self.consumer), timeout) {
                Ok(g) => g,
                Err(e) if !wait && e.kind() == cosh::ErrorKind::NothingPending => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let bytes = self.domain.read(got.agg, 0, CREDIT_LEN);
            self.domain.decref(got.agg)?;
            let bytes = bytes?;
            let (m, b) = bytes.split_at(8);
            let (m, b) = (
                u64::from_le_bytes(m.try_into().unwrap_or_default()),
                u64::from_le_bytes(b.try_into().unwrap_or_default()),
            );
            if m == 0 && b == 0 {
                // The consumer closed its end.
                return Err(Error::Closed);
            }
            if self.window == (0, 0) {
                self.window = (m, b);
            }
            // Never more than the window, whatever a consumer returns.
            self.credit.0 = self.credit.0.saturating_add(m).min(self.window.0);
            self.credit.1 = self.credit.1.saturating_add(b).min(self.window.1);
            // Only block for the first credit message; take the rest as they are.
            if wait {
                return Ok(());
            }
        }
    }

    /// Sends `agg` (this domain's, read/write) to the consumer by strong move, in order,
    /// once credit allows; the handle goes with it.
    pub fn send(&mut self, agg: Agg) -> Result<()> {
        if self.finished {
            return Err(Error::Closed);
        }
        self.flush_staging()?;
        self.send_now(agg)
    }

    fn send_now(&mut self, agg: Agg) -> Result<()> {
        let len = len_of(&mut self.domain, agg)?;
        // A message needs one message of credit and its bytes; one larger than the whole
        // byte window goes alone, once everything before it was consumed.
        loop {
            let bytes_ok = self.credit.1 >= len
                || (len > self.window.1 && self.window.1 > 0 && self.credit.1 == self.window.1);
            if self.credit.0 > 0 && bytes_ok {
                break;
            }
            self.take_credit(true)?;
        }
        self.domain
            .transfer(agg, self.consumer, Mode::Move, strong())?;
        self.domain.decref(agg)?;
        self.credit.0 -= 1;
        self.credit.1 = self.credit.1.saturating_sub(len);
        Ok(())
    }

    fn flush_staging(&mut self) -> Result<()> {
        if let Some((agg, used)) = self.staging.take() {
            let agg = if used < self.domain.len(agg)? {
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
        self.finished = true;
        // The end of the stream needs no credit.
        self.domain
            .transfer(end, self.consumer, Mode::Move, strong())?;
        self.domain.decref(end)?;
        Ok(self.domain)
    }
}

impl std::io::Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.finished {
            return Err(Error::Closed.into());
        }
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
        r.grant(w.messages, w.bytes)?;
        Ok(r)
    }

    /// The domain this end uses (to read and drop what it received).
    pub fn domain(&mut self) -> &mut Domain {
        &mut self.domain
    }

    fn grant(&mut self, messages: u64, bytes: u64) -> Result<()> {
        let agg = self.domain.alloc(CREDIT_LEN)?;
        let mut text = [0u8; 16];
        text[..8].copy_from_slice(&messages.to_le_bytes());
        text[8..].copy_from_slice(&bytes.to_le_bytes());
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

    /// The next aggregate from the producer (this domain's, read/write), waiting up to
    /// `timeout` (`None`: for ever); `Ok(None)` at the end of the stream. Credit for it goes
    /// back to the producer (in batches of half the window).
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<Agg>> {
        if self.ended {
            return Ok(None);
        }
        let got = self.domain.receive(Some(self.producer), timeout)?;
        if got.mode != Mode::Move {
            self.domain.decref(got.agg)?;
            return Err(Error::Protocol(format!(
                "a {:?} where the pipe moves aggregates",
                got.mode
            )));
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
            self.grant(m, b)?;
        }
        Ok(Some(got.agg))
    }

    /// Ends the pipe from this side (the producer's next send that needs credit fails with
    /// [`Error::Closed`]) and gives the domain back.
    pub fn close(mut self) -> Result<Domain> {
        if !self.ended {
            self.grant(0, 0)?;
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
