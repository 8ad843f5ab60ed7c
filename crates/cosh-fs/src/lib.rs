//! CoshFS (paper §5): a file system service domain that keeps every file as an aggregate.
//!
//! - [`core`]: the service's file system, [`Fs`]: the namespace and the files' contents as
//!   aggregates, rebuilt with `select` and `concat` on every write, read as snapshots.
//! - [`server`]: the service, one domain serving clients over a `SOCK_SEQPACKET` socket;
//!   writes arrive by strong transfer named by a ticket in the request, reads leave by weak
//!   share, small ones inline.
//! - [`client`]: the client library, with the aggregate API ([`Client::read`] returns a
//!   snapshot [`Extent`] readable in place, [`Client::write`] takes an aggregate), the legacy
//!   API ([`Client::read_into`], [`Client::write_from`]: one copy), and the client cache that
//!   serves repeated reads without asking the service, kept exact by notices.
//! - [`proto`]: the messages between them; [`log`]: the write log in shared memory that
//!   carries a lease holder's small writes without a message each.

#![forbid(unsafe_code)]

pub mod client;
pub mod core;
pub mod data;
pub mod log;
pub mod proto;
pub mod server;

pub use client::{CacheStats, Client, Extent, Fh, OpenFlags};
pub use core::{DirEntry, Fs, FsError, ROOT, Result, Stat};
pub use server::{ServeError, Server, ServerConfig};
