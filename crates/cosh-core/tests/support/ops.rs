//! Random operation sequences over the aggregate API, and a driver that runs one against any
//! implementation and records what it observed, with handles replaced by their creation
//! index so that two implementations' observations compare directly.

use std::fmt::Debug;

use cosh_core::api::{Cosh, Incoming};
use cosh_core::ledger::{MoveMechanism, Policy};
use cosh_core::{Access, Mode, PoolId, RelatedPolicy, Rights, Strength, Ticket, TransferFlags};
use proptest::prelude::*;

/// A choice among the things made so far, whatever their number (as proptest's
/// `sample::Index`, but a plain value anyone can make: the fuzz targets build operations
/// from raw bytes).
#[derive(Clone, Copy, Debug)]
pub struct Index(pub usize);

impl Index {
    /// The chosen position among `size` things (`size` > 0): the fraction `self.0 / 2^64`
    /// of the way along.
    pub fn index(&self, size: usize) -> usize {
        ((size as u128 * self.0 as u128) >> usize::BITS) as usize
    }
}

fn pick() -> impl Strategy<Value = Index> {
    any::<usize>().prop_map(Index)
}

/// Domains connected at the start of every sequence.
pub const DOMAINS: usize = 4;

/// The domains [`observe`] connects, one per entry of `pools` in that pool, by the ids a
/// ledger gives them: numbered from 1 in the order they connect.
pub fn connected(pools: &[u32]) -> std::collections::BTreeSet<cosh_core::DomainId> {
    pools
        .iter()
        .enumerate()
        .map(|(i, p)| cosh_core::DomainId {
            pool: PoolId(*p),
            index: i as u32 + 1,
        })
        .collect()
}

/// One random operation; aggregates, pieces and tickets are picked among those made so far.
#[derive(Clone, Debug)]
pub enum Op {
    Alloc(usize, u64),
    Write(usize, Index, u64, u64, u8),
    Read(usize, Index, u64, u64),
    Select(usize, Index, u64, u64),
    Concat(usize, Index, Index),
    Downgrade(usize, Index, Rights),
    Incref(usize, Index),
    Decref(usize, Index),
    FindRelated(usize, Index, Rights),
    Transfer {
        domain: usize,
        agg: Index,
        dest: usize,
        mode: Mode,
        flags: TransferFlags,
        ticketed: bool,
    },
    Receive(usize, Option<usize>),
    AttachRecv(usize, usize, Index, Option<u64>),
    Trust(usize, usize),
    Kill(usize),
    Iter(usize, Index, Access, u64),
    Peek(usize, Index),
    Poke(usize, Index, u8),
}

impl Op {
    /// Whether what the operation observes depends on the mechanism, not only on the
    /// semantics: memory touched behind the API's back, and the chunk structure that
    /// iteration exposes (a transfer preserves only the byte vector).
    pub fn mechanism_dependent(&self) -> bool {
        matches!(self, Op::Peek(..) | Op::Poke(..) | Op::Iter(..))
    }
}

fn rights() -> impl Strategy<Value = Rights> {
    prop::sample::select(Rights::ALL.to_vec())
}

