//! The protocol between block managers: link messages behind a well-formed header.
#![no_main]

use cosh_fuzz::{check_frame, framed, kind};
use cosh_proto::Message;
use cosh_proto::link::LinkMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(message) = check_frame(&framed(kind::LINK, data)) {
        let Message::Link(link) = message else {
            panic!("a link frame decoded as {message:?}");
        };
        if let LinkMessage::Deliver {
            pieces, new_slots, ..
        } = &link
        {
            assert!(pieces.len() <= cosh_proto::link::MAX_LINK_PIECES);
            assert!(new_slots.len() <= cosh_proto::link::MAX_LINK_SLOTS);
        }
    }
});
