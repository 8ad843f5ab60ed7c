//! CoshFS's write log: a client appends writes to shared memory and the service takes them,
//! while the client (hostile) scribbles over any word of the log. Untouched, every write
//! comes out whole and in order; touched, the service reports a corrupt log or takes
//! entries no longer than the limit, and never panics or reads out of bounds.
#![no_main]

use std::collections::VecDeque;

use cosh_fs::log::{LogReader, LogWriter};
use cosh_fs::proto::INLINE_MAX;
use cosh_sys::mapping::Prefault;
use cosh_sys::memfd::Memfd;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const WORDS: u64 = 512;

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let mut writer = LogWriter::create(WORDS).expect("a log");
    let fd = writer.fd().try_clone_to_owned().expect("dup");
    let mut reader = LogReader::attach(fd, WORDS).expect("a fresh log");
    let fd = writer.fd().try_clone_to_owned().expect("dup");
    let mut scribbler = Memfd::from_fd(fd)
        .and_then(|m| m.map_write(Prefault::Now))
        .expect("a second mapping");
    let mut sent: VecDeque<(u64, u64, i64, Vec<u8>)> = VecDeque::new();
    let mut scribbled = false;
    while !u.is_empty() {
        match u.int_in_range(0..=2u8)? {
            0 => {
                let (fh, offset, made): (u64, u64, i64) = u.arbitrary()?;
                let len = u.int_in_range(0..=3000usize)?;
                let data: Vec<u8> = (0..len).map(|i| (i as u8) ^ (fh as u8)).collect();
                match writer.append(fh, offset, made, &data) {
                    Ok(true) => sent.push_back((fh, offset, made, data)),
                    Ok(false) => {}
                    Err(e) => {
                        assert!(scribbled, "the writer failed on an intact log: {e}");
                        return Ok(());
                    }
                }
            }
            1 => {
                let bytes = scribbler.as_mut_slice();
                let word = u.choose_index(bytes.len() / 8)?;
                let value: u64 = u.arbitrary()?;
                bytes[word * 8..word * 8 + 8].copy_from_slice(&value.to_le_bytes());
                scribbled = true;
            }
            _ => match reader.take() {
                Ok(Some(e)) => {
                    assert!(e.data.len() <= INLINE_MAX, "an entry past the limit");
                    if !scribbled {
                        let (fh, offset, made, data) = sent.pop_front().expect("a write was sent");
                        assert_eq!((e.fh, e.offset, e.made_ns), (fh, offset, made));
                        assert_eq!(e.data, &data[..], "a write changed on the way");
                    }
                }
                Ok(None) => {
                    if !scribbled {
                        assert!(sent.is_empty(), "writes sent were not taken");
                    }
                }
                Err(e) => {
                    assert!(scribbled, "the service failed on an intact log: {e}");
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