/// A random operation.
pub fn op() -> impl Strategy<Value = Op> {
    let d = 0..DOMAINS;
    // For operations on an aggregate, a selector past the last domain means "its owner", so
    // most such operations are made by the domain that can make them.
    let o = 0..DOMAINS * 3;
    prop_oneof![
        4 => (d.clone(), 0u64..48).prop_map(|(d, l)| Op::Alloc(d, l)),
        3 => (o.clone(), pick(), 0u64..64, 0u64..64, any::<u8>())
            .prop_map(|(d, a, o, l, v)| Op::Write(d, a, o, l, v)),
        2 => (o.clone(), pick(), 0u64..64, 0u64..64).prop_map(|(d, a, o, l)| Op::Read(d, a, o, l)),
        4 => (o.clone(), pick(), 0u64..64, 0u64..64).prop_map(|(d, a, o, l)| Op::Select(d, a, o, l)),
        3 => (o.clone(), pick(), pick()).prop_map(|(d, a, b)| Op::Concat(d, a, b)),
        // Self-concatenation: an aggregate that refers to the same bytes twice.
        1 => (o.clone(), pick()).prop_map(|(d, a)| Op::Concat(d, a, a)),
        1 => (o.clone(), pick(), rights()).prop_map(|(d, a, r)| Op::Downgrade(d, a, r)),
        1 => (o.clone(), pick()).prop_map(|(d, a)| Op::Incref(d, a)),
        2 => (o.clone(), pick()).prop_map(|(d, a)| Op::Decref(d, a)),
        1 => (o.clone(), pick(), rights()).prop_map(|(d, a, r)| Op::FindRelated(d, a, r)),
        8 => (
            o.clone(),
            pick(),
            d.clone(),
            prop::sample::select(Mode::ALL.to_vec()),
            any::<bool>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(domain, agg, dest, mode, weak, fail, ticketed)| Op::Transfer {
                domain,
                agg,
                dest,
                mode,
                flags: TransferFlags {
                    strength: if weak { Strength::Weak } else { Strength::Strong },
                    related: if fail { RelatedPolicy::Fail } else { RelatedPolicy::Copy },
                },
                ticketed,
            }),
        5 => (o.clone(), prop::option::of(d.clone())).prop_map(|(d, s)| Op::Receive(d, s)),
        3 => (o.clone(), d.clone(), pick(), prop::option::weighted(0.2, 0u64..4))
            .prop_map(|(d, s, t, f)| Op::AttachRecv(d, s, t, f)),
        2 => (d.clone(), d.clone()).prop_map(|(d, p)| Op::Trust(d, p)),
        1 => (0..DOMAINS * 8).prop_map(Op::Kill),
        3 => (o.clone(), pick(), prop::sample::select(vec![Access::Read, Access::Write]), 0u64..64)
            .prop_map(|(d, a, x, o)| Op::Iter(d, a, x, o)),
        2 => (d.clone(), pick()).prop_map(|(d, p)| Op::Peek(d, p)),
        2 => (d, pick(), any::<u8>()).prop_map(|(d, p, v)| Op::Poke(d, p, v)),
    ]
}

/// Mechanism policies, scaled to the small buffers of random sequences.
pub fn policies() -> impl Strategy<Value = Policy> {
    prop::sample::select(vec![
        Policy::by_reference(),
        Policy::copy_always(),
        Policy {
            strong_move: MoveMechanism::Copy,
            min_reference_bytes: 8,
            min_reference_percent: 50,
            share_copy_max: 0,
        },
        Policy {
            strong_move: MoveMechanism::Remap,
            min_reference_bytes: 4,
            min_reference_percent: 25,
            share_copy_max: 0,
        },
        // Strong shares of buffers never shared copy (as the Linux host pool chooses).
        Policy {
            strong_move: MoveMechanism::Copy,
            min_reference_bytes: 8,
            min_reference_percent: 50,
            share_copy_max: 48,
        },
    ])
}

/// The handles an implementation gave out, by creation index.
pub struct Handles<C: Cosh> {
    pub domains: Vec<C::Domain>,
    pub aggs: Vec<C::Agg>,
    /// The index of the domain each aggregate was made in.
    pub owners: Vec<usize>,
    pub pieces: Vec<Vec<C::Piece>>,
    /// Tickets issued, with the destination and source domain indices.
    pub tickets: Vec<(Ticket, usize, usize)>,
    /// Queued transfers not yet received: (destination, source) domain indices.
    pub queued: Vec<(usize, usize)>,
}

impl<C: Cosh> Handles<C> {
    fn agg_index(&self, a: &C::Agg) -> Option<usize> {
        self.aggs.iter().position(|x| x == a)
    }

    fn domain_index(&self, d: &C::Domain) -> Option<usize> {
        self.domains.iter().position(|x| x == d)
    }
}

fn show<T: Debug, C: Cosh>(r: Result<T, C::Error>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("error {:?}", C::kind_of(&e)),
    }
}

/// Runs `ops` against `cosh` (domains in `pools`), returning one observation per operation,
/// followed, with `with_state`, by every aggregate's rights and bytes as seen by every domain.
/// `after_each` runs after every operation and may fail the run.
pub fn observe<C: Cosh>(
    cosh: &mut C,
    pools: &[u32],
    ops: &[Op],
    with_state: bool,
    mut after_each: impl FnMut(&C, &Op) -> Result<(), String>,
) -> Result<(Vec<String>, Handles<C>), String> {
    let mut h = Handles::<C> {
        domains: Vec::new(),
        aggs: Vec::new(),
        owners: Vec::new(),
        pieces: Vec::new(),
        tickets: Vec::new(),
        queued: Vec::new(),
    };
    for pool in pools {
        h.domains
            .push(cosh.connect(PoolId(*pool)).map_err(|e| e.to_string())?);
    }
    let mut seen = Vec::new();
    for op in ops {
        let o = apply(cosh, &mut h, op);
        seen.push(format!("{op:?} -> {o}"));
        after_each(cosh, op)?;
        if with_state {
            for (i, a) in h.aggs.clone().into_iter().enumerate() {
                for (j, d) in h.domains.clone().into_iter().enumerate() {
                    let rights = cosh.getrights(d, a);
                    let bytes = match &rights {
                        Ok(r) if r.can_read() => {
                            let len = cosh.getlen(d, a).unwrap_or(0);
                            show::<_, C>(cosh.read(d, a, 0, len))
                        }
                        _ => String::new(),
                    };
                    seen.push(format!(
                        "  agg {i} in domain {j}: {} {bytes}",
                        show::<_, C>(rights)
                    ));
                }
            }
        }
    }
    Ok((seen, h))
}

