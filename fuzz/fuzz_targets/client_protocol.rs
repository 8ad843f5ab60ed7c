//! The client protocol: the body of each kind a client or block manager sends, behind a
//! well-formed header (the first byte picks the kind).
#![no_main]

use cosh_fuzz::{check_frame, framed, kind};
use libfuzzer_sys::fuzz_target;

const KINDS: [u16; 7] = [
    kind::HELLO,
    kind::WELCOME,
    kind::REFUSED,
    kind::ERROR,
    kind::REQUEST,
    kind::RESPONSE,
    kind::RECORD,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(pick) % KINDS.len()];
    check_frame(&framed(kind, body));
});
