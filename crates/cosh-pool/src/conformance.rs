//! The conformance suite: what every pool, and every ordered pair of pools, must do.
//!
//! Each case plays two domains that hand a buffer back and forth under the transfer protocol
//! the client library follows — the sender flushes before it hands a buffer on, the receiver
//! invalidates after it gets one — and checks every byte. Between two windows of one pool a
//! buffer goes by reference ([`Link::Shared`]); between pools, or as a copy, the copy engine
//! copies it from the source pool's memory into a fresh buffer of the destination pool
//! ([`Link::Engine`]), as a cross-pool transfer does. A pool passes when every case passes
//! both ways; with random eviction on as well, for a pool that has it.
//!
//! ```
//! use cosh_pool::conformance::{self, Link};
//! use cosh_pool::{host::HostPool, nc::NcPool};
//!
//! let (host, nc) = (HostPool::new(), NcPool::new());
//! for (case, result) in conformance::run(&host, &nc, Link::Engine) {
//!     assert!(result.is_ok(), "{case}: {result:?}");
//! }
//! ```

use crate::{Buffer, Pool, Window};

/// How a buffer goes from one domain to the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// By reference: both domains' windows show the same memory (one pool).
    Shared,
    /// By the copy engine, into a fresh buffer of the receiving pool.
    Engine,
}

/// A case's outcome: `Err` says what differed.
pub type Outcome = Result<(), String>;

type Case = fn(&dyn Pool, &dyn Pool, Link) -> Outcome;

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("bytes_arrive", bytes_arrive),
    ("ownership_round_trip", ownership_round_trip),
    (
        "a_receiver_that_looked_before_sees_the_new_bytes",
        looked_before,
    ),
    ("many_rounds_of_small_writes", many_rounds),
    ("edges_and_errors", edges),
    ("two_threads_pass_ownership", two_threads),
];

/// Runs every case with domain A in `a` and domain B in `b` (the same pool twice for
/// [`Link::Shared`]).
pub fn run(a: &dyn Pool, b: &dyn Pool, link: Link) -> Vec<(&'static str, Outcome)> {
    CASES
        .iter()
        .map(|(name, case)| (*name, case(a, b, link)))
        .collect()
}

fn e(x: crate::Error) -> String {
    x.to_string()
}

/// Bytes that differ from position to position and from round to round.
pub fn pattern(len: usize, round: u64) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u64)
                .wrapping_mul(31)
                .wrapping_add(round.wrapping_mul(101)) as u8
                | 1
        })
        .collect()
}

/// The copy engine: reads `buffer`'s memory in `from` and writes it into a fresh buffer of
/// `to`, through neither domain's cache.
pub fn engine_copy(from: &dyn Pool, to: &dyn Pool, buffer: &Buffer) -> crate::Result<Buffer> {
    let copy = to.create(buffer.len())?;
    to.engine(&copy)?
        .copy_from(&from.engine(buffer)?, buffer.len())?;
    Ok(copy)
}

/// One domain's side of a buffer: where it lives and this domain's window on it.
struct Side {
    buffer: Buffer,
    window: Box<dyn Window>,
}

/// Hands a buffer from the domain holding `sender` (a window on `buffer` in `from`) to one in
/// `to`, under the protocol: the sender flushes; by reference the receiver uses its window on
/// the same memory (`receiver`, or a new one), by engine a new window on a copy in `to`; the
/// receiver invalidates. The sender keeps its window.
fn pass(
    from: &dyn Pool,
    to: &dyn Pool,
    link: Link,
    buffer: &Buffer,
    sender: &mut dyn Window,
    receiver: Option<Box<dyn Window>>,
) -> Result<Side, String> {
    sender.flush().map_err(e)?;
    let buffer = match link {
        Link::Shared => buffer.clone(),
        Link::Engine => engine_copy(from, to, buffer).map_err(e)?,
    };
    let mut window = match (link, receiver) {
        (Link::Shared, Some(w)) => w,
        _ => to.window(&buffer).map_err(e)?,
    };
    window.invalidate().map_err(e)?;
    Ok(Side { buffer, window })
}