fn incoming<C: Cosh>(
    h: &mut Handles<C>,
    owner: usize,
    r: Result<Incoming<C::Agg, C::Domain>, C::Error>,
) -> String {
    match r {
        Ok(i) => {
            h.aggs.push(i.agg);
            h.owners.push(owner);
            format!(
                "ok agg {} from {:?} by {} {}",
                h.aggs.len() - 1,
                h.domain_index(&i.source),
                i.mode,
                i.strength
            )
        }
        Err(e) => format!("error {:?}", C::kind_of(&e)),
    }
}

fn made<C: Cosh>(h: &mut Handles<C>, owner: usize, r: Result<C::Agg, C::Error>) -> String {
    match r {
        Ok(a) => {
            h.aggs.push(a);
            h.owners.push(owner);
            format!("ok agg {}", h.aggs.len() - 1)
        }
        Err(e) => format!("error {:?}", C::kind_of(&e)),
    }
}

/// An aggregate picked by `index`, with the domain `selector` names (its owner when the
/// selector is past the last domain) and its length as that owner sees it (0 if unknown).
struct Target<C: Cosh> {
    agg: C::Agg,
    domain: C::Domain,
    domain_index: usize,
    len: u64,
}

fn target<C: Cosh>(
    cosh: &mut C,
    h: &Handles<C>,
    selector: usize,
    index: &Index,
) -> Option<Target<C>> {
    if h.aggs.is_empty() {
        return None;
    }
    let i = index.index(h.aggs.len());
    let domain_index = if selector < DOMAINS {
        selector
    } else {
        h.owners[i]
    };
    let owner = h.domains[h.owners[i]];
    let len = cosh.getlen(owner, h.aggs[i]).unwrap_or(0);
    Some(Target {
        agg: h.aggs[i],
        domain: h.domains[domain_index],
        domain_index,
        len,
    })
}

/// A position relative to a length: mostly inside, sometimes exactly at the end or one past.
fn fit(x: u64, len: u64) -> u64 {
    x % (len + 2)
}

