//! The CoshFS request protocol: one postcard message per `SOCK_SEQPACKET` packet.
//!
//! A client sends a [`Request`] and waits for its [`Reply`]; between the two the service may
//! send [`ToClient::Invalidate`] notices, and does so before it answers the write that caused
//! them — a client that looks at its socket before it trusts its cache therefore always sees
//! the notice of a write that completed before its read began.
//!
//! **Write-behind.** A client holding a file's write lease ([`Request::Lease`]) sends small
//! writes as [`Request::WriteBehind`] and does not wait: the write is complete once it is in
//! the service's socket. No other client caches a leased file, and before the service
//! answers any request it applies every write-behind already queued by any lease holder
//! (reading their sockets twice over), so a request that starts after such a write completed
//! sees it. A client that shares coherent memory with the service appends its write-behinds
//! to a write log in memory both map instead ([`Request::Log`], [`crate::log`]), which the
//! service likewise empties before it answers anyone. A write-behind that fails is reported
//! by [`ToClient::Deferred`], returned by the client's next call. Bytes travel either inline (up
//! to [`INLINE_MAX`]: small reads and writes are copied, which is cheaper than a transfer) or
//! as Cosh transfers named by a ticket: a write's aggregate by strong move, a read's range or
//! a whole file by weak share. Every request is answered (`Uncache` excepted), and a failure
//! is [`Reply::Failed`] with an errno.

use serde::{Deserialize, Serialize};

use crate::core::{DirEntry, Stat};

/// The protocol version a client and a service must agree on.
pub const VERSION: u32 = 1;

/// The most bytes a read or write carries inside a message.
pub const INLINE_MAX: usize = 64 * 1024;

/// The largest message either side sends (an inline write and its header, or a page of
/// directory entries).
pub const MAX_MESSAGE: usize = INLINE_MAX + 4096;

/// The directory holding `path` (`None` for the root or a path without a slash).
pub fn parent_of(path: &str) -> Option<&str> {
    let trimmed = path.trim_end_matches('/');
    let cut = trimmed.rfind('/')?;
    Some(if cut == 0 { "/" } else { &trimmed[..cut] })
}

/// Open flags (`Request::Open`), combined with `|`.
pub mod open {
    /// Create the file if it does not exist.
    pub const CREATE: u32 = 1;
    /// With `CREATE`: fail if it exists.
    pub const EXCL: u32 = 2;
    /// Cut the file to zero bytes.
    pub const TRUNC: u32 = 4;
    /// Every flag this version knows.
    pub const ALL: u32 = CREATE | EXCL | TRUNC;
}

