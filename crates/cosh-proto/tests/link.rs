//! Link messages between block managers round-trip, the fullest delivery part fits in a frame
//! and one more piece or slot is refused both ways, and corrupted link frames never panic.

use cosh_proto::link::{LinkMessage, LinkPiece, MAX_LINK_FORGET, MAX_LINK_PIECES, MAX_LINK_SLOTS};
use cosh_proto::ops::{WireMode, WireStrength};
use cosh_proto::{MAX_FRAME, Message, decode, encode};
use proptest::prelude::*;

fn piece() -> impl Strategy<Value = LinkPiece> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(slot, offset, len)| LinkPiece {
        slot,
        offset,
        len,
    })
}

fn link() -> impl Strategy<Value = LinkMessage> {
    let mode = prop::sample::select(vec![WireMode::Move, WireMode::Share, WireMode::Copy]);
    let strength = prop::sample::select(vec![WireStrength::Weak, WireStrength::Strong]);
    prop_oneof![
        (any::<u32>(), any::<u16>(), any::<u16>()).prop_map(|(pool, a, b)| LinkMessage::Open {
            pool,
            min_version: a.min(b),
            max_version: a.max(b),
        }),
        (any::<u32>(), any::<u16>())
            .prop_map(|(pool, version)| LinkMessage::Opened { pool, version }),
        (
            (any::<u64>(), any::<u64>(), any::<u64>(), mode, strength),
            prop::option::of(any::<u64>()),
            prop::collection::vec(piece(), 0..40),
            prop::collection::vec(any::<u64>(), 0..=MAX_LINK_SLOTS),
            any::<bool>()
        )
            .prop_map(
                |((id, source, receiver, mode, strength), ticket, pieces, new_slots, more)| {
                    LinkMessage::Deliver {
                        id,
                        source,
                        receiver,
                        mode,
                        strength,
                        ticket,
                        pieces,
                        new_slots,
                        more,
                    }
                }
            ),
        (any::<u64>(), prop::option::of((any::<u16>(), "\\PC{0,64}")))
            .prop_map(|(id, error)| LinkMessage::Delivered { id, error }),
        prop::collection::vec(any::<u64>(), 0..100).prop_map(|slots| LinkMessage::Forget { slots }),
        any::<u64>().prop_map(|id| LinkMessage::Accepted { id }),
        (any::<u32>(), any::<u16>(), "[a-z0-9]{0,64}").prop_map(|(pool, v, token)| {
            LinkMessage::OpenRemote {
                pool,
                min_version: v,
                max_version: v,
                token,
            }
        }),
        (
            (any::<u64>(), any::<u64>(), any::<u64>()),
            prop::option::of(any::<u64>()),
            any::<u64>()
        )
            .prop_map(
                |((id, source, receiver), ticket, len)| LinkMessage::Stream {
                    id,
                    source,
                    receiver,
                    mode: WireMode::Move,
                    strength: WireStrength::Weak,
                    ticket,
                    len,
                }
            ),
    ]
}

proptest! {
    #[test]
    fn link_messages_round_trip(m in link()) {
        let m = Message::Link(m);
        let bytes = encode(&m).expect("encodes");
        prop_assert!(bytes.len() <= MAX_FRAME);
        prop_assert_eq!(decode(&bytes).expect("decodes"), m);
    }

    #[test]
    fn corrupted_link_frames_never_panic(m in link(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = encode(&Message::Link(m)).expect("encodes");
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let _ = decode(&bytes);
        bytes.truncate(i);
        prop_assert!(decode(&bytes).is_err(), "a truncated frame is refused");
    }
}

fn deliver(pieces: usize, slots: usize) -> Message {
    let piece = LinkPiece {
        slot: u64::MAX,
        offset: u64::MAX,
        len: u64::MAX,
    };
    Message::Link(LinkMessage::Deliver {
        id: u64::MAX,
        source: u64::MAX,
        receiver: u64::MAX,
        mode: WireMode::Copy,
        strength: WireStrength::Strong,
        ticket: Some(u64::MAX),
        pieces: vec![piece; pieces],
        new_slots: vec![u64::MAX; slots],
        more: true,
    })
}

#[test]
fn the_fullest_parts_fit_in_a_frame_and_one_more_is_refused() {
    let full = [
        deliver(MAX_LINK_PIECES, MAX_LINK_SLOTS),
        Message::Link(LinkMessage::Forget {
            slots: vec![u64::MAX; MAX_LINK_FORGET],
        }),
    ];
    for m in full {
        let bytes = encode(&m).expect("the fullest part encodes");
        assert!(bytes.len() <= MAX_FRAME);
        assert_eq!(decode(&bytes).expect("decodes"), m);
    }
    for m in [
        deliver(MAX_LINK_PIECES + 1, 0),
        deliver(0, MAX_LINK_SLOTS + 1),
        Message::Link(LinkMessage::Forget {
            slots: vec![1; MAX_LINK_FORGET + 1],
        }),
    ] {
        assert!(encode(&m).is_err(), "{} refused", m.name());
    }
}
