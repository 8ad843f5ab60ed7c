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
fn records_have_a_fixed_layout_read_exactly() {
    use cosh_proto::ops::{Request, WireMode};
    let direct = encode(&Message::Request(Request::Direct {
        agg: 5,
        to: 6,
        mode: WireMode::Share,
        new: 7,
    }))
    .expect("encode");
    // Header, tag, agg, to, mode, new: one ring record.
    assert_eq!(direct.len(), HEADER_LEN + 26);
    assert_eq!(&direct[4..6], &7u16.to_le_bytes());
    let release = encode(&Message::Request(Request::Release { agg: 9 })).expect("encode");
    assert_eq!(release.len(), HEADER_LEN + 9);
    assert_eq!(
        decode(&release).expect("decode"),
        Message::Request(Request::Release { agg: 9 })
    );
    // An unknown mode, an unknown tag, a byte short or too many: refused, by name.
    let with = |at: usize, byte: u8| {
        let mut f = direct.clone();
        f[at] = byte;
        f
    };
    for bad in [with(HEADER_LEN + 17, 3), with(HEADER_LEN, 9)] {
        let e = decode(&bad).expect_err("malformed");
        assert!(e.to_string().contains("record"), "{e}");
    }
    let mut short = direct[..direct.len() - 1].to_vec();
    short[6..10].copy_from_slice(&25u32.to_le_bytes());
    assert!(decode(&short).is_err());
    let mut long = direct.clone();
    long.push(0);
    long[6..10].copy_from_slice(&27u32.to_le_bytes());
    assert!(decode(&long).is_err());
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

mod operations {
    use cosh_proto::ops::{DirectRecord, MAX_MAPPERS, decode_record, encode_record};
    use cosh_proto::ops::{
        DmaStatus, DomainStatus, Limits, LinkStatus, MAX_AGGS, MAX_MAP, MAX_NAME, MAX_PIECES,
        MAX_REVOKE, MAX_STATUS_DOMAINS, MAX_STATUS_LINKS, MAX_STATUS_NAME, MapRequest,
        MappedBuffer, Request, Response, SmallTransfers, Status, TransferCounts, TransferReport,
        WireAccess, WireMode, WirePiece, WireRights, WireStrength,
    };
    use cosh_proto::{MAX_FRAME, Message, decode, encode};
    use proptest::prelude::*;

    fn rights() -> impl Strategy<Value = WireRights> {
        prop_oneof![
            Just(WireRights::None),
            Just(WireRights::Read),
            Just(WireRights::ReadWrite)
        ]
    }

    fn access() -> impl Strategy<Value = WireAccess> {
        prop_oneof![Just(WireAccess::Read), Just(WireAccess::Write)]
    }

    fn mode() -> impl Strategy<Value = WireMode> {
        prop_oneof![
            Just(WireMode::Move),
            Just(WireMode::Share),
            Just(WireMode::Copy)
        ]
    }

    fn request() -> impl Strategy<Value = Request> {
        let name = "[a-z./-]{1,40}";
        prop_oneof![
            any::<u64>().prop_map(|len| Request::Alloc { len }),
            any::<u64>().prop_map(|agg| Request::Incref { agg }),
            any::<u64>().prop_map(|agg| Request::Decref { agg }),
            any::<u64>().prop_map(|agg| Request::Info { agg }),
            (any::<u64>(), access(), any::<u64>(), any::<u32>()).prop_map(
                |(agg, access, offset, max)| Request::Pieces {
                    agg,
                    access,
                    offset,
                    max
                }
            ),
            prop::collection::vec(
                (any::<u64>(), access()).prop_map(|(buffer, access)| MapRequest { buffer, access }),
                0..=MAX_MAP
            )
            .prop_map(|buffers| Request::Map { buffers }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(first, second)| Request::Concat { first, second }),
            (any::<u64>(), any::<u64>(), any::<u64>())
                .prop_map(|(agg, offset, len)| { Request::Select { agg, offset, len } }),
            (any::<u64>(), rights(), any::<u64>()).prop_map(|(agg, min_rights, after)| {
                Request::FindRelated {
                    agg,
                    min_rights,
                    after,
                }
            }),
            (any::<u64>(), rights()).prop_map(|(agg, rights)| Request::Downgrade { agg, rights }),
            (
                any::<u64>(),
                any::<u64>(),
                mode(),
                any::<u32>(),
                any::<(bool, bool, Option<u64>)>()
            )
                .prop_map(|(agg, dest, mode, flags, (ticketed, revoked, seq))| {
                    Request::Transfer {
                        agg,
                        dest,
                        mode,
                        flags,
                        ticketed,
                        revoked,
                        seq,
                    }
                }),
            Just(Request::Revoked),
            (any::<Option<u64>>(), any::<Option<u64>>())
                .prop_map(|(source, timeout_ms)| Request::Receive { source, timeout_ms }),
            (any::<u64>(), any::<u64>(), any::<Option<u64>>()).prop_map(
                |(source, ticket, timeout_ms)| Request::AttachRecv {
                    source,
                    ticket,
                    timeout_ms
                }
            ),
            any::<u64>().prop_map(|peer| Request::Trust { peer }),
            name.prop_map(|name| Request::Register { name }),
            name.prop_map(|name| Request::Lookup { name }),
            Just(Request::Status),
            Just(Request::Shutdown),
            any::<u64>().prop_map(|to| Request::OpenDirect { to }),
            any::<u64>().prop_map(|from| Request::AttachDirect { from }),
            (any::<(u64, u64, u64)>(), mode()).prop_map(|((agg, to, new), mode)| Request::Direct {
                agg,
                to,
                mode,
                new
            }),
            any::<u64>().prop_map(|to| Request::Wake { to }),
            Just(Request::Lease),
            any::<u64>().prop_map(|agg| Request::Release { agg }),
            any::<u64>().prop_map(|len| Request::AllocUnzeroed { len }),
            Just(Request::PoolInfo),
            (any::<(u64, u64, bool)>(), mode()).prop_map(|((agg, to, weak), mode)| {
                Request::Inline {
                    agg,
                    to,
                    mode,
                    weak,
                }
            }),
            (any::<(u64, u64)>(), 0u8..3).prop_map(|((agg, len), r)| Request::Land {
                agg,
                len,
                rights: [WireRights::None, WireRights::Read, WireRights::ReadWrite][usize::from(r)],
            }),
            Just(Request::SmallTransfers),
        ]
    }

    fn response() -> impl Strategy<Value = Response> {
        let piece =
            any::<(u64, u64, u64, u64)>().prop_map(|(buffer, slot, offset, len)| WirePiece {
                buffer,
                slot,
                offset,
                len,
            });
        prop_oneof![
            Just(Response::Done),
            any::<u64>().prop_map(|agg| Response::Agg { agg }),
            (any::<u64>(), rights()).prop_map(|(len, rights)| Response::Info { len, rights }),
            (prop::collection::vec(piece, 0..32), any::<bool>())
                .prop_map(|(pieces, more)| Response::Pieces { pieces, more }),
            prop::collection::vec(
                (any::<(u64, u64, u64)>(), access()).prop_map(|((buffer, slot, len), access)| {
                    MappedBuffer {
                        buffer,
                        slot,
                        len,
                        access,
                    }
                }),
                0..=MAX_MAP
            )
            .prop_map(|buffers| Response::Mapped { buffers }),
            (prop::collection::vec(any::<u64>(), 0..32), any::<bool>())
                .prop_map(|(aggs, more)| Response::Aggs { aggs, more }),
            (prop::collection::vec(any::<u64>(), 0..32), any::<bool>())
                .prop_map(|(slots, more)| Response::Revoke { slots, more }),
            prop::collection::vec(any::<u64>(), 0..32).prop_map(|slots| Response::Forget { slots }),
            (any::<Option<u64>>(), any::<(u64, u64, u32, u32, bool)>()).prop_map(
                |(ticket, (r, c, s, f, weak))| Response::Transferred {
                    ticket,
                    report: TransferReport {
                        referenced_bytes: r,
                        copied_bytes: c,
                        sealed_buffers: s,
                        refused_seals: f,
                        weak,
                    },
                }
            ),
            (
                any::<u64>(),
                any::<u64>(),
                mode(),
                any::<bool>(),
                any::<(Option<u64>, Option<u64>, Option<(u64, u64, u64, u64)>)>(),
                prop::option::of(prop::collection::vec(any::<u64>(), 0..=MAX_MAPPERS))
            )
                .prop_map(
                    |(agg, source, mode, weak, (ticket, seq, piece), mappers)| {
                        Response::Received {
                            agg,
                            source,
                            mode,
                            strength: if weak {
                                WireStrength::Weak
                            } else {
                                WireStrength::Strong
                            },
                            ticket,
                            seq,
                            piece: piece.map(|(buffer, slot, offset, len)| WirePiece {
                                buffer,
                                slot,
                                offset,
                                len,
                            }),
                            mappers,
                        }
                    }
                ),
            any::<u64>().prop_map(|domain| Response::Domain { domain }),
            (any::<u64>(), any::<(u64, u64, u64, u64)>()).prop_map(
                |(agg, (buffer, slot, offset, len))| Response::Allocated {
                    agg,
                    piece: WirePiece {
                        buffer,
                        slot,
                        offset,
                        len
                    }
                }
            ),
            any::<(u32, u64, u64)>().prop_map(|(capacity, first, count)| {
                Response::DirectOpened {
                    capacity,
                    first,
                    count,
                }
            }),
            any::<u32>().prop_map(|capacity| Response::DirectAttached { capacity }),
            any::<u64>().prop_map(|from| Response::DirectInbound { from }),
            Just(Response::Woken),
            any::<u64>().prop_map(|peer| Response::DirectClosed { peer }),
            any::<(u64, u64)>().prop_map(|(first, count)| Response::Leased { first, count }),
            (any::<u32>(), any::<bool>(), any::<u32>()).prop_map(|(pool, nc, eviction)| {
                Response::PoolInfo {
                    pool,
                    eviction,
                    kind: if nc {
                        cosh_proto::ops::WirePoolKind::Nc
                    } else {
                        cosh_proto::ops::WirePoolKind::Host
                    },
                }
            }),
            (
                any::<(u64, u64, u64, u64, u64, u64)>(),
                any::<(u64, u64, u64)>(),
                any::<(bool, bool)>()
            )
                .prop_map(
                    |(
                        (inline_max, weak, ring, handoff, map, per_mib),
                        (share_copy_max, copy, seal),
                        (fixed, share_fixed),
                    )| {
                        Response::SmallTransfers(SmallTransfers {
                            inline_max,
                            inline_max_weak: weak,
                            ring_ns_per_kib: ring,
                            handoff_ns: handoff,
                            map_ns: map,
                            map_ns_per_mib: per_mib,
                            fixed,
                            share_copy_max,
                            copy_ns_per_mib: copy,
                            seal_ns_per_mib: seal,
                            share_fixed,
                        })
                    }
                ),
            (any::<u64>(), any::<(u64, u64, u64, u64)>()).prop_map(
                |(agg, (buffer, slot, offset, len))| Response::AllocatedPiece {
                    agg,
                    piece: WirePiece {
                        buffer,
                        slot,
                        offset,
                        len
                    }
                }
            ),
        ]
    }

    fn record() -> impl Strategy<Value = DirectRecord> {
        prop_oneof![
            (
                any::<(u64, u64, u64, u64, u64, u64)>(),
                any::<bool>(),
                prop::collection::vec(any::<u64>(), 0..=MAX_MAPPERS)
            )
                .prop_map(|((seq, agg, buffer, slot, offset, len), moved, mappers)| {
                    DirectRecord::Transfer {
                        seq,
                        agg,
                        mode: if moved {
                            WireMode::Move
                        } else {
                            WireMode::Share
                        },
                        piece: WirePiece {
                            buffer,
                            slot,
                            offset,
                            len,
                        },
                        mappers: cosh_proto::ops::Mappers::from_slice(&mappers)
                            .expect("at most MAX_MAPPERS"),
                    }
                }),
            any::<u64>().prop_map(|seq| DirectRecord::Queued { seq }),
            (any::<(u64, u64, u32)>(), mode(), any::<(bool, bool)>()).prop_map(
                |((seq, len, at), mode, (weak, streamed))| DirectRecord::Inline {
                    seq,
                    mode,
                    weak,
                    len,
                    at,
                    streamed,
                }
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn direct_records_round_trip_and_survive_corruption(
            r in record(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let bytes = encode_record(&r).expect("encodes");
            prop_assert_eq!(decode_record(&bytes).expect("decodes"), r);
            let mut bad = bytes.clone();
            let i = at.index(bad.len());
            bad[i] = byte;
            if let Ok(m) = decode_record(&bad) {
                prop_assert_eq!(encode_record(&m).expect("re-encodes"), bad);
            }
        }

        #[test]
        fn requests_and_responses_round_trip(
            r in request(),
            s in response(),
        ) {
            for m in [Message::Request(r), Message::Response(s)] {
                let bytes = encode(&m).expect("encodes");
                prop_assert_eq!(decode(&bytes).expect("decodes"), m);
            }
        }

        #[test]
        fn corrupted_operations_never_panic(
            r in request(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = encode(&Message::Request(r)).expect("encodes");
            let i = at.index(bytes.len());
            bytes[i] = byte;
            if let Ok(m) = decode(&bytes) {
                prop_assert_eq!(encode(&m).expect("re-encodes"), bytes);
            }
        }
    }

    fn status(domains: usize, name_len: usize) -> Status {
        Status {
            pool: u32::MAX,
            pid: u32::MAX,
            uptime_s: u64::MAX,
            domain_count: u64::MAX,
            domains: (0..domains)
                .map(|_| DomainStatus {
                    domain: u64::MAX,
                    name: "x".repeat(name_len),
                    pid: u32::MAX,
                    uid: u32::MAX,
                    aggregates: u64::MAX,
                    buffers: u64::MAX,
                    bytes: u64::MAX,
                    quota_bytes: u64::MAX,
                    quota_buffers: u64::MAX,
                })
                .collect(),
            buffers: u64::MAX,
            bytes_in_use: u64::MAX,
            free_buffers: u64::MAX,
            free_bytes: u64::MAX,
            pool_bytes: u64::MAX,
            pool_limit: u64::MAX,
            names: u64::MAX,
            transfers: TransferCounts {
                moves: u64::MAX,
                shares: u64::MAX,
                copies: u64::MAX,
                weak: u64::MAX,
                by_descriptor: u64::MAX,
                by_seal: u64::MAX,
                by_copy: u64::MAX,
                copied_bytes: u64::MAX,
                refused_seals: u64::MAX,
                exported: u64::MAX,
                imported: u64::MAX,
                lost: u64::MAX,
                engine_busy_us: u64::MAX,
                inline: u64::MAX,
                inline_bytes: u64::MAX,
            },
            links: vec![
                LinkStatus {
                    pool: u32::MAX,
                    outgoing: true,
                    in_flight: u64::MAX,
                    open: true,
                    remote: true,
                };
                MAX_STATUS_LINKS
            ],
            dma: Some(DmaStatus {
                setup_us: u64::MAX,
                bytes_per_second: u64::MAX,
            }),
            limits: Limits {
                domain_bytes: u64::MAX,
                domain_buffers: u64::MAX,
                uid_bytes: u64::MAX,
                uid_buffers: u64::MAX,
                sender_pending: u64::MAX,
                receiver_pending: u64::MAX,
                uid_connections: u64::MAX,
                connections: u64::MAX,
                buffers: u64::MAX,
                descriptors: u64::MAX,
            },
            small: SmallTransfers {
                inline_max: u64::MAX,
                inline_max_weak: u64::MAX,
                ring_ns_per_kib: u64::MAX,
                handoff_ns: u64::MAX,
                map_ns: u64::MAX,
                map_ns_per_mib: u64::MAX,
                fixed: true,
                share_copy_max: u64::MAX,
                copy_ns_per_mib: u64::MAX,
                seal_ns_per_mib: u64::MAX,
                share_fixed: true,
            },
        }
    }

    /// The page limits are chosen so that the largest page, with the largest numbers, still
    /// fits in one frame; one more item is refused on both sides.
    #[test]
    fn the_fullest_pages_fit_in_a_frame_and_one_more_is_refused() {
        let piece = WirePiece {
            buffer: u64::MAX,
            slot: u64::MAX,
            offset: u64::MAX,
            len: u64::MAX,
        };
        let full = [
            Response::Pieces {
                pieces: vec![piece; MAX_PIECES],
                more: true,
            },
            Response::Aggs {
                aggs: vec![u64::MAX; MAX_AGGS],
                more: true,
            },
            Response::Revoke {
                slots: vec![u64::MAX; MAX_REVOKE],
                more: true,
            },
            Response::Forget {
                slots: vec![u64::MAX; MAX_REVOKE],
            },
            Response::Status(Box::new(status(MAX_STATUS_DOMAINS, MAX_STATUS_NAME))),
        ];
        for r in full {
            let bytes = encode(&Message::Response(r.clone())).expect("the fullest page encodes");
            assert!(bytes.len() <= MAX_FRAME);
            assert_eq!(decode(&bytes).expect("decodes"), Message::Response(r));
        }
        let over = [
            Response::Pieces {
                pieces: vec![piece; MAX_PIECES + 1],
                more: true,
            },
            Response::Aggs {
                aggs: vec![1; MAX_AGGS + 1],
                more: false,
            },
            Response::Revoke {
                slots: vec![1; MAX_REVOKE + 1],
                more: false,
            },
            Response::Status(Box::new(status(MAX_STATUS_DOMAINS + 1, 1))),
            Response::Status(Box::new(status(1, MAX_STATUS_NAME + 1))),
        ];
        for r in over {
            assert!(encode(&Message::Response(r)).is_err());
        }
        let map = MapRequest {
            buffer: 1,
            access: WireAccess::Read,
        };
        assert!(
            encode(&Message::Request(Request::Map {
                buffers: vec![map; MAX_MAP + 1]
            }))
            .is_err()
        );
    }

    #[test]
    fn names_are_bounded_and_printable() {
        for bad in [String::new(), "n".repeat(MAX_NAME + 1), "a\nb".into()] {
            let err = encode(&Message::Request(Request::Register { name: bad.clone() }))
                .expect_err("refused");
            assert!(!err.to_string().is_empty());
            // The decoder refuses what the encoder would not make.
            let mut frame = b"CO".to_vec();
            frame.extend_from_slice(&1u16.to_le_bytes());
            frame.extend_from_slice(&5u16.to_le_bytes());
            let mut payload = vec![16u8]; // the variant index of Lookup
            payload.push(bad.len() as u8);
            payload.extend_from_slice(bad.as_bytes());
            if bad.len() < 128 {
                frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                frame.extend_from_slice(&payload);
                assert!(decode(&frame).is_err(), "{bad:?} was accepted");
            }
        }
        let ok = Message::Request(Request::Register {
            name: "n".repeat(MAX_NAME),
        });
        assert_eq!(decode(&encode(&ok).expect("encodes")).expect("decodes"), ok);
    }
}

#[test]
fn direct_records_refuse_copies_and_long_mapper_lists() {
    use cosh_proto::ops::{DirectRecord, MAX_MAPPERS, Mappers, WireMode, WirePiece, encode_record};
    let piece = WirePiece {
        buffer: 1,
        slot: 2,
        offset: 0,
        len: 4096,
    };
    let copy = DirectRecord::Transfer {
        seq: 0,
        agg: 1,
        mode: WireMode::Copy,
        piece,
        mappers: Mappers::new(),
    };
    assert!(encode_record(&copy).is_err());
    // A record cannot even hold more mappers than the limit.
    assert!(Mappers::from_slice(&[7; MAX_MAPPERS + 1]).is_none());
    let mut full = Mappers::from_slice(&[7; MAX_MAPPERS]).expect("fits");
    assert!(!full.push(8));
    assert_eq!(full.as_slice(), &[7; MAX_MAPPERS]);
    // Nor does the decoder take what the encoder refuses.
    let ok = DirectRecord::Transfer {
        seq: 0,
        agg: 1,
        mode: WireMode::Move,
        piece,
        mappers: full,
    };
    let mut bytes = encode_record(&ok).expect("encodes");
    // The mapper count is the byte after the piece; bump it and append one more mapper.
    let at = bytes.len() - 8 * MAX_MAPPERS - 1;
    assert_eq!(bytes[at] as usize, MAX_MAPPERS);
    bytes[at] += 1;
    bytes.extend_from_slice(&7u64.to_le_bytes());
    assert!(cosh_proto::ops::decode_record(&bytes).is_err());
    // Nor a record cut short, or with a byte too many.
    let good = encode_record(&ok).expect("encodes");
    assert!(cosh_proto::ops::decode_record(&good[..good.len() - 1]).is_err());
    let mut long = good.clone();
    long.push(0);
    assert!(cosh_proto::ops::decode_record(&long).is_err());
}