fn expect_bytes(w: &mut dyn Window, offset: u64, want: &[u8], what: &str) -> Outcome {
    let mut got = vec![0u8; want.len()];
    w.read(offset, &mut got).map_err(e)?;
    if let Some(first) = got.iter().zip(want).position(|(g, w)| g != w) {
        return Err(format!(
            "{what}: byte {} is {:#04x}, expected {:#04x}",
            offset + first as u64,
            got[first],
            want[first]
        ));
    }
    Ok(())
}

fn fresh(pool: &dyn Pool, len: u64) -> Result<Side, String> {
    let buffer = pool.create(len).map_err(e)?;
    let window = pool.window(&buffer).map_err(e)?;
    Ok(Side { buffer, window })
}

/// A writes a pattern in unaligned pieces; B reads every byte.
fn bytes_arrive(a: &dyn Pool, b: &dyn Pool, link: Link) -> Outcome {
    let len = 1000u64;
    let mut mine = fresh(a, len)?;
    let data = pattern(len as usize, 1);
    for (from, to) in [(0usize, 7usize), (7, 64), (64, 65), (65, 500), (500, 1000)] {
        mine.window.write(from as u64, &data[from..to]).map_err(e)?;
    }
    let mut got = pass(a, b, link, &mine.buffer, mine.window.as_mut(), None)?;
    expect_bytes(got.window.as_mut(), 0, &data, "B reads what A wrote")
}

/// A writes, B changes part and hands it back; A sees both.
fn ownership_round_trip(a: &dyn Pool, b: &dyn Pool, link: Link) -> Outcome {
    let len = 4096 + 100;
    let mut mine = fresh(a, len)?;
    let mut data = pattern(len as usize, 2);
    mine.window.write(0, &data).map_err(e)?;
    let mut got = pass(a, b, link, &mine.buffer, mine.window.as_mut(), None)?;
    let change = pattern(300, 3);
    got.window.write(1000, &change).map_err(e)?;
    data[1000..1300].copy_from_slice(&change);
    // By reference A still has its window (and, in a cache, its old copy of the lines).
    let back_to = match link {
        Link::Shared => Some(mine.window),
        Link::Engine => None,
    };
    let mut back = pass(b, a, link, &got.buffer, got.window.as_mut(), back_to)?;
    expect_bytes(
        back.window.as_mut(),
        0,
        &data,
        "A reads its bytes and B's change",
    )
}

/// B read the buffer, handed it back, and A wrote it anew: B's next look sees A's new bytes.
fn looked_before(a: &dyn Pool, b: &dyn Pool, link: Link) -> Outcome {
    let len = 640;
    let mut mine = fresh(a, len)?;
    let first = pattern(len as usize, 4);
    mine.window.write(0, &first).map_err(e)?;
    let mut theirs = pass(a, b, link, &mine.buffer, mine.window.as_mut(), None)?;
    expect_bytes(theirs.window.as_mut(), 0, &first, "B's first look")?;
    let back_to = match link {
        Link::Shared => Some(mine.window),
        Link::Engine => None,
    };
    let mut back = pass(b, a, link, &theirs.buffer, theirs.window.as_mut(), back_to)?;
    let second = pattern(len as usize, 5);
    back.window.write(0, &second).map_err(e)?;
    let again_to = match link {
        Link::Shared => Some(theirs.window),
        Link::Engine => None,
    };
    let mut again = pass(a, b, link, &back.buffer, back.window.as_mut(), again_to)?;
    expect_bytes(again.window.as_mut(), 0, &second, "B's second look")
}

/// A hundred hand-overs, alternating, each changing a few bytes somewhere else.
fn many_rounds(a: &dyn Pool, b: &dyn Pool, link: Link) -> Outcome {
    let len = 3 * 1024 + 17;
    let mut model = vec![0u8; len as usize];
    let mut owner = fresh(a, len)?;
    // By reference each domain keeps one window for the whole run, as it keeps a mapping.
    let mut idle: Option<Box<dyn Window>> = match link {
        Link::Shared => Some(b.window(&owner.buffer).map_err(e)?),
        Link::Engine => None,
    };
    for round in 0..100u64 {
        let at = (round * 397) % (len - 80);
        let n = 1 + (round * 13) % 79;
        let bytes = pattern(n as usize, round);
        owner.window.write(at, &bytes).map_err(e)?;
        model[at as usize..(at + n) as usize].copy_from_slice(&bytes);
        let (from, to): (&dyn Pool, &dyn Pool) = if round % 2 == 0 { (a, b) } else { (b, a) };
        let mut next = pass(
            from,
            to,
            link,
            &owner.buffer,
            owner.window.as_mut(),
            idle.take(),
        )?;
        expect_bytes(next.window.as_mut(), 0, &model, &format!("round {round}"))?;
        if link == Link::Shared {
            // One buffer, two windows: the receiver's becomes the owner's.
            idle = Some(std::mem::replace(&mut owner.window, next.window));
        } else {
            owner = next;
        }
    }
    Ok(())
}

