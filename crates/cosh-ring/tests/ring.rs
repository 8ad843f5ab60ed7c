//! Rings between threads and across a real shared mapping: order, fullness, wrap-around,
//! blocking with doorbells, and peers that scribble over the ring.

#![cfg(not(loom))]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cosh_ring::{
    AtomicU32, Consumer, Futex, Ordering, Producer, RECORD_WORDS, Record, RingError, init,
    words_for,
};
use proptest::prelude::*;

fn ring(capacity: u32) -> Vec<AtomicU32> {
    let words: Vec<AtomicU32> = (0..words_for(capacity))
        .map(|_| AtomicU32::new(0))
        .collect();
    init(&words, capacity).expect("init");
    words
}

fn record(n: u32) -> Record {
    let mut r = [0u32; RECORD_WORDS];
    for (i, w) in r.iter_mut().enumerate() {
        *w = n.wrapping_mul(31).wrapping_add(i as u32);
    }
    r
}

#[test]
fn records_come_out_in_order_until_the_ring_is_full() {
    let words = ring(4);
    let mut p = Producer::attach(&words).expect("producer");
    let mut c = Consumer::attach(&words).expect("consumer");
    assert_eq!(c.try_pop().expect("pop"), None);
    for n in 0..4 {
        assert!(p.try_push(&record(n)).expect("push"));
    }
    assert!(!p.try_push(&record(99)).expect("push"), "full");
    assert_eq!(c.available().expect("available"), 4);
    for n in 0..4 {
        assert_eq!(c.try_pop().expect("pop"), Some(record(n)));
    }
    assert_eq!(c.try_pop().expect("pop"), None);
}

#[test]
fn a_producer_reads_the_tail_again_only_when_its_last_reading_leaves_no_room() {
    let words = ring(4);
    let mut p = Producer::attach(&words).expect("producer");
    let mut c = Consumer::attach(&words).expect("consumer");
    for n in 0..4 {
        assert!(p.try_push(&record(n)).expect("push"));
    }
    assert_eq!(p.pending_at_most(), 4);
    // The consumer takes two; the producer has not looked yet.
    for n in 0..2 {
        assert_eq!(c.try_pop().expect("pop"), Some(record(n)));
    }
    assert_eq!(p.pending_at_most(), 4, "no shared read yet");
    // Resumed with what it saw, it still reads again when it needs room.
    let (head, seen) = (p.position(), p.seen());
    let mut p = Producer::resume_seen(&words, 4, head, seen).expect("resume");
    assert!(p.has_room(2).expect("room"));
    assert_eq!(p.pending_at_most(), 2);
    assert!(!p.has_room(3).expect("room"));
    for n in 4..6 {
        assert!(p.try_push(&record(n)).expect("push"));
    }
    assert!(!p.try_push(&record(99)).expect("push"), "full");
    for n in 2..6 {
        assert_eq!(c.try_pop().expect("pop"), Some(record(n)));
    }
    // A kept tail beyond the head is refused, as a corrupt shared one is.
    assert!(matches!(
        Producer::resume_seen(&words, 4, 10, 1),
        Err(RingError::Corrupt(_))
    ));
    // A consumer that lies about its tail is caught when the tail is read again.
    words[32].store(1000, Ordering::Relaxed);
    let mut p = Producer::resume_seen(&words, 4, p.position(), p.position()).expect("resume");
    assert!(p.has_room(4).expect("the last reading says empty"));
    for n in 0..4 {
        assert!(p.try_push(&record(n)).expect("push"));
    }
    assert!(matches!(p.try_push(&record(4)), Err(RingError::Corrupt(_))));
}

#[test]
fn positions_wrap_around_the_u32_range() {
    let words = ring(8);
    let start = u32::MAX - 5;
    words[16].store(start, Ordering::Relaxed);
    words[32].store(start, Ordering::Relaxed);
    let mut p = Producer::attach(&words).expect("producer");
    let mut c = Consumer::attach(&words).expect("consumer");
    for n in 0..100 {
        assert!(p.try_push(&record(n)).expect("push"));
        assert_eq!(c.try_pop().expect("pop"), Some(record(n)));
    }
}

#[test]
fn headers_that_are_not_rings_are_refused() {
    let words: Vec<AtomicU32> = (0..words_for(4)).map(|_| AtomicU32::new(0)).collect();
    assert!(matches!(
        Consumer::attach(&words),
        Err(RingError::BadHeader(_))
    ));
    assert!(init(&words, 3).is_err(), "capacity must be a power of two");
    assert!(matches!(init(&words, 8), Err(RingError::TooSmall { .. })));
    init(&words, 4).expect("init");
    words[2].store(1 << 10, Ordering::Relaxed); // a capacity the memory cannot hold
    assert!(matches!(
        Producer::attach(&words),
        Err(RingError::TooSmall { .. })
    ));
}

