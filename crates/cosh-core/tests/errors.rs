//! Bad input never panics and is never silently accepted: each case returns a typed error
//! whose message says what was wrong, and leaves everything as it was.

use cosh_core::api::Cosh;
use cosh_core::model::Model;
use cosh_core::{DomainId, Error, ErrorKind, Mode, PoolId, Rights, Ticket, TransferFlags};

fn setup() -> (Model, DomainId, DomainId) {
    let mut cosh = Model::default();
    let a = cosh.connect(PoolId(0)).expect("connect");
    let b = cosh.connect(PoolId(0)).expect("connect");
    (cosh, a, b)
}

fn expect_err<T: std::fmt::Debug>(r: Result<T, Error>, kind: ErrorKind, words: &[&str]) {
    let e = r.expect_err("the call must fail");
    assert_eq!(e.kind(), kind, "{e}");
    let msg = e.to_string();
    for w in words {
        assert!(msg.contains(w), "message {msg:?} does not mention {w:?}");
    }
}

#[test]
fn select_out_of_range_says_where_and_how_long() {
    let (mut cosh, a, _) = setup();
    let x = cosh.alloc(a, 100).expect("alloc");
    expect_err(
        cosh.select(a, x, 90, 20),
        ErrorKind::OutOfRange,
        &["20 bytes", "offset 90", "100 bytes"],
    );
    expect_err(
        cosh.select(a, x, u64::MAX, 1),
        ErrorKind::OutOfRange,
        &["does not fit"],
    );
    assert_eq!(cosh.getlen(a, x).expect("len"), 100);
}

#[test]
fn transfer_without_the_required_rights_names_mode_and_rights() {
    let (mut cosh, a, b) = setup();
    let x = cosh.alloc(a, 100).expect("alloc");
    cosh.downgrade(a, x, Rights::Read).expect("downgrade");
    expect_err(
        cosh.transfer(a, x, b, Mode::Move, TransferFlags::strong()),
        ErrorKind::InsufficientRights,
        &["transfer by move", "read/write", "read-only"],
    );
    assert_eq!(cosh.getrights(a, x).expect("rights"), Rights::Read);
}

#[test]
fn writing_through_a_read_only_aggregate_is_refused() {
    let (mut cosh, a, b) = setup();
    let x = cosh.alloc(a, 100).expect("alloc");
    cosh.write(a, x, 0, b"before").expect("write");
    cosh.transfer(a, x, b, Mode::Share, TransferFlags::strong())
        .expect("share");
    expect_err(
        cosh.write(a, x, 0, b"after"),
        ErrorKind::InsufficientRights,
        &["cannot write", "shared"],
    );
    assert_eq!(cosh.read(a, x, 0, 6).expect("read"), b"before");
}

#[test]
fn use_after_a_move_says_it_was_moved() {
    let (mut cosh, a, b) = setup();
    let x = cosh.alloc(a, 100).expect("alloc");
    cosh.transfer(a, x, b, Mode::Move, TransferFlags::strong())
        .expect("move");
    expect_err(
        cosh.read(a, x, 0, 1),
        ErrorKind::InsufficientRights,
        &["no access", "moved away"],
    );
    expect_err(
        cosh.transfer(a, x, b, Mode::Move, TransferFlags::strong()),
        ErrorKind::InsufficientRights,
        &["moved away"],
    );
}

#[test]
fn unknown_destination_is_named() {
    let (mut cosh, a, b) = setup();
    let x = cosh.alloc(a, 100).expect("alloc");
    cosh.kill(b).expect("kill");
    expect_err(
        cosh.transfer(a, x, b, Mode::Copy, TransferFlags::strong()),
        ErrorKind::UnknownDomain,
        &[&b.to_string(), "not connected"],
    );
    let never = DomainId {
        pool: PoolId(9),
        index: 77,
    };
    expect_err(
        cosh.transfer(a, x, never, Mode::Copy, TransferFlags::strong()),
        ErrorKind::UnknownDomain,
        &["p9.d77"],
    );
    assert_eq!(cosh.getrights(a, x).expect("rights"), Rights::ReadWrite);
}

#[test]
fn unknown_and_reused_tickets_are_told_apart() {
    let (mut cosh, a, b) = setup();
    let x = cosh.alloc(a, 100).expect("alloc");
    let t = cosh
        .attach_transfer(a, x, b, Mode::Move, TransferFlags::strong())
        .expect("attach_transfer");
    expect_err(
        cosh.attach_recv(b, a, Ticket(t.0 + 1)),
        ErrorKind::UnknownTicket,
        &["unknown", "no transfer"],
    );
    cosh.attach_recv(b, a, t).expect("attach_recv");
    expect_err(
        cosh.attach_recv(b, a, t),
        ErrorKind::TicketReused,
        &["already received"],
    );
}

