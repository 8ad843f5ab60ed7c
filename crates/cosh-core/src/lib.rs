//! The OS-free core of Cosh (coherence-oblivious sharing): rights, transfer modes, aggregates,
//! the rights ledger, and an in-process reference model that is the executable definition of
//! what Cosh means.
//!
//! Processes hand each other bulk data as *aggregates*: domain-local, reference-counted,
//! ordered lists of *chunks* (byte ranges of page-aligned *buffers*), with one set of rights
//! for the whole aggregate. A *transfer* moves, shares or copies an aggregate to another
//! domain, strongly (memory permissions never exceed rights afterwards) or weakly (trusted
//! domains may keep stale permissions):
//!
//! ```text
//!   domain A                                   domain B
//!   agg x ──chunks──▶ [buffer 1 ....][buffer 2 ..]
//!      │ transfer(x, B, Move, strong)
//!      ▼
//!   x: no access      ── by reference or copy ──▶  y: read/write, same bytes
//! ```
//!
//! Nothing here touches the operating system: the [`ledger::Ledger`] decides, the block
//! manager and the [`model::Model`] carry its plans out.
//!
//! ```
//! use cosh_core::api::Cosh;
//! use cosh_core::model::Model;
//! use cosh_core::{Mode, PoolId, Rights, TransferFlags};
//!
//! # fn main() -> Result<(), cosh_core::Error> {
//! let mut cosh = Model::default();
//! let (a, b) = (cosh.connect(PoolId(0))?, cosh.connect(PoolId(0))?);
//! let x = cosh.alloc(a, 5)?;
//! cosh.write(a, x, 0, b"hello")?;
//! cosh.transfer(a, x, b, Mode::Share, TransferFlags::strong())?;
//! assert_eq!(cosh.getrights(a, x)?, Rights::Read);
//! let y = cosh.receive(b, Some(a))?;
//! assert_eq!(cosh.read(b, y.agg, 0, 5)?, b"hello");
//! // Shared data stays read-only everywhere until freed.
//! assert!(cosh.write(a, x, 0, b"HELLO").is_err());
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod api;
pub mod chunk;
pub mod error;
pub mod id;
pub mod ledger;
pub mod model;
pub mod rights;

pub use chunk::{Chunk, ChunkList, MAX_CHUNKS, MAX_LEN};
pub use error::{Error, ErrorKind, Result};
pub use id::{AggId, BufferId, DomainId, PoolId, Ticket};
pub use rights::{Access, Mode, RelatedPolicy, Rights, Strength, TransferFlags};