#[test]
fn a_blocked_consumer_is_woken_and_a_blocked_producer_too() {
    let words = Arc::new(ring(2));
    let w = Arc::clone(&words);
    let consumer = std::thread::spawn(move || {
        let mut c = Consumer::attach(&w).expect("consumer");
        let mut got = Vec::new();
        while got.len() < 1000 {
            // No spinning: every empty ring sleeps on the futex.
            match c
                .pop(&Futex, 0, Some(Duration::from_secs(10)))
                .expect("pop")
            {
                Some(r) => got.push(r[0]),
                None => panic!("timed out after {} records", got.len()),
            }
        }
        got
    });
    let mut p = Producer::attach(&words).expect("producer");
    for n in 0..1000 {
        assert!(
            p.push(&record(n), &Futex, 0, Some(Duration::from_secs(10)))
                .expect("push"),
            "the consumer never made room"
        );
    }
    let got = consumer.join().expect("consumer thread");
    let expected: Vec<u32> = (0..1000).map(|n| record(n)[0]).collect();
    assert_eq!(got, expected);
}

#[test]
fn a_consumer_roused_before_its_record_sleeps_again_and_still_gets_it() {
    let words = Arc::new(ring(2));
    let w = Arc::clone(&words);
    let consumer = std::thread::spawn(move || {
        let mut c = Consumer::attach(&w).expect("consumer");
        c.pop(&Futex, 1000, Some(Duration::from_secs(10)))
            .expect("pop")
    });
    let mut p = Producer::attach(&words).expect("producer");
    // Rouse it once it sleeps, then wait until it sleeps again: woken with nothing to read,
    // it spins a while and goes back to sleep rather than spinning for ever.
    for round in ["asleep", "asleep again after the early wake-up"] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !p.rouse(&Futex) {
            assert!(Instant::now() < deadline, "the consumer never got {round}");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(p.try_push(&record(9)).expect("push"));
    p.notify(&Futex);
    assert_eq!(
        consumer.join().expect("consumer thread"),
        Some(record(9)),
        "the record pushed after an early wake-up was missed"
    );
}

#[test]
fn waits_end_at_their_timeout() {
    let words = ring(2);
    let mut c = Consumer::attach(&words).expect("consumer");
    let start = Instant::now();
    assert_eq!(
        c.pop(&Futex, 10, Some(Duration::from_millis(30)))
            .expect("pop"),
        None
    );
    assert!(start.elapsed() >= Duration::from_millis(30));
    let mut p = Producer::attach(&words).expect("producer");
    p.try_push(&record(1)).expect("push");
    p.try_push(&record(2)).expect("push");
    assert!(
        !p.push(&record(3), &Futex, 10, Some(Duration::from_millis(30)))
            .expect("push")
    );
}

#[test]
fn a_ring_in_a_shared_mapping_works_across_two_mappings() {
    use cosh_sys::mapping::Prefault;
    use cosh_sys::memfd::Memfd;
    let capacity = 64;
    let memfd = Memfd::create("ring", cosh_ring::bytes_for(capacity) as u64).expect("memfd");
    let mut a = memfd.map_write(Prefault::Now).expect("map");
    let mut b = memfd.map_write(Prefault::Now).expect("map");
    let wa = a.shared_words();
    let wb = b.shared_words();
    let words_a = wa.atomic_u32s(0, words_for(capacity)).expect("words");
    let words_b = wb.atomic_u32s(0, words_for(capacity)).expect("words");
    init(words_a, capacity).expect("init");
    let mut p = Producer::attach(words_a).expect("producer");
    let mut c = Consumer::attach(words_b).expect("consumer");
    for n in 0..500 {
        p.push(&record(n), &Futex, 100, Some(Duration::from_secs(1)))
            .expect("push");
        assert_eq!(c.try_pop().expect("pop"), Some(record(n)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A peer that writes anything anywhere in the header never makes the other side panic or
    /// read out of bounds; impossible positions are reported as corruption.
    #[test]
    fn scribbled_rings_never_panic(
        writes in prop::collection::vec((0usize..80, any::<u32>()), 1..8),
        pushes in 0u32..6,
    ) {
        let words = ring(4);
        let mut p = Producer::attach(&words).expect("producer");
        let mut c = Consumer::attach(&words).expect("consumer");
        for n in 0..pushes.min(4) {
            p.try_push(&record(n)).expect("push");
        }
        for (at, value) in writes {
            words[at].store(value, Ordering::Relaxed);
        }
        for _ in 0..8 {
            match c.try_pop() {
                Ok(_) | Err(RingError::Corrupt(_)) => {}
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
            match p.try_push(&record(7)) {
                Ok(_) | Err(RingError::Corrupt(_)) => {}
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
        // Attaching afresh to a scribbled ring fails cleanly or works.
        let _ = Consumer::attach(&words);
        let _ = Producer::attach(&words);
    }
}

#[test]
fn an_eventfd_doorbell_rings_only_for_a_consumer_that_announced_its_sleep() {
    use cosh_ring::EventBell;
    use cosh_sys::eventfd::EventFd;
    let words = ring(4);
    let bell = EventFd::new().expect("eventfd");
    let mut p = Producer::attach(&words).expect("producer");
    let c = Consumer::attach(&words).expect("consumer");
    p.try_push(&record(1)).expect("push");
    p.notify(&EventBell(&bell));
    assert_eq!(bell.take().expect("take"), 0, "nobody sleeps: no ring");
    assert!(
        c.prepare_sleep().expect("prepare"),
        "a record already waits"
    );
    c.awake();
    let mut c = c;
    c.try_pop().expect("pop");
    assert!(!c.prepare_sleep().expect("prepare"));
    p.try_push(&record(2)).expect("push");
    p.notify(&EventBell(&bell));
    assert_eq!(bell.take().expect("take"), 1, "the sleeper is rung");
    c.awake();
}
