//! The in-process reference model: the whole aggregate API over the [`Ledger`], with domains
//! as handles inside one process and buffers in heap memory.
//!
//! This is the executable definition of Cosh. It carries out every plan literally: copies are
//! copies, references share the same heap buffer, and every memory access (including the
//! misbehaving ones of [`Cosh::peek`] and [`Cosh::poke`]) is checked against the domain's
//! mapping, so a test can see exactly what a transfer left reachable.

use std::collections::BTreeMap;

use crate::api::{Cosh, Incoming};
use crate::chunk::Chunk;
use crate::error::{Error, ErrorKind, Result};
use crate::id::{AggId, BufferId, DomainId, PoolId, Ticket};
use crate::ledger::{Delivery, Ledger, NewBuffer, Policy, Received, Release, TransferRequest};
use crate::rights::{Access, Mode, Rights, TransferFlags};

/// The reference model (see the module documentation).
#[derive(Clone, Debug)]
pub struct Model {
    /// The most heap memory one allocation may take.
    max_alloc: u64,
    ledger: Ledger,
    memory: BTreeMap<BufferId, Vec<u8>>,
}

impl Default for Model {
    fn default() -> Self {
        Model::new(Policy::by_reference())
    }
}

impl Model {
    /// An empty model whose ledger uses `policy`.
    pub fn new(policy: Policy) -> Self {
        Model {
            max_alloc: Model::DEFAULT_MAX_ALLOC,
            ledger: Ledger::new(policy),
            memory: BTreeMap::new(),
        }
    }

    /// The default limit on one allocation: 1 GiB of heap.
    pub const DEFAULT_MAX_ALLOC: u64 = 1 << 30;

    /// The same model with another limit on one allocation.
    pub fn with_max_alloc(self, max_alloc: u64) -> Self {
        Model { max_alloc, ..self }
    }

    /// The ledger, for inspection.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Heap bytes currently held by live buffers.
    pub fn resident_bytes(&self) -> u64 {
        self.memory.values().map(|m| m.len() as u64).sum()
    }

    fn create(&mut self, buffer: NewBuffer) {
        self.memory.insert(
            buffer.id,
            vec![0; usize::try_from(buffer.len).unwrap_or(usize::MAX)],
        );
    }

    fn release(&mut self, release: Release) {
        for b in release.freed {
            self.memory.remove(&b);
        }
    }

    fn bytes(&self, chunk: &Chunk) -> Option<&[u8]> {
        let m = self.memory.get(&chunk.buffer)?;
        let start = usize::try_from(chunk.offset).ok()?;
        let end = usize::try_from(chunk.end()).ok()?;
        m.get(start..end)
    }

    fn bytes_mut(&mut self, chunk: &Chunk) -> Option<&mut [u8]> {
        let m = self.memory.get_mut(&chunk.buffer)?;
        let start = usize::try_from(chunk.offset).ok()?;
        let end = usize::try_from(chunk.end()).ok()?;
        m.get_mut(start..end)
    }

    fn range(&self, domain: DomainId, agg: AggId, offset: u64, len: u64) -> Result<()> {
        let available = self.ledger.len(domain, agg)?;
        if offset.checked_add(len).is_none_or(|end| end > available) {
            return Err(Error::OutOfRange {
                agg,
                offset,
                len,
                available,
            });
        }
        Ok(())
    }

    fn send(
        &mut self,
        domain: DomainId,
        agg: AggId,
        dest: DomainId,
        mode: Mode,
        flags: TransferFlags,
        delivery: Delivery,
    ) -> Result<Option<Ticket>> {
        let mut request = TransferRequest::new(domain, agg, dest, mode, flags);
        request.delivery = delivery;
        let plan = self.ledger.plan_transfer(request)?;
        // The model's memory is the heap: refuse copies it cannot hold, before anything
        // changes.
        let copied = plan.copied_bytes();
        if copied > self.max_alloc {
            return Err(Error::TooLarge {
                len: copied,
                max: self.max_alloc,
            });
        }
        let committed = self.ledger.commit(plan)?;
        for b in &committed.new_buffers {
            self.create(*b);
        }
        for op in &committed.copies {
            let data = self.bytes(&op.from).map(<[u8]>::to_vec).unwrap_or_default();
            if let Some(dst) = self.bytes_mut(&op.to) {
                dst.copy_from_slice(&data);
            }
        }
        Ok(committed.ticket)
    }

    fn incoming(r: Received) -> Incoming<AggId, DomainId> {
        Incoming {
            agg: r.agg,
            source: r.source,
            mode: r.mode,
            strength: r.strength,
        }
    }
}

impl Cosh for Model {
    type Domain = DomainId;
    type Agg = AggId;
    type Piece = Chunk;
    type Error = Error;

    fn kind_of(error: &Error) -> Option<ErrorKind> {
        Some(error.kind())
    }

    fn connect(&mut self, pool: PoolId) -> Result<DomainId> {
        Ok(self.ledger.add_domain(pool))
    }

    fn kill(&mut self, domain: DomainId) -> Result<()> {
        let release = self.ledger.remove_domain(domain)?;
        self.release(release);
        Ok(())
    }

    fn trust(&mut self, domain: DomainId, peer: DomainId) -> Result<()> {
        self.ledger.trust(domain, peer)
    }

