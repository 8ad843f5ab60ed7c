//! Frames over rings: any frame comes out as it went in, whole, however the records are
//! delivered; frames that cannot fit are refused; lying heads are caught.

#![cfg(not(loom))]

use std::sync::Arc;
use std::time::Duration;

use cosh_ring::frames::{FrameReader, HEAD_BYTES, push_frame, records_for};
use cosh_ring::{AtomicU32, Consumer, Futex, Ordering, Producer, RingError, init, words_for};
use proptest::prelude::*;

fn ring(capacity: u32) -> Vec<AtomicU32> {
    let words: Vec<AtomicU32> = (0..words_for(capacity))
        .map(|_| AtomicU32::new(0))
        .collect();
    init(&words, capacity).expect("init");
    words
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frames_round_trip(frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..700), 1..12)) {
        let words = ring(64);
        let mut p = Producer::attach(&words).expect("producer");
        let mut c = Consumer::attach(&words).expect("consumer");
        let mut reader = FrameReader::new(1 << 16);
        let mut got = Vec::new();
        for f in &frames {
            while !push_frame(&mut p, f, &Futex).expect("push") {
                // Full: drain what is there.
                while let Some(frame) = reader.read(&mut c).expect("read") {
                    got.push(frame.to_vec());
                }
            }
        }
        while let Some(frame) = reader.read(&mut c).expect("read") {
            got.push(frame.to_vec());
        }
        prop_assert_eq!(got, frames);
    }
}

#[test]
fn record_counts_match_the_layout() {
    assert_eq!(records_for(0), 1);
    assert_eq!(records_for(HEAD_BYTES), 1);
    assert_eq!(records_for(HEAD_BYTES + 1), 2);
    assert_eq!(records_for(HEAD_BYTES + 64), 2);
    assert_eq!(records_for(HEAD_BYTES + 65), 3);
    assert_eq!(records_for(65_536), 1 + (65_536 - HEAD_BYTES).div_ceil(64));
}

#[test]
fn a_frame_larger_than_the_ring_is_refused_and_a_full_ring_pushes_nothing() {
    let words = ring(4);
    let mut p = Producer::attach(&words).expect("producer");
    assert!(matches!(
        push_frame(&mut p, &[0; 1000], &Futex),
        Err(RingError::TooSmall { .. })
    ));
    assert!(push_frame(&mut p, &[1; 100], &Futex).expect("push")); // 2 records
    assert!(push_frame(&mut p, &[2; 100], &Futex).expect("push")); // 2 more: full
    assert!(!push_frame(&mut p, &[3; 1], &Futex).expect("push"));
    assert_eq!(p.pending().expect("pending"), 4);
}

#[test]
fn a_head_announcing_too_much_is_caught() {
    let words = ring(8);
    let mut p = Producer::attach(&words).expect("producer");
    let mut c = Consumer::attach(&words).expect("consumer");
    push_frame(&mut p, &[7; 300], &Futex).expect("push");
    let mut reader = FrameReader::new(200);
    assert!(matches!(reader.read(&mut c), Err(RingError::Corrupt(_))));
    // A head scribbled to a huge length by the peer, too.
    let words = ring(8);
    let mut p = Producer::attach(&words).expect("producer");
    let mut c = Consumer::attach(&words).expect("consumer");
    push_frame(&mut p, &[7; 10], &Futex).expect("push");
    words[80].store(u32::MAX, Ordering::Relaxed);
    let mut reader = FrameReader::new(1 << 16);
    assert!(matches!(reader.read(&mut c), Err(RingError::Corrupt(_))));
}

#[test]
fn frames_cross_threads_whole() {
    let words = Arc::new(ring(32));
    let w = Arc::clone(&words);
    let reader = std::thread::spawn(move || {
        let mut c = Consumer::attach(&w).expect("consumer");
        let mut r = FrameReader::new(1 << 16);
        let mut got = Vec::new();
        while got.len() < 300 {
            match r.read(&mut c).expect("read") {
                Some(f) => got.push(f.to_vec()),
                None => std::thread::yield_now(),
            }
        }
        got
    });
    let mut p = Producer::attach(&words).expect("producer");
    let frames: Vec<Vec<u8>> = (0..300u32)
        .map(|i| (0..(i * 7) % 1500).map(|b| (b ^ i) as u8).collect())
        .collect();
    for f in &frames {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !push_frame(&mut p, f, &Futex).expect("push") {
            assert!(std::time::Instant::now() < deadline, "the reader stopped");
            std::thread::yield_now();
        }
    }
    assert_eq!(reader.join().expect("reader"), frames);
}
