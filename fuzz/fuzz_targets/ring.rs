//! A shared-memory ring of frames between a producer and a consumer, with the peer
//! scribbling over any word of it at any moment (its header, positions, records). Untouched,
//! every frame arrives whole and in order; touched, the consumer reports corruption or reads
//! garbage frames no longer than its limit, and never panics or reads out of bounds.
#![no_main]

use std::collections::VecDeque;

use cosh_ring::frames::{FrameReader, push_frame_quietly};
use cosh_ring::{AtomicU32, Consumer, Ordering, Producer, init, words_for};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const CAPACITY: u32 = 8;
const MAX_FRAME: usize = 256;

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let words: Vec<AtomicU32> = (0..words_for(CAPACITY))
        .map(|_| AtomicU32::new(0))
        .collect();
    init(&words, CAPACITY).expect("a fresh ring");
    let mut producer = Producer::attach(&words).expect("a fresh ring");
    let mut consumer = Consumer::attach(&words).expect("a fresh ring");
    let mut reader = FrameReader::new(MAX_FRAME);
    let mut sent: VecDeque<Vec<u8>> = VecDeque::new();
    let mut scribbled = false;
    let mut serial = 0u8;
    while !u.is_empty() {
        match u.int_in_range(0..=3u8)? {
            0 => {
                let len = u.int_in_range(0..=MAX_FRAME)?;
                serial = serial.wrapping_add(1);
                let frame: Vec<u8> = (0..len).map(|i| serial ^ (i as u8)).collect();
                match push_frame_quietly(&mut producer, &frame) {
                    Ok(true) => sent.push_back(frame),
                    Ok(false) => {}
                    Err(e) => {
                        assert!(scribbled, "the producer failed on an intact ring: {e}");
                        return Ok(());
                    }
                }
            }
            1 => {
                let at = u.choose_index(words.len())?;
                words[at].store(u.arbitrary()?, Ordering::Relaxed);
                scribbled = true;
            }
            2 => match reader.read(&mut consumer) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= MAX_FRAME, "a frame past the limit");
                    if !scribbled {
                        let want = sent.pop_front().expect("a frame was sent");
                        assert_eq!(frame, &want[..], "a frame changed on the way");
                    }
                }
                Ok(None) => {
                    if !scribbled {
                        assert!(sent.is_empty(), "frames sent were not read");
                    }
                }
                Err(e) => {
                    assert!(scribbled, "the consumer failed on an intact ring: {e}");
                    return Ok(());
                }
            },
            _ => match Consumer::attach_at(&words, consumer.position()) {
                Ok(again) => consumer = again,
                Err(e) => {
                    assert!(scribbled, "attaching again failed on an intact ring: {e}");
                    return Ok(());
                }
            },
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