    fn alloc(&mut self, domain: DomainId, len: u64) -> Result<AggId> {
        if len > self.max_alloc {
            if !self.ledger.has_domain(domain) {
                return Err(Error::UnknownDomain { domain });
            }
            return Err(Error::TooLarge {
                len,
                max: self.max_alloc,
            });
        }
        let allocation = self.ledger.alloc(domain, len)?;
        if let Some(b) = allocation.buffer {
            self.create(b);
        }
        Ok(allocation.agg)
    }

    fn incref(&mut self, domain: DomainId, agg: AggId) -> Result<()> {
        self.ledger.incref(domain, agg)
    }

    fn decref(&mut self, domain: DomainId, agg: AggId) -> Result<()> {
        let release = self.ledger.decref(domain, agg)?;
        self.release(release);
        Ok(())
    }

    fn getlen(&mut self, domain: DomainId, agg: AggId) -> Result<u64> {
        self.ledger.len(domain, agg)
    }

    fn getrights(&mut self, domain: DomainId, agg: AggId) -> Result<Rights> {
        self.ledger.rights(domain, agg)
    }

    fn iter(
        &mut self,
        domain: DomainId,
        agg: AggId,
        access: Access,
        offset: u64,
    ) -> Result<Vec<Chunk>> {
        self.ledger.pieces(domain, agg, access, offset)
    }

    fn piece_len(piece: &Chunk) -> u64 {
        piece.len
    }

    fn read(&mut self, domain: DomainId, agg: AggId, offset: u64, len: u64) -> Result<Vec<u8>> {
        let pieces = self.ledger.pieces(domain, agg, Access::Read, offset)?;
        self.range(domain, agg, offset, len)?;
        let mut out = Vec::new();
        let mut left = len;
        for p in pieces {
            if left == 0 {
                break;
            }
            let take = Chunk {
                len: p.len.min(left),
                ..p
            };
            out.extend_from_slice(self.peek(domain, &take)?.as_slice());
            left -= take.len;
        }
        Ok(out)
    }

    fn write(&mut self, domain: DomainId, agg: AggId, offset: u64, data: &[u8]) -> Result<()> {
        let pieces = self.ledger.pieces(domain, agg, Access::Write, offset)?;
        self.range(domain, agg, offset, data.len() as u64)?;
        let mut rest = data;
        for p in pieces {
            if rest.is_empty() {
                break;
            }
            let n = usize::try_from(p.len).unwrap_or(usize::MAX).min(rest.len());
            let (now, later) = rest.split_at(n);
            self.poke(domain, &Chunk { len: n as u64, ..p }, now)?;
            rest = later;
        }
        Ok(())
    }

    fn concat(&mut self, domain: DomainId, first: AggId, second: AggId) -> Result<AggId> {
        self.ledger.concat(domain, first, second)
    }

    fn select(&mut self, domain: DomainId, agg: AggId, offset: u64, len: u64) -> Result<AggId> {
        self.ledger.select(domain, agg, offset, len)
    }

    fn find_related(&mut self, domain: DomainId, agg: AggId, min: Rights) -> Result<Vec<AggId>> {
        self.ledger.find_related(domain, agg, min)
    }

    fn downgrade(&mut self, domain: DomainId, agg: AggId, rights: Rights) -> Result<()> {
        self.ledger.downgrade(domain, agg, rights)
    }

    fn transfer(
        &mut self,
        domain: DomainId,
        agg: AggId,
        dest: DomainId,
        mode: Mode,
        flags: TransferFlags,
    ) -> Result<()> {
        self.send(domain, agg, dest, mode, flags, Delivery::Queued)
            .map(|_| ())
    }

    fn attach_transfer(
        &mut self,
        domain: DomainId,
        agg: AggId,
        dest: DomainId,
        mode: Mode,
        flags: TransferFlags,
    ) -> Result<Ticket> {
        let ticket = self.send(domain, agg, dest, mode, flags, Delivery::Ticketed)?;
        ticket.ok_or(Error::StalePlan)
    }

    fn receive(
        &mut self,
        domain: DomainId,
        source: Option<DomainId>,
    ) -> Result<Incoming<AggId, DomainId>> {
        self.ledger.receive(domain, source).map(Model::incoming)
    }

    fn attach_recv(
        &mut self,
        domain: DomainId,
        source: DomainId,
        ticket: Ticket,
    ) -> Result<Incoming<AggId, DomainId>> {
        self.ledger
            .attach_recv(domain, source, ticket)
            .map(Model::incoming)
    }

    fn peek(&mut self, domain: DomainId, piece: &Chunk) -> Result<Vec<u8>> {
        let fault = Error::Fault {
            domain,
            buffer: piece.buffer,
            needed: Rights::Read,
        };
        if !self.ledger.mapping(domain, piece.buffer).can_read() {
            return Err(fault);
        }
        self.bytes(piece).map(<[u8]>::to_vec).ok_or(fault)
    }

    fn poke(&mut self, domain: DomainId, piece: &Chunk, data: &[u8]) -> Result<()> {
        let fault = Error::Fault {
            domain,
            buffer: piece.buffer,
            needed: Rights::ReadWrite,
        };
        let writable = self.ledger.mapping(domain, piece.buffer).can_write()
            && !self.ledger.is_sealed(piece.buffer);
        if !writable || piece.len != data.len() as u64 {
            return Err(fault);
        }
        let dst = self.bytes_mut(piece).ok_or(fault)?;
        dst.copy_from_slice(data);
        Ok(())
    }
}
