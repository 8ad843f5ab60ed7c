//! The aggregate API of Table 2 as one trait, addressed by domain, so that one scenario corpus
//! can drive every implementation: the in-process [`Model`](crate::model::Model) now, the
//! block manager with real processes later.
//!
//! Besides the API itself the trait has two test hooks, [`Cosh::peek`] and [`Cosh::poke`]:
//! a misbehaving domain reading or writing through a piece it remembered from an earlier
//! iteration, which is how scenarios check what strong and weak transfers leave reachable.
//! Receives are non-blocking: with nothing waiting they fail with
//! [`ErrorKind::NothingPending`].

use std::fmt::Debug;

use crate::error::ErrorKind;
use crate::id::{PoolId, Ticket};
use crate::rights::{Access, Mode, Rights, Strength, TransferFlags};

/// A transfer as the receiver learns of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming<A, D> {
    /// The receiver's new aggregate.
    pub agg: A,
    /// The sender.
    pub source: D,
    /// The mode.
    pub mode: Mode,
    /// The strength the sender asked for (copy: strong).
    pub strength: Strength,
}

/// The whole aggregate API, addressed by domain.
pub trait Cosh {
    /// A domain handle.
    type Domain: Copy + Eq + Debug;
    /// An aggregate handle (local to its domain).
    type Agg: Copy + Eq + Debug;
    /// A piece returned by iteration, kept by a test to touch memory directly later.
    type Piece: Clone + Debug;
    /// The implementation's error.
    type Error: std::error::Error;

    /// The kind of an error, or `None` for errors outside the API (I/O, say), which never
    /// match an expectation.
    fn kind_of(error: &Self::Error) -> Option<ErrorKind>;

    /// Connects a new domain in `pool`.
    fn connect(&mut self, pool: PoolId) -> Result<Self::Domain, Self::Error>;
    /// Disconnects a domain as if it had been killed.
    fn kill(&mut self, domain: Self::Domain) -> Result<(), Self::Error>;
    /// `domain` declares that it trusts `peer` (weak transfers from it are honoured).
    fn trust(&mut self, domain: Self::Domain, peer: Self::Domain) -> Result<(), Self::Error>;

    /// `alloc(len)`.
    fn alloc(&mut self, domain: Self::Domain, len: u64) -> Result<Self::Agg, Self::Error>;
    /// `incref(agg)`.
    fn incref(&mut self, domain: Self::Domain, agg: Self::Agg) -> Result<(), Self::Error>;
    /// `decref(agg)`.
    fn decref(&mut self, domain: Self::Domain, agg: Self::Agg) -> Result<(), Self::Error>;
    /// `getlen(agg)`.
    fn getlen(&mut self, domain: Self::Domain, agg: Self::Agg) -> Result<u64, Self::Error>;
    /// `getrights(agg)`.
    fn getrights(&mut self, domain: Self::Domain, agg: Self::Agg) -> Result<Rights, Self::Error>;
    /// `iter_start` / `iter_next` / `iter_end`: every piece from `offset`.
    fn iter(
        &mut self,
        domain: Self::Domain,
        agg: Self::Agg,
        access: Access,
        offset: u64,
    ) -> Result<Vec<Self::Piece>, Self::Error>;
    /// The length of a piece.
    fn piece_len(piece: &Self::Piece) -> u64;
    /// Reads `len` bytes at `offset` through the aggregate (needs read rights).
    fn read(
        &mut self,
        domain: Self::Domain,
        agg: Self::Agg,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, Self::Error>;
    /// Writes `data` at `offset` through the aggregate (needs read/write rights).
    fn write(
        &mut self,
        domain: Self::Domain,
        agg: Self::Agg,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Self::Error>;
    /// `concat(first, second)`.
    fn concat(
        &mut self,
        domain: Self::Domain,
        first: Self::Agg,
        second: Self::Agg,
    ) -> Result<Self::Agg, Self::Error>;
    /// `select(agg, offset, len)`.
    fn select(
        &mut self,
        domain: Self::Domain,
        agg: Self::Agg,
        offset: u64,
        len: u64,
    ) -> Result<Self::Agg, Self::Error>;
    /// `find_related(agg, min_rights)`.
    fn find_related(
        &mut self,
        domain: Self::Domain,
        agg: Self::Agg,
        min_rights: Rights,
    ) -> Result<Vec<Self::Agg>, Self::Error>;
    /// `downgrade(agg, rights)`.
    fn downgrade(
        &mut self,
        domain: Self::Domain,
        agg: Self::Agg,
        rights: Rights,
    ) -> Result<(), Self::Error>;
    /// `transfer(agg, dest, mode, flags)`.
    fn transfer(
        &mut self,
        domain: Self::Domain,
        agg: Self::Agg,
        dest: Self::Domain,
        mode: Mode,
        flags: TransferFlags,
    ) -> Result<(), Self::Error>;
    /// `attach_transfer(agg, dest, mode, flags) -> ticket`.
    fn attach_transfer(
        &mut self,
        domain: Self::Domain,
        agg: Self::Agg,
        dest: Self::Domain,
        mode: Mode,
        flags: TransferFlags,
    ) -> Result<Ticket, Self::Error>;
    /// `receive(src)`, non-blocking; `None` receives from anyone.
    fn receive(
        &mut self,
        domain: Self::Domain,
        source: Option<Self::Domain>,
    ) -> Result<Incoming<Self::Agg, Self::Domain>, Self::Error>;
    /// `attach_recv(src, ticket)`, non-blocking.
    fn attach_recv(
        &mut self,
        domain: Self::Domain,
        source: Self::Domain,
        ticket: Ticket,
    ) -> Result<Incoming<Self::Agg, Self::Domain>, Self::Error>;

    /// Test hook: `domain` reads memory through a remembered piece, whatever its rights.
    fn peek(&mut self, domain: Self::Domain, piece: &Self::Piece) -> Result<Vec<u8>, Self::Error>;
    /// Test hook: `domain` writes memory through a remembered piece, whatever its rights.
    fn poke(
        &mut self,
        domain: Self::Domain,
        piece: &Self::Piece,
        data: &[u8],
    ) -> Result<(), Self::Error>;
}