/// A zero-length buffer, accesses that end exactly at the end, and ones past it.
fn edges(a: &dyn Pool, b: &dyn Pool, link: Link) -> Outcome {
    let mut empty = fresh(a, 0)?;
    if !empty.window.is_empty() {
        return Err("a zero-length buffer has bytes".into());
    }
    empty.window.write(0, &[]).map_err(e)?;
    if empty.window.write(0, &[1]).is_ok() {
        return Err("a write into a zero-length buffer succeeded".into());
    }
    let moved = pass(a, b, link, &empty.buffer, empty.window.as_mut(), None)?;
    if !moved.buffer.is_empty() {
        return Err("the zero-length buffer grew".into());
    }
    let len = 130u64;
    let mut mine = fresh(a, len)?;
    mine.window.write(len - 3, &[7, 8, 9]).map_err(e)?;
    for (offset, n) in [(len - 2, 3usize), (len, 1), (u64::MAX, 1)] {
        let mut out = vec![0u8; n];
        if mine.window.read(offset, &mut out).is_ok() {
            return Err(format!(
                "a read of {n} bytes at {offset} succeeded past the end"
            ));
        }
        if mine.window.write(offset, &out).is_ok() {
            return Err(format!(
                "a write of {n} bytes at {offset} succeeded past the end"
            ));
        }
    }
    let mut got = pass(a, b, link, &mine.buffer, mine.window.as_mut(), None)?;
    expect_bytes(got.window.as_mut(), len - 3, &[7, 8, 9], "the last bytes")?;
    expect_bytes(
        got.window.as_mut(),
        0,
        &[0; 127],
        "the untouched bytes are zero",
    )
}

/// Two threads, each a domain with its own window, pass a buffer back and forth 200 times;
/// each checks what the other wrote and writes its own round's bytes.
fn two_threads(a: &dyn Pool, b: &dyn Pool, link: Link) -> Outcome {
    if link == Link::Engine {
        // The engine copies between memories, not between live domains: the
        // single-threaded cases cover it.
        return Ok(());
    }
    let len = 2048u64;
    let buffer = a.create(len).map_err(e)?;
    let mut wa = a.window(&buffer).map_err(e)?;
    let mut wb = b.window(&buffer).map_err(e)?;
    let (to_b, from_a) = std::sync::mpsc::channel::<u64>();
    let (to_a, from_b) = std::sync::mpsc::channel::<u64>();
    let rounds = 200u64;
    let other = std::thread::spawn(move || -> Outcome {
        for _ in 0..rounds {
            let Ok(round) = from_a.recv() else {
                return Ok(());
            };
            wb.invalidate().map_err(e)?;
            expect_bytes(
                wb.as_mut(),
                0,
                &pattern(len as usize, round),
                "B in its thread",
            )?;
            wb.write(0, &pattern(len as usize, round + 1000))
                .map_err(e)?;
            wb.flush().map_err(e)?;
            to_a.send(round).map_err(|x| x.to_string())?;
        }
        Ok(())
    });
    let mut result = Ok(());
    for round in 0..rounds {
        let sent = wa
            .write(0, &pattern(len as usize, round))
            .and_then(|()| wa.flush())
            .map_err(e);
        if let Err(x) = sent {
            result = Err(x);
            break;
        }
        if to_b.send(round).is_err() {
            break;
        }
        let Ok(back) = from_b.recv() else { break };
        let checked = wa
            .invalidate()
            .map_err(e)
            .and_then(|()| expect_bytes(wa.as_mut(), 0, &pattern(len as usize, back + 1000), "A"));
        if let Err(x) = checked {
            result = Err(x);
            break;
        }
    }
    drop(to_b);
    let theirs = other
        .join()
        .map_err(|_| "B's thread panicked".to_string())?;
    result.and(theirs)
}
