//! A deliberately naive second implementation of the Cosh API, written from the paper and
//! DESIGN §1/§3 without the ledger's data structures: every aggregate is a vector of byte
//! cells (buffer, offset), relatedness is a graph searched on demand, holdings are found by
//! scanning every aggregate, and Table 1 is written out literally. It shares only the public
//! vocabulary types and the mechanism [`Policy`] with the ledger.

use cosh_core::TransferFlags;
use cosh_core::api::{Cosh, Incoming};
use cosh_core::ledger::{MoveMechanism, Policy};
use cosh_core::{Access, ErrorKind, Mode, PoolId, RelatedPolicy, Rights, Strength, Ticket};

type Cell = (usize, u64);

#[derive(Clone, Debug)]
struct Domain {
    pool: u32,
    alive: bool,
    trusts: Vec<usize>,
}

#[derive(Clone, Debug)]
struct Agg {
    owner: usize,
    cells: Vec<Cell>,
    rights: Rights,
    refs: u32,
    alive: bool,
    pending: bool,
    links: Vec<usize>,
}

#[derive(Clone, Debug)]
struct Buffer {
    pool: u32,
    data: Vec<u8>,
    alive: bool,
    sealed: bool,
    /// Shared by reference once, or a share's copy.
    shared: bool,
    /// A strong share copied it rather than seal it.
    share_copied: bool,
    maps: Vec<(usize, Rights)>,
}

#[derive(Clone, Debug)]
struct Sent {
    dest: usize,
    source: usize,
    agg: usize,
    mode: Mode,
    strength: Strength,
    ticket: Option<u64>,
    taken: bool,
}

/// The naive implementation.
#[derive(Clone, Debug)]
pub struct Naive {
    policy: Policy,
    domains: Vec<Domain>,
    aggs: Vec<Agg>,
    buffers: Vec<Buffer>,
    sent: Vec<Sent>,
}

/// A piece: (buffer, offset, len).
pub type Piece = (usize, u64, u64);

/// The naive model reports only the kind of an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error(pub ErrorKind);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for Error {}

fn runs(cells: &[Cell]) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    for &(b, o) in cells {
        match out.last_mut() {
            Some(last) if last.0 == b && last.1 + last.2 == o => last.2 += 1,
            _ => out.push((b, o, 1)),
        }
    }
    out
}

