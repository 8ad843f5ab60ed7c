//! Futex doorbells on a word of a shared buffer, mapped twice as two processes would map it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cosh_sys::futex::{Woken, wait, wake};
use cosh_sys::mapping::Prefault;
use cosh_sys::memfd::Memfd;

#[test]
fn atomics_are_only_handed_out_aligned_and_in_bounds() {
    let m = Memfd::create("atomics", 4096).expect("create");
    let mut map = m.map_write(Prefault::Now).expect("map");
    let w = map.shared_words();
    assert!(w.atomic_u32(0).is_some());
    assert!(w.atomic_u32(4092).is_some());
    assert!(w.atomic_u32(4093).is_none(), "misaligned");
    assert!(w.atomic_u32(4096).is_none(), "out of bounds");
    assert!(w.atomic_u32(usize::MAX - 1).is_none(), "overflow");
}

#[test]
fn a_wait_times_out_and_a_changed_word_does_not_sleep() {
    let m = Memfd::create("timeout", 4096).expect("create");
    let mut map = m.map_write(Prefault::Now).expect("map");
    let w = map.shared_words();
    let word = w.atomic_u32(0).expect("word");
    let start = Instant::now();
    assert_eq!(
        wait(word, 0, Some(Duration::from_millis(20))).expect("wait"),
        Woken::TimedOut
    );
    assert!(start.elapsed() >= Duration::from_millis(20));
    word.store(1, Ordering::Release);
    assert_eq!(
        wait(word, 0, None).expect("wait"),
        Woken::Changed,
        "the word already changed"
    );
}

#[test]
fn a_ring_through_one_mapping_wakes_a_waiter_on_another() {
    let m = Memfd::create("doorbell", 4096).expect("create");
    let mut waiter_map = m.map_write(Prefault::Now).expect("map");
    let mut ringer_map = m.map_write(Prefault::Now).expect("map");
    let ringer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        let words = ringer_map.shared_words();
        let word = words.atomic_u32(64).expect("word");
        word.store(7, Ordering::Release);
        wake(word, 1).expect("wake")
    });
    let words = waiter_map.shared_words();
    let word = words.atomic_u32(64).expect("word");
    let deadline = Instant::now() + Duration::from_secs(10);
    while word.load(Ordering::Acquire) != 7 && Instant::now() < deadline {
        wait(word, 0, Some(Duration::from_secs(1))).expect("wait");
    }
    assert_eq!(word.load(Ordering::Acquire), 7);
    assert!(ringer.join().expect("join") <= 1);
}
