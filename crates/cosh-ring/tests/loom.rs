//! The ring and doorbell protocol under every interleaving loom explores: no record is lost,
//! duplicated or reordered, and no wake-up is lost (a lost wake-up shows as a deadlock).
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p cosh-ring --test loom --release`;
//! `tests/loom_runner.rs` does so from `cargo test`, in a target directory of its own.

#![cfg(loom)]

use cosh_ring::{
    AtomicU32, Consumer, LoomBell, LoomEventBell, Producer, RECORD_WORDS, Record, init, words_for,
};
use loom::sync::Arc;

/// Every interleaving with up to three preemptions (the bound loom recommends: bugs nearly
/// always need fewer, and the full space takes minutes).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

fn record(n: u32) -> Record {
    [n; RECORD_WORDS]
}

fn ring(capacity: u32) -> Arc<Vec<AtomicU32>> {
    let words: Vec<AtomicU32> = (0..words_for(capacity))
        .map(|_| AtomicU32::new(0))
        .collect();
    init(&words, capacity).expect("init");
    Arc::new(words)
}

#[test]
fn a_sleeping_consumer_always_gets_every_record() {
    model(|| {
        let words = ring(2);
        let bell = Arc::new(LoomBell::default());
        let (w, b) = (Arc::clone(&words), Arc::clone(&bell));
        let consumer = loom::thread::spawn(move || {
            let mut c = Consumer::attach(&w).expect("consumer");
            let mut got = Vec::new();
            while got.len() < 2 {
                if let Some(r) = c.pop(&*b, 0, None).expect("pop") {
                    got.push(r[0]);
                }
            }
            got
        });
        let mut p = Producer::attach(&words).expect("producer");
        for n in 0..2 {
            assert!(p.try_push(&record(n)).expect("push"));
            p.notify(&*bell);
        }
        assert_eq!(consumer.join().expect("join"), vec![0, 1]);
    });
}

#[test]
fn a_producer_waiting_for_room_is_always_woken() {
    model(|| {
        let words = ring(1);
        let bell = Arc::new(LoomBell::default());
        let (w, b) = (Arc::clone(&words), Arc::clone(&bell));
        let producer = loom::thread::spawn(move || {
            let mut p = Producer::attach(&w).expect("producer");
            for n in 0..2 {
                assert!(p.push(&record(n), &*b, 0, None).expect("push"));
            }
        });
        let mut c = Consumer::attach(&words).expect("consumer");
        let mut got = Vec::new();
        while got.len() < 2 {
            if let Some(r) = c.pop(&*bell, 0, None).expect("pop") {
                got.push(r[0]);
            }
        }
        producer.join().expect("join");
        assert_eq!(got, vec![0, 1]);
    });
}

#[test]
fn a_consumer_sleeping_on_an_eventfd_always_gets_every_record() {
    model(|| {
        let words = ring(2);
        let bell = Arc::new(LoomEventBell::default());
        let (w, b) = (Arc::clone(&words), Arc::clone(&bell));
        let consumer = loom::thread::spawn(move || {
            let mut c = Consumer::attach(&w).expect("consumer");
            let mut got = Vec::new();
            while got.len() < 2 {
                if let Some(r) = c.try_pop().expect("pop") {
                    got.push(r[0]);
                    continue;
                }
                // As the block manager does before poll: announce, look again, sleep.
                if !c.prepare_sleep().expect("prepare") {
                    b.sleep();
                }
                c.awake();
            }
            got
        });
        let mut p = Producer::attach(&words).expect("producer");
        for n in 0..2 {
            assert!(p.try_push(&record(n)).expect("push"));
            p.notify(&*bell);
        }
        assert_eq!(consumer.join().expect("join"), vec![0, 1]);
    });
}

/// A producer that wakes the consumer ahead of its record ([`Producer::rouse`]): the
/// consumer, woken with nothing to read, spins and may sleep again; the record still reaches
/// it.
#[test]
fn a_consumer_roused_early_still_gets_the_record() {
    model(|| {
        let words = ring(2);
        let bell = Arc::new(LoomBell::default());
        let (w, b) = (Arc::clone(&words), Arc::clone(&bell));
        let consumer = loom::thread::spawn(move || {
            let mut c = Consumer::attach(&w).expect("consumer");
            loop {
                if let Some(r) = c.pop(&*b, 1, None).expect("pop") {
                    return r[0];
                }
            }
        });
        let mut p = Producer::attach(&words).expect("producer");
        p.rouse(&*bell);
        assert!(p.try_push(&record(5)).expect("push"));
        p.notify(&*bell);
        assert_eq!(consumer.join().expect("join"), 5);
    });
}

/// A consumer that waits elsewhere (parked in a block manager) and a producer that pushes:
/// either the consumer sees the record before it waits, or the producer sees the parked flag
/// and wakes it. Never neither (a lost wake-up).
#[test]
fn a_parked_consumer_is_never_forgotten() {
    model(|| {
        let words = ring(2);
        let flag = Arc::new(AtomicU32::new(0));
        let (w, f) = (Arc::clone(&words), Arc::clone(&flag));
        let consumer = loom::thread::spawn(move || {
            let c = Consumer::attach(&w).expect("consumer");
            let ready = c.park(&f).expect("park");
            // `false`: it would now wait for a wake-up from elsewhere.
            ready
        });
        let mut p = Producer::attach(&words).expect("producer");
        assert!(p.try_push(&record(7)).expect("push"));
        let woken = p.notify_or_take_parked(&LoomBell::default(), &flag);
        let saw_record = consumer.join().expect("join");
        assert!(
            saw_record || woken,
            "the consumer waits for a record nobody will wake it for"
        );
    });
}
