//! The ledger (through the reference model) against a deliberately naive second
//! implementation, over random operation sequences under several mechanism policies: every
//! operation must succeed or fail alike (same error kind), return the same values, and leave
//! every aggregate with the same rights and bytes; misbehaving accesses through remembered
//! pieces must fault alike. The ledger's own invariants are checked after every operation.

mod support;

use cosh_core::api::Cosh;
use cosh_core::ledger::{MoveMechanism, Policy};
use cosh_core::model::Model;
use cosh_core::{Access, AggId, DomainId, Mode, PoolId, RelatedPolicy, Rights, Strength, Ticket};
use cosh_core::{Chunk, TransferFlags};
use proptest::prelude::*;
use proptest::sample::Index;
use support::naive::{Naive, Piece};

const DOMAINS: usize = 4;

#[derive(Clone, Debug)]
enum Op {
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

fn rights() -> impl Strategy<Value = Rights> {
    prop::sample::select(Rights::ALL.to_vec())
}

fn op() -> impl Strategy<Value = Op> {
    let d = 0..DOMAINS;
    prop_oneof![
        4 => (d.clone(), 0u64..48).prop_map(|(d, l)| Op::Alloc(d, l)),
        3 => (d.clone(), any::<Index>(), 0u64..40, 0u64..20, any::<u8>()).prop_map(|(d, a, o, l, v)| Op::Write(d, a, o, l, v)),
        2 => (d.clone(), any::<Index>(), 0u64..40, 0u64..40).prop_map(|(d, a, o, l)| Op::Read(d, a, o, l)),
        4 => (d.clone(), any::<Index>(), 0u64..40, 0u64..40).prop_map(|(d, a, o, l)| Op::Select(d, a, o, l)),
        3 => (d.clone(), any::<Index>(), any::<Index>()).prop_map(|(d, a, b)| Op::Concat(d, a, b)),
        1 => (d.clone(), any::<Index>(), rights()).prop_map(|(d, a, r)| Op::Downgrade(d, a, r)),
        1 => (d.clone(), any::<Index>()).prop_map(|(d, a)| Op::Incref(d, a)),
        2 => (d.clone(), any::<Index>()).prop_map(|(d, a)| Op::Decref(d, a)),
        1 => (d.clone(), any::<Index>(), rights()).prop_map(|(d, a, r)| Op::FindRelated(d, a, r)),
        8 => (d.clone(), any::<Index>(), d.clone(), prop::sample::select(Mode::ALL.to_vec()), any::<bool>(), any::<bool>(), any::<bool>())
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
        5 => (d.clone(), prop::option::of(d.clone())).prop_map(|(d, s)| Op::Receive(d, s)),
        3 => (d.clone(), d.clone(), any::<Index>(), prop::option::weighted(0.2, 0u64..4)).prop_map(|(d, s, t, f)| Op::AttachRecv(d, s, t, f)),
        2 => (d.clone(), d.clone()).prop_map(|(d, p)| Op::Trust(d, p)),
        1 => (0..DOMAINS * 8).prop_map(Op::Kill),
        3 => (d.clone(), any::<Index>(), prop::sample::select(vec![Access::Read, Access::Write]), 0u64..40).prop_map(|(d, a, x, o)| Op::Iter(d, a, x, o)),
        2 => (d.clone(), any::<Index>()).prop_map(|(d, p)| Op::Peek(d, p)),
        2 => (d.clone(), any::<Index>(), any::<u8>()).prop_map(|(d, p, v)| Op::Poke(d, p, v)),
    ]
}

fn policies() -> impl Strategy<Value = Policy> {
    prop::sample::select(vec![
        Policy::by_reference(),
        Policy::copy_always(),
        // The Linux host policy scaled to these small buffers.
        Policy {
            strong_move: MoveMechanism::Copy,
            min_reference_bytes: 8,
            min_reference_percent: 50,
        },
        Policy {
            strong_move: MoveMechanism::Remap,
            min_reference_bytes: 4,
            min_reference_percent: 25,
        },
    ])
}

/// Handles of both implementations created by the same operation.
struct Pairs {
    domains: Vec<(DomainId, usize)>,
    aggs: Vec<(AggId, usize)>,
    pieces: Vec<(Vec<Chunk>, Vec<Piece>)>,
    tickets: Vec<(DomainId, DomainId, Ticket)>,
}

fn same<T: PartialEq + std::fmt::Debug, U: PartialEq + std::fmt::Debug>(
    op: &Op,
    model: &Result<T, cosh_core::Error>,
    naive: &Result<U, cosh_core::Error>,
    eq: impl Fn(&T, &U) -> bool,
) -> Result<(), TestCaseError> {
    match (model, naive) {
        (Ok(m), Ok(n)) if eq(m, n) => Ok(()),
        (Err(m), Err(n)) if m.kind() == n.kind() => Ok(()),
        _ => Err(TestCaseError::fail(format!(
            "{op:?}: the ledger gave {model:?}, the naive model {naive:?}"
        ))),
    }
}

fn run(policy: Policy, pools: &[u32], ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = Model::new(policy);
    let mut naive = Naive::new(policy);
    let mut p = Pairs {
        domains: Vec::new(),
        aggs: Vec::new(),
        pieces: Vec::new(),
        tickets: Vec::new(),
    };
    for pool in pools {
        let m = model.connect(PoolId(*pool)).expect("connect");
        let n = naive.connect(PoolId(*pool)).expect("connect");
        p.domains.push((m, n));
    }
    for op in ops {
        step(&mut model, &mut naive, &mut p, op)?;
        model
            .ledger()
            .check_invariants()
            .map_err(|e| TestCaseError::fail(format!("after {op:?}: {e}")))?;
        compare_state(&mut model, &mut naive, &p, op)?;
    }
    Ok(())
}

fn step(model: &mut Model, naive: &mut Naive, p: &mut Pairs, op: &Op) -> Result<(), TestCaseError> {
    let dom = |i: usize| p.domains[i % p.domains.len()];
    let agg = |i: &Index| -> Option<(AggId, usize)> {
        (!p.aggs.is_empty()).then(|| p.aggs[i.index(p.aggs.len())])
    };
    match op {
        Op::Alloc(d, len) => {
            let (md, nd) = dom(*d);
            let (m, n) = (model.alloc(md, *len), naive.alloc(nd, *len));
            same(op, &m, &n, |_, _| true)?;
            if let (Ok(m), Ok(n)) = (m, n) {
                p.aggs.push((m, n));
            }
        }
        Op::Write(d, a, offset, len, v) => {
            let ((md, nd), Some((ma, na))) = (dom(*d), agg(a)) else {
                return Ok(());
            };
            let data = vec![*v; *len as usize];
            same(
                op,
                &model.write(md, ma, *offset, &data),
                &naive.write(nd, na, *offset, &data),
                |_, _| true,
            )?;
        }
        Op::Read(d, a, offset, len) => {
            let ((md, nd), Some((ma, na))) = (dom(*d), agg(a)) else {
                return Ok(());
            };
            same(
                op,
                &model.read(md, ma, *offset, *len),
                &naive.read(nd, na, *offset, *len),
                |m, n| m == n,
            )?;
        }
        Op::Select(d, a, offset, len) => {
            let ((md, nd), Some((ma, na))) = (dom(*d), agg(a)) else {
                return Ok(());
            };
            let (m, n) = (
                model.select(md, ma, *offset, *len),
                naive.select(nd, na, *offset, *len),
            );
            same(op, &m, &n, |_, _| true)?;
            if let (Ok(m), Ok(n)) = (m, n) {
                p.aggs.push((m, n));
            }
        }
        Op::Concat(d, a, b) => {
            let ((md, nd), Some((ma, na)), Some((mb, nb))) = (dom(*d), agg(a), agg(b)) else {
                return Ok(());
            };
            let (m, n) = (model.concat(md, ma, mb), naive.concat(nd, na, nb));
            same(op, &m, &n, |_, _| true)?;
            if let (Ok(m), Ok(n)) = (m, n) {
                p.aggs.push((m, n));
            }
        }
        Op::Downgrade(d, a, r) => {
            let ((md, nd), Some((ma, na))) = (dom(*d), agg(a)) else {
                return Ok(());
            };
            same(
                op,
                &model.downgrade(md, ma, *r),
                &naive.downgrade(nd, na, *r),
                |_, _| true,
            )?;
        }
        Op::Incref(d, a) => {
            let ((md, nd), Some((ma, na))) = (dom(*d), agg(a)) else {
                return Ok(());
            };
            same(op, &model.incref(md, ma), &naive.incref(nd, na), |_, _| {
                true
            })?;
        }
        Op::Decref(d, a) => {
            let ((md, nd), Some((ma, na))) = (dom(*d), agg(a)) else {
                return Ok(());
            };
            same(op, &model.decref(md, ma), &naive.decref(nd, na), |_, _| {
                true
            })?;
        }
        Op::FindRelated(d, a, r) => {
            let ((md, nd), Some((ma, na))) = (dom(*d), agg(a)) else {
                return Ok(());
            };
            let pairs = &p.aggs;
            same(
                op,
                &model.find_related(md, ma, *r),
                &naive.find_related(nd, na, *r),
                |m, n| {
                    let mut mapped: Vec<usize> = m
                        .iter()
                        .filter_map(|x| pairs.iter().find(|(pm, _)| pm == x).map(|(_, pn)| *pn))
                        .collect();
                    mapped.sort_unstable();
                    mapped.len() == m.len() && mapped == *n
                },
            )?;
        }
        Op::Transfer {
            domain,
            agg: a,
            dest,
            mode,
            flags,
            ticketed,
        } => {
            let ((md, nd), (mt, nt), Some((ma, na))) = (dom(*domain), dom(*dest), agg(a)) else {
                return Ok(());
            };
            if *ticketed {
                let (m, n) = (
                    model.attach_transfer(md, ma, mt, *mode, *flags),
                    naive.attach_transfer(nd, na, nt, *mode, *flags),
                );
                same(op, &m, &n, |m, n| m == n)?;
                if let Ok(t) = m {
                    p.tickets.push((md, mt, t));
                }
            } else {
                same(
                    op,
                    &model.transfer(md, ma, mt, *mode, *flags),
                    &naive.transfer(nd, na, nt, *mode, *flags),
                    |_, _| true,
                )?;
            }
        }
        Op::Receive(d, source) => {
            let (md, nd) = dom(*d);
            let (ms, ns) = match source {
                Some(s) => (Some(dom(*s).0), Some(dom(*s).1)),
                None => (None, None),
            };
            let (m, n) = (model.receive(md, ms), naive.receive(nd, ns));
            let domains = &p.domains;
            same(op, &m, &n, |m, n| {
                m.mode == n.mode
                    && m.strength == n.strength
                    && domains
                        .iter()
                        .any(|(dm, dn)| *dm == m.source && *dn == n.source)
            })?;
            if let (Ok(m), Ok(n)) = (m, n) {
                p.aggs.push((m.agg, n.agg));
            }
        }
        Op::AttachRecv(d, source, t, forged) => {
            let ((md, nd), (ms, ns)) = (dom(*d), dom(*source));
            let ticket = match (forged, p.tickets.is_empty()) {
                (Some(_), _) | (None, true) => Ticket(forged.unwrap_or(0)),
                (None, false) => p.tickets[t.index(p.tickets.len())].2,
            };
            let (m, n) = (
                model.attach_recv(md, ms, ticket),
                naive.attach_recv(nd, ns, ticket),
            );
            same(op, &m, &n, |m, n| {
                m.mode == n.mode && m.strength == n.strength
            })?;
            if let (Ok(m), Ok(n)) = (m, n) {
                p.aggs.push((m.agg, n.agg));
            }
        }
        Op::Trust(d, peer) => {
            let ((md, nd), (mp, np)) = (dom(*d), dom(*peer));
            same(op, &model.trust(md, mp), &naive.trust(nd, np), |_, _| true)?;
        }
        Op::Kill(d) => {
            // Kills are rare: only small numbers name a domain.
            if *d < DOMAINS {
                let (md, nd) = dom(*d);
                same(op, &model.kill(md), &naive.kill(nd), |_, _| true)?;
            }
        }
        Op::Iter(d, a, access, offset) => {
            let ((md, nd), Some((ma, na))) = (dom(*d), agg(a)) else {
                return Ok(());
            };
            let (m, n) = (
                model.iter(md, ma, *access, *offset),
                naive.iter(nd, na, *access, *offset),
            );
            same(op, &m, &n, |m, n| {
                m.len() == n.len() && m.iter().zip(n).all(|(a, b)| a.len == b.2)
            })?;
            if let (Ok(m), Ok(n)) = (m, n) {
                p.pieces.push((m, n));
            }
        }
        Op::Peek(d, i) | Op::Poke(d, i, _) => {
            if p.pieces.is_empty() {
                return Ok(());
            }
            let (md, nd) = dom(*d);
            let (mp, np) = p.pieces[i.index(p.pieces.len())].clone();
            for (m, n) in mp.iter().zip(&np) {
                match op {
                    Op::Poke(_, _, v) => {
                        let data = vec![*v; m.len as usize];
                        same(
                            op,
                            &model.poke(md, m, &data),
                            &naive.poke(nd, n, &data),
                            |_, _| true,
                        )?;
                    }
                    _ => same(op, &model.peek(md, m), &naive.peek(nd, n), |a, b| a == b)?,
                }
            }
        }
    }
    Ok(())
}

/// Every aggregate has the same rights and bytes in both implementations.
fn compare_state(
    model: &mut Model,
    naive: &mut Naive,
    p: &Pairs,
    op: &Op,
) -> Result<(), TestCaseError> {
    for &(ma, na) in &p.aggs {
        for &(md, nd) in &p.domains {
            let (mr, nr) = (model.getrights(md, ma), naive.getrights(nd, na));
            same(op, &mr, &nr, |a, b| a == b)?;
            if let Ok(r) = mr
                && r.can_read()
            {
                let len = model.getlen(md, ma).unwrap_or(0);
                same(
                    op,
                    &model.read(md, ma, 0, len),
                    &naive.read(nd, na, 0, len),
                    |a, b| a == b,
                )?;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn the_ledger_behaves_like_the_naive_model(
        policy in policies(),
        pools in prop::collection::vec(0u32..2, DOMAINS),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(policy, &pools, &ops)?;
    }
}
