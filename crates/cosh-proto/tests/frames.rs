//! Frames round-trip, and no input — arbitrary, truncated, corrupted or oversized — makes
//! decoding panic or accept something malformed.

use cosh_core::{DomainId, ErrorKind, PoolId};
use cosh_proto::{
    DecodeError, EncodeError, HEADER_LEN, MAX_FRAME, MAX_TEXT, Message, PROTOCOL_VERSIONS, decode,
    encode, error_code, error_kind, negotiate,
};
use proptest::prelude::*;

fn message() -> impl Strategy<Value = Message> {
    let text = "\\PC{0,64}";
    prop_oneof![
        (any::<u16>(), any::<u16>(), text).prop_map(|(a, b, name)| Message::Hello {
            min_version: a.min(b),
            max_version: a.max(b),
            name,
        }),
        (any::<u16>(), any::<u32>(), any::<u32>()).prop_map(|(version, pool, index)| {
            Message::Welcome {
                version,
                domain: DomainId {
                    pool: PoolId(pool),
                    index,
                },
            }
        }),
        text.prop_map(|reason| Message::Refused { reason }),
        (prop::sample::select(ErrorKind::ALL.to_vec()), text)
            .prop_map(|(kind, message)| Message::Error { kind, message }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn every_message_round_trips(m in message()) {
        let bytes = encode(&m).expect("encodes");
        prop_assert!(bytes.len() <= MAX_FRAME);
        prop_assert_eq!(decode(&bytes).expect("decodes"), m);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn arbitrary_payloads_behind_a_valid_header_never_panic(
        kind in 0u16..8,
        payload in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut frame = b"CO".to_vec();
        frame.extend_from_slice(&1u16.to_le_bytes());
        frame.extend_from_slice(&kind.to_le_bytes());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&payload);
        if let Ok(m) = decode(&frame) {
            // Whatever decodes must encode back to the same bytes: nothing is accepted loosely.
            prop_assert_eq!(encode(&m).expect("re-encodes"), frame);
        }
    }

    #[test]
    fn corrupted_frames_never_panic_and_truncation_is_always_caught(
        m in message(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = encode(&m).expect("encodes");
        let mut corrupted = bytes.clone();
        let i = at.index(corrupted.len());
        corrupted[i] = byte;
        let _ = decode(&corrupted);
        let short = &bytes[..cut.index(bytes.len())];
        prop_assert!(decode(short).is_err(), "a truncated frame was accepted");
        let mut long = bytes.clone();
        long.push(0);
        prop_assert!(decode(&long).is_err(), "a frame with a trailing byte was accepted");
    }
}

#[test]
fn malformed_frames_get_specific_errors() {
    let good = encode(&Message::Refused {
        reason: "no".into(),
    })
    .expect("encodes");
    assert_eq!(decode(&good[..3]), Err(DecodeError::TooShort { len: 3 }));
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(decode(&bad), Err(DecodeError::BadMagic { .. })));
    let mut bad = good.clone();
    bad[2] = 9;
    assert_eq!(
        decode(&bad),
        Err(DecodeError::UnsupportedFrameVersion { found: 9 })
    );
    let mut bad = good.clone();
    bad[4] = 200;
    assert_eq!(decode(&bad), Err(DecodeError::UnknownKind { kind: 200 }));
    let mut huge = good[..HEADER_LEN].to_vec();
    huge[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        decode(&huge),
        Err(DecodeError::TooLarge {
            len: u64::from(u32::MAX)
        })
    );
    let e = decode(&good[..good.len() - 1]).expect_err("short payload");
    assert!(matches!(e, DecodeError::LengthMismatch { .. }), "{e}");
    // An empty version range, and an unknown error code.
    let hello = encode(&Message::Hello {
        min_version: 1,
        max_version: 1,
        name: String::new(),
    })
    .expect("encodes");
    let mut inverted = hello.clone();
    inverted[HEADER_LEN] = 2; // min_version 2 > max_version 1
    assert!(matches!(
        decode(&inverted),
        Err(DecodeError::Malformed {
            message: "hello",
            ..
        })
    ));
    let err = encode(&Message::Error {
        kind: ErrorKind::Fault,
        message: String::new(),
    })
    .expect("encodes");
    let mut unknown = err.clone();
    unknown[HEADER_LEN] = 99;
    let e = decode(&unknown).expect_err("unknown code");
    assert!(e.to_string().contains("unknown error code 99"), "{e}");
}

#[test]
fn only_the_canonical_encoding_is_accepted() {
    // Welcome with version 1 written as an overlong varint (0x81 0x00), domain 0.
    let payload = [0x81u8, 0x00, 0x00];
    let mut frame = b"CO".to_vec();
    frame.extend_from_slice(&1u16.to_le_bytes());
    frame.extend_from_slice(&2u16.to_le_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    let e = decode(&frame).expect_err("overlong varint");
    assert!(e.to_string().contains("canonical"), "{e}");
}

#[test]
fn oversized_text_is_refused_both_ways() {
    let long = "x".repeat(MAX_TEXT + 1);
    assert_eq!(
        encode(&Message::Refused {
            reason: long.clone()
        }),
        Err(EncodeError::TextTooLong { len: MAX_TEXT + 1 })
    );
    // A peer that sends one anyway is refused when decoding.
    let mut frame = b"CO".to_vec();
    frame.extend_from_slice(&1u16.to_le_bytes());
    frame.extend_from_slice(&3u16.to_le_bytes());
    let payload = postcard::to_allocvec(&long).expect("encodes");
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    let e = decode(&frame).expect_err("oversized text");
    assert!(e.to_string().contains("4097 bytes"), "{e}");
}

#[test]
fn error_codes_are_unique_and_round_trip() {
    let mut codes: Vec<u16> = ErrorKind::ALL.iter().map(|k| error_code(*k)).collect();
    for k in ErrorKind::ALL {
        assert_eq!(error_kind(error_code(k)), Some(k));
    }
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), ErrorKind::ALL.len());
    assert_eq!(error_kind(0), None);
}

#[test]
fn negotiation_picks_the_newest_common_version_or_refuses_clearly() {
    let (min, max) = (*PROTOCOL_VERSIONS.start(), *PROTOCOL_VERSIONS.end());
    assert_eq!(negotiate(min, max), Ok(max));
    assert_eq!(negotiate(0, u16::MAX), Ok(max));
    let refusal = negotiate(max + 1, max + 5).expect_err("too new");
    assert!(
        refusal.to_string().contains("upgrade the older side"),
        "{refusal}"
    );
    assert!(negotiate(5, 3).is_err(), "an empty range");
    if min > 0 {
        assert!(negotiate(0, min - 1).is_err(), "too old");
    }
}
