//! Table 1 checked exhaustively: every mode x strength x receiver trust x the sender's rights
//! x related-aggregate state x related policy x mechanism policy x pool placement, against
//! the table written out as data.

use cosh_core::api::Cosh;
use cosh_core::ledger::Policy;
use cosh_core::model::Model;
use cosh_core::{Access, AggId, DomainId, ErrorKind, Mode, PoolId, RelatedPolicy, Rights};
use cosh_core::{Strength, TransferFlags};

/// What the sender keeps, as the paper's table says it.
#[derive(Clone, Copy, Debug)]
enum Keeps {
    NoAccess,
    ReadOnly,
    Unchanged,
}

/// Table 1: mode, sender needs, sender keeps, receiver gets.
const TABLE_1: [(Mode, Rights, Keeps, Rights); 3] = [
    (
        Mode::Move,
        Rights::ReadWrite,
        Keeps::NoAccess,
        Rights::ReadWrite,
    ),
    (Mode::Share, Rights::Read, Keeps::ReadOnly, Rights::Read),
    (
        Mode::Copy,
        Rights::Read,
        Keeps::Unchanged,
        Rights::ReadWrite,
    ),
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Related {
    /// No related aggregate.
    Alone,
    /// A related aggregate with read-only rights on the same buffer.
    ReadSameBuffer,
    /// A related aggregate with read/write rights on the same buffer.
    WriteSameBuffer,
    /// A related aggregate with read/write rights on another buffer only.
    WriteOtherBuffer,
}

const LEN: u64 = 64 * 1024;

fn pattern() -> Vec<u8> {
    (0..LEN).map(|i| (i * 7 % 251) as u8).collect()
}

/// Builds the aggregate to transfer, returning it and its related aggregate, if any.
fn build(cosh: &mut Model, a: DomainId, related: Related) -> (AggId, Option<AggId>) {
    let x = cosh.alloc(a, LEN).expect("alloc");
    cosh.write(a, x, 0, &pattern()).expect("write");
    match related {
        Related::Alone => (x, None),
        Related::ReadSameBuffer | Related::WriteSameBuffer => {
            let t = cosh.select(a, x, 0, LEN).expect("select");
            if related == Related::ReadSameBuffer {
                cosh.downgrade(a, x, Rights::Read).expect("downgrade");
            }
            (t, Some(x))
        }
        Related::WriteOtherBuffer => {
            let q = cosh.alloc(a, LEN).expect("alloc");
            let c = cosh.concat(a, x, q).expect("concat");
            let t = cosh.select(a, c, 0, LEN).expect("select");
            cosh.decref(a, c).expect("decref");
            cosh.decref(a, x).expect("decref");
            assert_eq!(
                cosh.find_related(a, t, Rights::None).expect("related"),
                vec![q]
            );
            (t, Some(q))
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Case {
    mode: Mode,
    strength: Strength,
    trusted: bool,
    held: Rights,
    related: Related,
    on_related: RelatedPolicy,
    policy: Policy,
    other_pool: bool,
}

fn check(case: Case) {
    let Case {
        mode,
        strength,
        trusted,
        held,
        related,
        on_related,
        policy,
        other_pool,
    } = case;
    let (_, needs, keeps, gets) = TABLE_1
        .into_iter()
        .find(|row| row.0 == mode)
        .expect("every mode is in the table");
    let keeps = match keeps {
        Keeps::NoAccess => Rights::None,
        Keeps::ReadOnly => Rights::Read,
        Keeps::Unchanged => held,
    };
    let related_rights = match related {
        Related::Alone | Related::WriteOtherBuffer => Rights::None,
        Related::ReadSameBuffer => Rights::Read,
        Related::WriteSameBuffer => Rights::ReadWrite,
    };

    let mut cosh = Model::new(policy);
    let a = cosh.connect(PoolId(0)).expect("connect");
    let b = cosh
        .connect(PoolId(u32::from(other_pool)))
        .expect("connect");
    if trusted {
        cosh.trust(b, a).expect("trust");
    }
    let (t, rel) = build(&mut cosh, a, related);
    let rel_rights_before = rel.map(|r| cosh.getrights(a, r).expect("rights"));
    let stale = cosh.iter(a, t, Access::Write, 0).expect("iter");
    cosh.downgrade(a, t, held).expect("downgrade");
    let flags = TransferFlags {
        strength,
        related: on_related,
    };
    let result = cosh.transfer(a, t, b, mode, flags);

    let expected_error = if held < needs {
        Some(ErrorKind::InsufficientRights)
    } else if mode != Mode::Copy && related_rights > keeps && on_related == RelatedPolicy::Fail {
        Some(ErrorKind::RelatedAggregates)
    } else {
        None
    };
    if let Some(kind) = expected_error {
        assert_eq!(result.map_err(|e| e.kind()), Err(kind), "{case:?}");
        assert_eq!(
            cosh.getrights(a, t).expect("rights"),
            held,
            "{case:?}: a failed transfer changes nothing"
        );
        assert_eq!(
            cosh.receive(b, None).map_err(|e| e.kind()).err(),
            Some(ErrorKind::NothingPending),
            "{case:?}"
        );
        return;
    }
    result.unwrap_or_else(|e| panic!("{case:?}: {e}"));
    assert_eq!(
        cosh.getrights(a, t).expect("rights"),
        keeps,
        "{case:?}: sender keeps"
    );
    let got = cosh.receive(b, Some(a)).expect("receive");
    assert_eq!(got.mode, mode, "{case:?}");
    let reported = if mode == Mode::Copy {
        Strength::Strong
    } else {
        strength
    };
    assert_eq!(got.strength, reported, "{case:?}");
    assert_eq!(
        cosh.getrights(b, got.agg).expect("rights"),
        gets,
        "{case:?}: receiver gets"
    );
    assert_eq!(
        cosh.read(b, got.agg, 0, LEN).expect("read"),
        pattern(),
        "{case:?}"
    );
    if let (Some(r), Some(before)) = (rel, rel_rights_before) {
        assert_eq!(
            cosh.getrights(a, r).expect("rights"),
            before,
            "{case:?}: related keep their rights"
        );
    }

    // Strong (asked for, or weak towards an untrusting receiver): on every buffer the
    // receiver got, no domain's memory permissions exceed its rights. (Buffers that travelled
    // by copy stay the sender's own business, paper section 3.3; an unsealed copy is the
    // receiver's alone, and it may map it as it mapped the memory before.)
    let effective_strong = strength == Strength::Strong || !trusted || mode == Mode::Copy;
    if effective_strong {
        for buf in cosh.ledger().chunks(b, got.agg).expect("chunks").buffers() {
            let own_copy = cosh.ledger().buffer_rights(a, buf) == Rights::None
                && !cosh.ledger().is_sealed(buf);
            for d in [a, b] {
                let (mapped, rights) = (
                    cosh.ledger().mapping(d, buf),
                    cosh.ledger().buffer_rights(d, buf),
                );
                assert!(
                    mapped <= rights || (d == b && own_copy),
                    "{case:?}: {d} maps {buf} {mapped} with only {rights} rights"
                );
            }
        }
        // A misbehaving sender writing through its old pointer changes nothing the receiver
        // reads.
        for p in &stale {
            let _ = cosh.poke(a, p, &vec![0xEE; p.len as usize]);
        }
        assert_eq!(
            cosh.read(b, got.agg, 0, LEN).expect("read"),
            pattern(),
            "{case:?}: stale write reached the receiver"
        );
    }
    // A related aggregate that kept read/write never reaches the receiver.
    if related == Related::WriteSameBuffer
        && let Some(r) = rel
    {
        cosh.write(a, r, 0, &[0xAB; 16])
            .expect("related keeps read/write");
        assert_eq!(
            cosh.read(b, got.agg, 0, 16).expect("read"),
            pattern()[..16].to_vec(),
            "{case:?}"
        );
    }
    // A receiver with read/write rights writes privately: whatever the sender can still read
    // does not change.
    if gets == Rights::ReadWrite {
        let before = keeps
            .can_read()
            .then(|| cosh.read(a, t, 0, LEN).expect("read"));
        cosh.write(b, got.agg, 0, &[0x42; 64])
            .expect("receiver writes");
        if let Some(before) = before {
            assert_eq!(cosh.read(a, t, 0, LEN).expect("read"), before, "{case:?}");
        }
    }
    cosh.ledger()
        .check_invariants()
        .unwrap_or_else(|e| panic!("{case:?}: {e}"));
}

#[test]
fn table_1_holds_for_every_combination() {
    let mut cases = 0;
    for mode in Mode::ALL {
        for strength in Strength::ALL {
            for trusted in [false, true] {
                for held in Rights::ALL {
                    for related in [
                        Related::Alone,
                        Related::ReadSameBuffer,
                        Related::WriteSameBuffer,
                        Related::WriteOtherBuffer,
                    ] {
                        for on_related in [RelatedPolicy::Copy, RelatedPolicy::Fail] {
                            for policy in [
                                Policy::by_reference(),
                                Policy::linux_host(),
                                Policy::copy_always(),
                            ] {
                                for other_pool in [false, true] {
                                    check(Case {
                                        mode,
                                        strength,
                                        trusted,
                                        held,
                                        related,
                                        on_related,
                                        policy,
                                        other_pool,
                                    });
                                    cases += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cases, 3 * 2 * 2 * 3 * 4 * 2 * 3 * 2);
}