#[test]
fn stale_handles_and_upgrades_are_refused() {
    let (mut cosh, a, b) = setup();
    let x = cosh.alloc(a, 10).expect("alloc");
    expect_err(
        cosh.read(b, x, 0, 1),
        ErrorKind::UnknownAggregate,
        &[&x.to_string(), &b.to_string()],
    );
    cosh.downgrade(a, x, Rights::Read).expect("downgrade");
    expect_err(
        cosh.downgrade(a, x, Rights::ReadWrite),
        ErrorKind::RightsUpgrade,
        &["only ever downgraded"],
    );
    cosh.decref(a, x).expect("decref");
    expect_err(
        cosh.decref(a, x),
        ErrorKind::UnknownAggregate,
        &["already freed"],
    );
}

#[test]
fn fail_if_related_names_the_culprits() {
    let (mut cosh, a, b) = setup();
    let x = cosh.alloc(a, 100).expect("alloc");
    let y = cosh.select(a, x, 0, 10).expect("select");
    expect_err(
        cosh.transfer(
            a,
            y,
            b,
            Mode::Move,
            TransferFlags::strong().fail_if_related(),
        ),
        ErrorKind::RelatedAggregates,
        &[&x.to_string(), "find_related"],
    );
}

#[test]
fn nothing_pending_and_self_transfer_are_explained() {
    let (mut cosh, a, b) = setup();
    expect_err(
        cosh.receive(b, Some(a)),
        ErrorKind::NothingPending,
        &["no transfer is waiting", &a.to_string()],
    );
    let x = cosh.alloc(a, 1).expect("alloc");
    expect_err(
        cosh.transfer(a, x, a, Mode::Share, TransferFlags::strong()),
        ErrorKind::SelfTransfer,
        &["itself"],
    );
}

#[test]
fn memory_faults_name_the_buffer() {
    let (mut cosh, a, b) = setup();
    let x = cosh.alloc(a, 100).expect("alloc");
    let pieces = cosh.iter(a, x, cosh_core::Access::Read, 0).expect("iter");
    expect_err(
        cosh.peek(b, &pieces[0]),
        ErrorKind::Fault,
        &["memory fault", &pieces[0].buffer.to_string()],
    );
}

#[test]
fn absurd_lengths_and_fragmentation_are_refused() {
    let (mut cosh, a, _) = setup();
    expect_err(
        cosh.alloc(a, u64::MAX),
        ErrorKind::TooLarge,
        &["too large", "18446744073709551615"],
    );
    // Concatenation is metadata only and doubles the chunk count: it must be bounded.
    let mut x = cosh.alloc(a, 1).expect("alloc");
    let mut refused = None;
    for i in 0..40 {
        match cosh.concat(a, x, x) {
            Ok(y) => x = y,
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (i, e) = refused.expect("the doubling must be refused");
    assert_eq!(e.kind(), ErrorKind::TooFragmented, "{e}");
    assert!(e.to_string().contains("coalesce"), "{e}");
    assert_eq!(i, 20, "refused exactly when the chunks would pass 2^20");
    assert_eq!(cosh.getlen(a, x).expect("len"), 1 << 20);
}

#[test]
fn copies_larger_than_memory_are_refused_before_anything_changes() {
    let mut cosh = Model::default().with_max_alloc(1000);
    let a = cosh.connect(PoolId(0)).expect("connect");
    let b = cosh.connect(PoolId(0)).expect("connect");
    expect_err(
        cosh.alloc(a, 1001),
        ErrorKind::TooLarge,
        &["1001 bytes", "1000 bytes"],
    );
    let x = cosh.alloc(a, 600).expect("alloc");
    let xx = cosh.concat(a, x, x).expect("concat");
    expect_err(
        cosh.transfer(a, xx, b, Mode::Copy, TransferFlags::strong()),
        ErrorKind::TooLarge,
        &["1200 bytes"],
    );
    assert_eq!(cosh.getrights(a, xx).expect("rights"), Rights::ReadWrite);
    assert_eq!(cosh.resident_bytes(), 600);
    // By reference nothing is copied, so the same aggregate can be shared once x, which
    // would force a copy of the related portion, is gone.
    cosh.decref(a, x).expect("decref");
    cosh.transfer(a, xx, b, Mode::Share, TransferFlags::strong())
        .expect("share by reference");
    assert_eq!(cosh.resident_bytes(), 600);
}