/// What a client asks (variants are only ever appended).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The first message: the protocol version and the client's domain (proved next).
    Hello {
        /// [`VERSION`].
        version: u32,
        /// The client's Cosh domain, bits of `DomainId`.
        domain: u64,
    },
    /// Proof that the client is the domain it named: the ticket of a one-byte copy it sent
    /// to the service's domain.
    Prove {
        /// The transfer's ticket.
        ticket: u64,
    },
    /// Opens (and with flags creates or truncates) the file at `path`.
    Open {
        /// Absolute path.
        path: String,
        /// [`open`] flags.
        flags: u32,
        /// Permission bits for a new file.
        mode: u32,
    },
    /// Closes a handle.
    Close {
        /// The handle.
        fh: u64,
    },
    /// Attributes by path.
    Stat {
        /// Absolute path.
        path: String,
    },
    /// Attributes by handle.
    Fstat {
        /// The handle.
        fh: u64,
    },
    /// Makes a directory.
    Mkdir {
        /// Absolute path.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// Removes an empty directory.
    Rmdir {
        /// Absolute path.
        path: String,
    },
    /// Removes a file's name.
    Unlink {
        /// Absolute path.
        path: String,
    },
    /// Renames, replacing what `to` named.
    Rename {
        /// Old path.
        from: String,
        /// New path.
        to: String,
    },
    /// A page of a directory's entries, sorted by name, after `after`.
    List {
        /// Absolute path.
        path: String,
        /// The last name of the previous page.
        after: Option<String>,
    },
    /// Cuts or extends a file by path.
    Truncate {
        /// Absolute path.
        path: String,
        /// The new length.
        len: u64,
    },
    /// Cuts or extends a file by handle.
    Ftruncate {
        /// The handle.
        fh: u64,
        /// The new length.
        len: u64,
    },
    /// Up to `len` (at most [`INLINE_MAX`]) bytes from `offset`, copied into the reply.
    Read {
        /// The handle.
        fh: u64,
        /// The first byte.
        offset: u64,
        /// How many.
        len: u64,
    },
    /// Up to `len` bytes from `offset`, by weak share.
    Share {
        /// The handle.
        fh: u64,
        /// The first byte.
        offset: u64,
        /// How many.
        len: u64,
    },
    /// The whole file by weak share, for the client's cache (no bigger than `max`).
    Fetch {
        /// The handle.
        fh: u64,
        /// The largest file the client will cache.
        max: u64,
    },
    /// Writes inline bytes at `offset`.
    Write {
        /// The handle.
        fh: u64,
        /// The first byte.
        offset: u64,
        /// The bytes (at most [`INLINE_MAX`]).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Writes the aggregate the client sent by strong transfer with `ticket` at `offset`.
    WriteAgg {
        /// The handle.
        fh: u64,
        /// The first byte.
        offset: u64,
        /// The transfer's ticket.
        ticket: u64,
    },
    /// The client dropped these files from its cache (no reply).
    Uncache {
        /// Their inodes.
        inos: Vec<u64>,
    },
    /// Sets permission bits.
    Chmod {
        /// Absolute path.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// Sets the modification time.
    SetMtime {
        /// Absolute path.
        path: String,
        /// Nanoseconds since the Unix epoch.
        mtime_ns: i64,
    },
    /// Asks for the write lease of the handle's file (held until the client closes its last
    /// handle of the file): refused while another client holds it.
    Lease {
        /// The handle.
        fh: u64,
    },
    /// Attributes by path, for the client's lookup cache: a missing path is an answer
    /// (`Looked { stat: None }`), and the service notifies the client of what would change
    /// the answer (`Invalidate` for the file, `Namespace` for any name).
    Lookup {
        /// Absolute path.
        path: String,
    },
    /// With the lease: writes inline bytes at `offset`, with no reply.
    WriteBehind {
        /// The handle.
        fh: u64,
        /// The first byte.
        offset: u64,
        /// When the client made the write (nanoseconds since the Unix epoch): the file's
        /// modification time once it is applied.
        made_ns: i64,
        /// The bytes (at most [`INLINE_MAX`]).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Wakes the service to take what a write log holds (no reply).
    Wake,
    /// Hands the service a write log ([`crate::log`]), the memfd attached to this message:
    /// from now on this client's write-behinds are frames in it. One per client.
    Log {
        /// The ring's size in 8-byte words.
        words: u64,
    },
}

impl Request {
    /// Whether the service answers this request (`Uncache`, `WriteBehind` and `Wake` it
    /// does not).
    pub fn answered(&self) -> bool {
        !matches!(
            self,
            Request::Uncache { .. } | Request::WriteBehind { .. } | Request::Wake
        )
    }
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// To `Hello`: the service's domain (send the proof there).
    Welcome {
        /// Bits of the service's `DomainId`.
        server: u64,
    },
    /// Done, nothing to say.
    Done,
    /// To `Open`: the handle and the file's attributes.
    Opened {
        /// The handle.
        fh: u64,
        /// The attributes (after any truncation).
        stat: Stat,
        /// Whether the client may cache `stat` as its lookup of the path (as `Looked`).
        cacheable: bool,
        /// The attributes of the directory holding the file, now (cacheable as its lookup).
        parent: Option<Stat>,
    },
    /// To `Mkdir`, `Rmdir`, `Unlink`: the attributes of the directory that held the name,
    /// after the change (cacheable as its lookup).
    Changed {
        /// The parent directory's attributes.
        parent: Stat,
    },
    /// To `Stat`, `Fstat`, `Truncate`, `Ftruncate`: the attributes.
    Attr(Stat),
    /// To `List`.
    Entries {
        /// Up to a page of entries.
        entries: Vec<DirEntry>,
        /// Whether more follow.
        more: bool,
    },
    /// To `Read`.
    Bytes {
        /// The bytes (fewer than asked at the end of the file).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// To `Share`: the transfer to take (`None`: nothing to read there).
    Shared {
        /// The ticket, for `attach_recv` from the service's domain.
        ticket: Option<u64>,
        /// Its length.
        len: u64,
    },
    /// To `Fetch`: the whole file, or `ticket: None` with `too_big` (bigger than asked) or
    /// `leased` (another client holds its write lease: read it from the service).
    Fetched {
        /// The inode.
        ino: u64,
        /// The content's version (notices name the version that replaced it).
        version: u64,
        /// Its length.
        len: u64,
        /// The transfer to take (`None` when empty, too big, or sent inline).
        ticket: Option<u64>,
        /// The content itself, for a file of at most [`INLINE_MAX`] bytes: copying that
        /// little costs less than sharing it, and leaves the service's buffers writable in
        /// place.
        #[serde(with = "serde_bytes")]
        data: Option<Vec<u8>>,
        /// Whether the file was bigger than the client's limit.
        too_big: bool,
        /// Whether another client holds the file's write lease.
        leased: bool,
        /// The file's attributes (cached with its content, and kept as exact: a notice
        /// follows any change to either).
        stat: Stat,
    },
    /// To `Lookup`, `Chmod`, `SetMtime`: the attributes, or `None` when nothing has that
    /// name.
    Looked {
        /// The attributes.
        stat: Option<Stat>,
        /// Whether the answer may be cached (not while another client writes the file
        /// behind under its lease: its size moves without the service being asked).
        cacheable: bool,
    },
    /// To `Lease`.
    Leased {
        /// Whether the client now holds the lease.
        granted: bool,
        /// The file's attributes then: while the client holds the lease, only its own writes
        /// change them unless it is told otherwise (and a client that holds the lease of an
        /// empty file knows its whole content from its own writes).
        stat: Stat,
    },
    /// To `Write` and `WriteAgg`: bytes written and the file's new attributes.
    Written {
        /// Bytes written.
        n: u64,
        /// The attributes after the write.
        stat: Stat,
    },
    /// The request failed.
    Failed {
        /// The errno.
        errno: i32,
        /// The path, handle or message.
        detail: String,
    },
}

/// What the service sends a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToClient {
    /// The answer to the client's request.
    Reply(Reply),
    /// The file (its content or its attributes) changed: cached copies older than `version`
    /// are stale.
    Invalidate {
        /// The inode.
        ino: u64,
        /// The new version.
        version: u64,
    },
    /// A name was made, removed or moved (by another client): cached lookups are stale.
    Namespace,
    /// A write-behind failed: the client's next call reports it.
    Deferred {
        /// The errno.
        errno: i32,
        /// The path, handle or message.
        detail: String,
    },
}

/// Encodes a message into `out` (cleared first).
pub fn encode<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
    out.clear();
    let bytes = postcard::to_extend(message, std::mem::take(out))?;
    *out = bytes;
    Ok(())
}

/// Decodes one message; trailing bytes are an error.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(postcard::Error::DeserializeBadEncoding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_trailing_bytes_are_refused() {
        let r = Request::Write {
            fh: 3,
            offset: 1 << 40,
            data: vec![7; 1000],
        };
        let mut out = Vec::new();
        encode(&r, &mut out).expect("encode");
        assert!(out.len() < 1100, "bytes travel as bytes: {}", out.len());
        assert_eq!(decode::<Request>(&out).expect("decode"), r);
        out.push(0);
        assert!(decode::<Request>(&out).is_err());
        let n = ToClient::Invalidate { ino: 9, version: 2 };
        encode(&n, &mut out).expect("encode");
        assert_eq!(decode::<ToClient>(&out).expect("decode"), n);
    }

    #[test]
    fn a_full_inline_write_fits_a_message() {
        let r = Request::Write {
            fh: u64::MAX,
            offset: u64::MAX,
            data: vec![0xff; INLINE_MAX],
        };
        let mut out = Vec::new();
        encode(&r, &mut out).expect("encode");
        assert!(out.len() <= MAX_MESSAGE);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = decode::<Request>(&bytes);
            let _ = decode::<ToClient>(&bytes);
        }
    }
}