fn apply<C: Cosh>(cosh: &mut C, h: &mut Handles<C>, op: &Op) -> String {
    let none = String::from("skipped");
    match op {
        Op::Alloc(d, len) => {
            let r = cosh.alloc(h.domains[*d], *len);
            made(h, *d, r)
        }
        Op::Write(d, a, offset, len, v) => {
            let Some(t) = target(cosh, h, *d, a) else {
                return none;
            };
            let offset = fit(*offset, t.len);
            let data = vec![*v; fit(*len, t.len.saturating_sub(offset)) as usize];
            show::<_, C>(cosh.write(t.domain, t.agg, offset, &data))
        }
        Op::Read(d, a, offset, len) => {
            let Some(t) = target(cosh, h, *d, a) else {
                return none;
            };
            let offset = fit(*offset, t.len);
            let len = fit(*len, t.len.saturating_sub(offset));
            show::<_, C>(cosh.read(t.domain, t.agg, offset, len))
        }
        Op::Select(d, a, offset, len) => {
            let Some(t) = target(cosh, h, *d, a) else {
                return none;
            };
            let offset = fit(*offset, t.len);
            let len = fit(*len, t.len.saturating_sub(offset));
            let r = cosh.select(t.domain, t.agg, offset, len);
            made(h, t.domain_index, r)
        }
        Op::Concat(d, a, b) => {
            let (Some(t), Some(u)) = (target(cosh, h, *d, a), target(cosh, h, *d, b)) else {
                return none;
            };
            let r = cosh.concat(t.domain, t.agg, u.agg);
            made(h, t.domain_index, r)
        }
        Op::Downgrade(d, a, r) => {
            let Some(t) = target(cosh, h, *d, a) else {
                return none;
            };
            show::<_, C>(cosh.downgrade(t.domain, t.agg, *r))
        }
        Op::Incref(d, a) => {
            let Some(t) = target(cosh, h, *d, a) else {
                return none;
            };
            show::<_, C>(cosh.incref(t.domain, t.agg))
        }
        Op::Decref(d, a) => {
            let Some(t) = target(cosh, h, *d, a) else {
                return none;
            };
            show::<_, C>(cosh.decref(t.domain, t.agg))
        }
        Op::FindRelated(d, a, r) => {
            let Some(t) = target(cosh, h, *d, a) else {
                return none;
            };
            match cosh.find_related(t.domain, t.agg, *r) {
                Ok(found) => {
                    let mut idx: Vec<Option<usize>> =
                        found.iter().map(|f| h.agg_index(f)).collect();
                    idx.sort_unstable();
                    format!("ok {idx:?}")
                }
                Err(e) => format!("error {:?}", C::kind_of(&e)),
            }
        }
        Op::Transfer {
            domain,
            agg: a,
            dest,
            mode,
            flags,
            ticketed,
        } => {
            let Some(t) = target(cosh, h, *domain, a) else {
                return none;
            };
            let to = h.domains[*dest];
            if *ticketed {
                match cosh.attach_transfer(t.domain, t.agg, to, *mode, *flags) {
                    Ok(ticket) => {
                        h.tickets.push((ticket, *dest, t.domain_index));
                        format!("ok {ticket:?}")
                    }
                    Err(e) => format!("error {:?}", C::kind_of(&e)),
                }
            } else {
                let r = cosh.transfer(t.domain, t.agg, to, *mode, *flags);
                if r.is_ok() {
                    h.queued.push((*dest, t.domain_index));
                }
                show::<_, C>(r)
            }
        }
        Op::Receive(d, source) => {
            // A selector past the last domain receives the oldest transfer still queued.
            let (d, source) = match h.queued.first() {
                Some(&(dest, from)) if *d >= DOMAINS => (dest, source.map(|_| from)),
                _ => (*d % DOMAINS, *source),
            };
            let r = cosh.receive(h.domains[d], source.map(|s| h.domains[s]));
            if let Ok(i) = &r
                && let Some(from) = h.domain_index(&i.source)
                && let Some(k) = h.queued.iter().position(|q| *q == (d, from))
            {
                h.queued.remove(k);
            }
            incoming(h, d, r)
        }
        Op::AttachRecv(d, source, t, forged) => {
            // A selector past the last domain redeems an issued ticket where it was sent.
            let (ticket, d, source) = match (forged, h.tickets.is_empty()) {
                (Some(v), _) => (Ticket(*v), *d % DOMAINS, *source),
                (None, true) => (Ticket(0), *d % DOMAINS, *source),
                (None, false) => {
                    let (ticket, dest, from) = h.tickets[t.index(h.tickets.len())];
                    if *d >= DOMAINS {
                        (ticket, dest, from)
                    } else {
                        (ticket, *d, *source)
                    }
                }
            };
            let r = cosh.attach_recv(h.domains[d], h.domains[source], ticket);
            incoming(h, d, r)
        }
        Op::Trust(d, peer) => show::<_, C>(cosh.trust(h.domains[*d], h.domains[*peer])),
        Op::Kill(d) => {
            // Kills are rare: only small numbers name a domain.
            if *d < DOMAINS {
                show::<_, C>(cosh.kill(h.domains[*d]))
            } else {
                none
            }
        }
        Op::Iter(d, a, access, offset) => {
            let Some(t) = target(cosh, h, *d, a) else {
                return none;
            };
            match cosh.iter(t.domain, t.agg, *access, fit(*offset, t.len)) {
                Ok(pieces) => {
                    let lens: Vec<u64> = pieces.iter().map(C::piece_len).collect();
                    h.pieces.push(pieces);
                    format!("ok {lens:?}")
                }
                Err(e) => format!("error {:?}", C::kind_of(&e)),
            }
        }
        Op::Peek(d, i) | Op::Poke(d, i, _) => {
            if h.pieces.is_empty() {
                return none;
            }
            let d = h.domains[*d];
            let pieces = h.pieces[i.index(h.pieces.len())].clone();
            let mut out = Vec::new();
            for p in &pieces {
                out.push(match op {
                    Op::Poke(_, _, v) => {
                        show::<_, C>(cosh.poke(d, p, &vec![*v; C::piece_len(p) as usize]))
                    }
                    _ => show::<_, C>(cosh.peek(d, p)),
                });
            }
            out.join(", ")
        }
    }
}