impl Naive {
    pub fn new(policy: Policy) -> Self {
        Naive {
            policy,
            domains: Vec::new(),
            aggs: Vec::new(),
            buffers: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn live_domain(&self, d: usize) -> Result<(), Error> {
        if self.domains.get(d).is_some_and(|x| x.alive) {
            Ok(())
        } else {
            Err(Error(ErrorKind::UnknownDomain))
        }
    }

    fn live_agg(&self, d: usize, a: usize) -> Result<&Agg, Error> {
        self.live_domain(d)?;
        match self.aggs.get(a) {
            Some(x) if x.alive && !x.pending && x.owner == d => Ok(x),
            _ => Err(Error(ErrorKind::UnknownAggregate)),
        }
    }

    fn mapping(&self, d: usize, b: usize) -> Rights {
        let buf = &self.buffers[b];
        if !buf.alive {
            return Rights::None;
        }
        buf.maps
            .iter()
            .find(|(x, _)| *x == d)
            .map_or(Rights::None, |(_, r)| *r)
    }

    fn set_mapping(&mut self, d: usize, b: usize, r: Rights) {
        let maps = &mut self.buffers[b].maps;
        maps.retain(|(x, _)| *x != d);
        if r != Rights::None {
            maps.push((d, r));
        }
    }

    /// Everything related to `a`, by searching the link graph (freed aggregates included,
    /// since relatedness, once made, stays).
    fn closure(&self, a: usize) -> Vec<usize> {
        let mut seen = vec![a];
        let mut i = 0;
        while i < seen.len() {
            for &n in &self.aggs[seen[i]].links {
                if !seen.contains(&n) {
                    seen.push(n);
                }
            }
            i += 1;
        }
        seen
    }

    fn collect_garbage(&mut self) {
        for b in 0..self.buffers.len() {
            if !self.buffers[b].alive {
                continue;
            }
            let held = self
                .aggs
                .iter()
                .any(|x| x.alive && x.cells.iter().any(|c| c.0 == b));
            if !held {
                let buf = &mut self.buffers[b];
                buf.alive = false;
                buf.data.clear();
                buf.maps.clear();
            }
        }
    }

    fn new_agg(
        &mut self,
        owner: usize,
        cells: Vec<Cell>,
        rights: Rights,
        links: Vec<usize>,
    ) -> usize {
        let id = self.aggs.len();
        for &l in &links {
            self.aggs[l].links.push(id);
        }
        self.aggs.push(Agg {
            owner,
            cells,
            rights,
            refs: 1,
            alive: true,
            pending: false,
            links,
        });
        id
    }

    fn bytes(&self, cells: &[Cell]) -> Vec<u8> {
        cells
            .iter()
            .map(|&(b, o)| self.buffers[b].data[o as usize])
            .collect()
    }

    fn send(
        &mut self,
        d: usize,
        a: usize,
        dest: usize,
        mode: Mode,
        flags: TransferFlags,
        ticketed: bool,
    ) -> Result<Option<u64>, Error> {
        self.live_domain(d)?;
        self.live_domain(dest)?;
        if d == dest {
            return Err(Error(ErrorKind::SelfTransfer));
        }
        let agg = self.live_agg(d, a)?.clone();
        // Table 1, literally.
        let (needs, keeps, gets) = match mode {
            Mode::Move => (Rights::ReadWrite, Rights::None, Rights::ReadWrite),
            Mode::Share => (Rights::Read, Rights::Read, Rights::Read),
            Mode::Copy => (Rights::Read, agg.rights, Rights::ReadWrite),
        };
        if agg.rights < needs {
            return Err(Error(ErrorKind::InsufficientRights));
        }
        let reported = if mode == Mode::Copy {
            Strength::Strong
        } else {
            flags.strength
        };

        let mut buffers: Vec<usize> = agg.cells.iter().map(|c| c.0).collect();
        buffers.sort_unstable();
        buffers.dedup();
        let related = self.closure(a);
        let mut by_ref = vec![false; self.buffers.len()];
        let mut small = vec![false; self.buffers.len()];
        let mut any_culprit = false;
        for &b in &buffers {
            if mode == Mode::Copy {
                continue;
            }
            let mut culprit = false;
            let mut neighbour = false;
            for (i, x) in self.aggs.iter().enumerate() {
                if i == a || !x.alive || x.owner != d || x.rights <= keeps {
                    continue;
                }
                if !x.cells.iter().any(|c| c.0 == b) {
                    continue;
                }
                if related.contains(&i) && !x.pending {
                    culprit = true;
                } else {
                    neighbour = true;
                }
            }
            any_culprit |= culprit;
            if culprit || neighbour {
                continue;
            }
            // A move must not hand over the same bytes twice: they would alias.
            let mut cells_in_b: Vec<&Cell> = agg.cells.iter().filter(|c| c.0 == b).collect();
            cells_in_b.sort_unstable();
            let repeated = cells_in_b.windows(2).any(|w| w[0] == w[1]);
            if mode == Mode::Move && repeated {
                continue;
            }
            let buf = &self.buffers[b];
            let referenced = agg.cells.iter().filter(|c| c.0 == b).count() as u64;
            let share_ok = buf.pool == self.domains[dest].pool
                && u128::from(referenced) * 100
                    >= u128::from(self.policy.min_reference_percent) * buf.data.len() as u128;
            by_ref[b] = share_ok && referenced >= self.policy.min_reference_bytes;
            small[b] = share_ok && referenced < self.policy.min_reference_bytes;
        }
        if any_culprit && flags.related == RelatedPolicy::Fail {
            return Err(Error(ErrorKind::RelatedAggregates));
        }

        // What each domain may do with buffer b once the transfer is done.
        let after = |me: &Naive, x: usize, b: usize| -> Rights {
            let mut best = Rights::None;
            for (i, g) in me.aggs.iter().enumerate() {
                if g.alive && g.owner == x && g.cells.iter().any(|c| c.0 == b) {
                    best = best.max(if i == a { keeps } else { g.rights });
                }
            }
            if x == dest {
                best = best.max(gets);
            }
            best
        };

        let untrusted = |me: &Naive, b: usize| {
            me.buffers[b].maps.iter().any(|&(x, m)| {
                x != dest && m > after(me, x, b) && !me.domains[dest].trusts.contains(&x)
            })
        };
        let mut strength = reported;
        if strength == Strength::Weak {
            for &b in &buffers {
                if by_ref[b] && untrusted(self, b) {
                    strength = Strength::Strong;
                }
            }
        }
        // A weak transfer that stays weak passes small buffers by reference too.
        if strength == Strength::Weak {
            for &b in &buffers {
                if small[b] && !untrusted(self, b) {
                    by_ref[b] = true;
                }
            }
        }
        if strength == Strength::Strong
            && mode == Mode::Move
            && self.policy.strong_move == MoveMechanism::Copy
        {
            for &b in &buffers {
                by_ref[b] = false;
            }
        }
        // A strong share copies a buffer never shared, if small enough, rather than seal it.
        let mut cost_copy = vec![false; self.buffers.len()];
        if strength == Strength::Strong && mode == Mode::Share {
            for &b in &buffers {
                let buf = &self.buffers[b];
                let referenced = agg.cells.iter().filter(|c| c.0 == b).count() as u64;
                if by_ref[b]
                    && !buf.sealed
                    && !buf.shared
                    && !buf.share_copied
                    && referenced <= self.policy.share_copy_max
                {
                    by_ref[b] = false;
                    cost_copy[b] = true;
                }
            }
        }

        let mut changes = Vec::new();
        let mut seal = Vec::new();
        for &b in &buffers {
            // Only what travels by reference changes hands; a copy changes no permission.
            if !by_ref[b] {
                continue;
            }
            if strength == Strength::Weak {
                changes.push((dest, b, self.mapping(dest, b).max(gets)));
                continue;
            }
            for &(x, m) in &self.buffers[b].maps {
                let allowed = after(self, x, b);
                if x != dest && m > allowed {
                    changes.push((x, b, allowed));
                }
            }
            changes.push((dest, b, after(self, dest, b)));
            if mode == Mode::Share {
                seal.push(b);
            }
        }

        // Build the receiver's cells: referenced cells stay, each run of copied cells goes
        // into one new buffer, filled with the bytes as they are now.
        let mut cells = Vec::new();
        let mut i = 0;
        let seal_copies = mode == Mode::Share && strength == Strength::Strong;
        while i < agg.cells.len() {
            if by_ref[agg.cells[i].0] {
                cells.push(agg.cells[i]);
                i += 1;
                continue;
            }
            let mut j = i;
            while j < agg.cells.len() && !by_ref[agg.cells[j].0] {
                j += 1;
            }
            let data = self.bytes(&agg.cells[i..j]);
            // Copied only to spare a seal: the receiver's alone, unsealed, and it may map
            // the memory writable.
            let sealed = seal_copies && agg.cells[i..j].iter().any(|c| !cost_copy[c.0]);
            let id = self.buffers.len();
            self.buffers.push(Buffer {
                pool: self.domains[dest].pool,
                data,
                alive: true,
                sealed,
                shared: mode == Mode::Share,
                share_copied: false,
                maps: vec![(dest, if sealed { gets } else { Rights::ReadWrite })],
            });
            cells.extend((0..(j - i) as u64).map(|o| (id, o)));
            i = j;
        }

        self.aggs[a].rights = keeps;
        for (x, b, r) in changes {
            self.set_mapping(x, b, r);
        }
        for b in seal {
            self.buffers[b].sealed = true;
        }
        for &b in &buffers {
            if cost_copy[b] {
                self.buffers[b].share_copied = true;
            }
            if by_ref[b] && mode == Mode::Share {
                self.buffers[b].shared = true;
            }
        }
        let id = self.new_agg(dest, cells, gets, Vec::new());
        self.aggs[id].pending = true;
        let ticket = ticketed.then(|| {
            1 + self
                .sent
                .iter()
                .filter(|s| s.source == d && s.dest == dest && s.ticket.is_some())
                .count() as u64
        });
        self.sent.push(Sent {
            dest,
            source: d,
            agg: id,
            mode,
            strength: reported,
            ticket,
            taken: false,
        });
        Ok(ticket)
    }

    fn take(&mut self, i: usize) -> Incoming<usize, usize> {
        self.sent[i].taken = true;
        let s = &self.sent[i];
        self.aggs[s.agg].pending = false;
        Incoming {
            agg: s.agg,
            source: s.source,
            mode: s.mode,
            strength: s.strength,
        }
    }
}

impl Cosh for Naive {
    type Domain = usize;
    type Agg = usize;
    type Piece = Piece;
    type Error = Error;

    fn kind_of(error: &Error) -> Option<ErrorKind> {
        Some(error.0)
    }

    fn connect(&mut self, pool: PoolId) -> Result<usize, Error> {
        self.domains.push(Domain {
            pool: pool.0,
            alive: true,
            trusts: Vec::new(),
        });
        Ok(self.domains.len() - 1)
    }

    fn kill(&mut self, d: usize) -> Result<(), Error> {
        self.live_domain(d)?;
        self.domains[d].alive = false;
        for x in &mut self.aggs {
            if x.owner == d {
                x.alive = false;
            }
        }
        for b in 0..self.buffers.len() {
            self.set_mapping(d, b, Rights::None);
        }
        self.collect_garbage();
        Ok(())
    }

    fn trust(&mut self, d: usize, peer: usize) -> Result<(), Error> {
        self.live_domain(peer)?;
        self.live_domain(d)?;
        self.domains[d].trusts.push(peer);
        Ok(())
    }

    fn alloc(&mut self, d: usize, len: u64) -> Result<usize, Error> {
        self.live_domain(d)?;
        // One byte cell per byte: far smaller limits than the model's, but the same error.
        if len > 1 << 26 {
            return Err(Error(ErrorKind::TooLarge));
        }
        if len == 0 {
            return Ok(self.new_agg(d, Vec::new(), Rights::ReadWrite, Vec::new()));
        }
        let b = self.buffers.len();
        self.buffers.push(Buffer {
            pool: self.domains[d].pool,
            data: vec![0; len as usize],
            alive: true,
            sealed: false,
            shared: false,
            share_copied: false,
            maps: vec![(d, Rights::ReadWrite)],
        });
        Ok(self.new_agg(
            d,
            (0..len).map(|o| (b, o)).collect(),
            Rights::ReadWrite,
            Vec::new(),
        ))
    }

    fn incref(&mut self, d: usize, a: usize) -> Result<(), Error> {
        self.live_agg(d, a)?;
        self.aggs[a].refs += 1;
        Ok(())
    }

    fn decref(&mut self, d: usize, a: usize) -> Result<(), Error> {
        self.live_agg(d, a)?;
        self.aggs[a].refs -= 1;
        if self.aggs[a].refs == 0 {
            self.aggs[a].alive = false;
            self.collect_garbage();
        }
        Ok(())
    }

    fn getlen(&mut self, d: usize, a: usize) -> Result<u64, Error> {
        Ok(self.live_agg(d, a)?.cells.len() as u64)
    }

    fn getrights(&mut self, d: usize, a: usize) -> Result<Rights, Error> {
        Ok(self.live_agg(d, a)?.rights)
    }

    fn iter(
        &mut self,
        d: usize,
        a: usize,
        access: Access,
        offset: u64,
    ) -> Result<Vec<Piece>, Error> {
        let x = self.live_agg(d, a)?;
        let needed = match access {
            Access::Read => Rights::Read,
            Access::Write => Rights::ReadWrite,
        };
        if x.rights < needed {
            return Err(Error(ErrorKind::InsufficientRights));
        }
        if offset > x.cells.len() as u64 {
            return Err(Error(ErrorKind::OutOfRange));
        }
        Ok(runs(&x.cells[offset as usize..]))
    }

    fn piece_len(piece: &Piece) -> u64 {
        piece.2
    }

    fn read(&mut self, d: usize, a: usize, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        self.iter(d, a, Access::Read, offset)?;
        let x = self.live_agg(d, a)?;
        if offset
            .checked_add(len)
            .is_none_or(|e| e > x.cells.len() as u64)
        {
            return Err(Error(ErrorKind::OutOfRange));
        }
        Ok(self.bytes(&x.cells[offset as usize..(offset + len) as usize]))
    }

    fn write(&mut self, d: usize, a: usize, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.iter(d, a, Access::Write, offset)?;
        let x = self.live_agg(d, a)?;
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|e| e > x.cells.len() as u64)
        {
            return Err(Error(ErrorKind::OutOfRange));
        }
        let cells = x.cells[offset as usize..offset as usize + data.len()].to_vec();
        for (&(b, o), v) in cells.iter().zip(data) {
            self.buffers[b].data[o as usize] = *v;
        }
        Ok(())
    }

    fn concat(&mut self, d: usize, first: usize, second: usize) -> Result<usize, Error> {
        let x = self.live_agg(d, first)?.clone();
        let y = self.live_agg(d, second)?.clone();
        if x.rights < Rights::Read || y.rights < Rights::Read {
            return Err(Error(ErrorKind::InsufficientRights));
        }
        let mut cells = x.cells;
        cells.extend(y.cells);
        Ok(self.new_agg(d, cells, x.rights.min(y.rights), vec![first, second]))
    }

    fn select(&mut self, d: usize, a: usize, offset: u64, len: u64) -> Result<usize, Error> {
        let x = self.live_agg(d, a)?.clone();
        if x.rights < Rights::Read {
            return Err(Error(ErrorKind::InsufficientRights));
        }
        if offset
            .checked_add(len)
            .is_none_or(|e| e > x.cells.len() as u64)
        {
            return Err(Error(ErrorKind::OutOfRange));
        }
        let cells = x.cells[offset as usize..(offset + len) as usize].to_vec();
        Ok(self.new_agg(d, cells, x.rights, vec![a]))
    }

    fn find_related(&mut self, d: usize, a: usize, min: Rights) -> Result<Vec<usize>, Error> {
        self.live_agg(d, a)?;
        let mut out: Vec<usize> = self
            .closure(a)
            .into_iter()
            .filter(|&i| i != a)
            .filter(|&i| {
                let x = &self.aggs[i];
                x.alive && !x.pending && x.rights >= min
            })
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    fn downgrade(&mut self, d: usize, a: usize, rights: Rights) -> Result<(), Error> {
        if rights > self.live_agg(d, a)?.rights {
            return Err(Error(ErrorKind::RightsUpgrade));
        }
        self.aggs[a].rights = rights;
        Ok(())
    }

    fn transfer(
        &mut self,
        d: usize,
        a: usize,
        dest: usize,
        mode: Mode,
        flags: TransferFlags,
    ) -> Result<(), Error> {
        self.send(d, a, dest, mode, flags, false).map(|_| ())
    }

    fn attach_transfer(
        &mut self,
        d: usize,
        a: usize,
        dest: usize,
        mode: Mode,
        flags: TransferFlags,
    ) -> Result<Ticket, Error> {
        let t = self.send(d, a, dest, mode, flags, true)?;
        Ok(Ticket(t.unwrap_or(0)))
    }

    fn receive(
        &mut self,
        d: usize,
        source: Option<usize>,
    ) -> Result<Incoming<usize, usize>, Error> {
        self.live_domain(d)?;
        let i = self
            .sent
            .iter()
            .position(|s| {
                !s.taken
                    && s.ticket.is_none()
                    && s.dest == d
                    && source.is_none_or(|x| x == s.source)
            })
            .ok_or(Error(ErrorKind::NothingPending))?;
        Ok(self.take(i))
    }

    fn attach_recv(
        &mut self,
        d: usize,
        source: usize,
        ticket: Ticket,
    ) -> Result<Incoming<usize, usize>, Error> {
        self.live_domain(d)?;
        let found = self
            .sent
            .iter()
            .position(|s| s.dest == d && s.source == source && s.ticket == Some(ticket.0));
        match found {
            Some(i) if !self.sent[i].taken => Ok(self.take(i)),
            Some(_) => Err(Error(ErrorKind::TicketReused)),
            None => Err(Error(ErrorKind::UnknownTicket)),
        }
    }

    fn peek(&mut self, d: usize, p: &Piece) -> Result<Vec<u8>, Error> {
        let (b, o, len) = *p;
        if self.mapping(d, b) < Rights::Read {
            return Err(Error(ErrorKind::Fault));
        }
        Ok(self.buffers[b].data[o as usize..(o + len) as usize].to_vec())
    }

    fn poke(&mut self, d: usize, p: &Piece, data: &[u8]) -> Result<(), Error> {
        let (b, o, len) = *p;
        if self.mapping(d, b) != Rights::ReadWrite
            || self.buffers[b].sealed
            || len != data.len() as u64
        {
            return Err(Error(ErrorKind::Fault));
        }
        self.buffers[b].data[o as usize..(o + len) as usize].copy_from_slice(data);
        Ok(())
    }
}
