//! Frames: header, payload encoding and decoding, and the handshake messages.

use std::ops::RangeInclusive;

use cosh_core::{DomainId, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::codes::{error_code, error_kind};
use crate::ops::{Request, Response, WireMode, WireRights, check_request, check_response};

/// The first two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"CO";
/// The frame format version (header layout and payload encoding). It changes only if the
/// framing itself changes; message semantics are versioned by the handshake.
pub const FRAME_VERSION: u16 = 1;
/// Header length: magic (2), frame version (2), kind (2), payload length (4).
pub const HEADER_LEN: usize = 10;
/// The largest frame accepted or produced, header included.
pub const MAX_FRAME: usize = 64 * 1024;
/// The longest text field (names, reasons, messages), in bytes.
pub const MAX_TEXT: usize = 4096;
/// The protocol versions this build speaks.
pub const PROTOCOL_VERSIONS: RangeInclusive<u16> = 1..=1;

/// A message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Client → block manager, first: the versions the client speaks and a name for logs.
    Hello {
        /// Oldest version the client speaks.
        min_version: u16,
        /// Newest version the client speaks.
        max_version: u16,
        /// A name for the client (program name), for status and logs.
        name: String,
    },
    /// Block manager → client: the handshake succeeded.
    Welcome {
        /// The protocol version both now speak.
        version: u16,
        /// The client's domain id (it names the block manager's pool).
        domain: DomainId,
    },
    /// Block manager → client: the handshake failed; the connection closes.
    Refused {
        /// Why, for the user.
        reason: String,
    },
    /// Either way: a request failed.
    Error {
        /// The kind of failure.
        kind: ErrorKind,
        /// What happened and what to do.
        message: String,
    },
    /// Client → block manager: an operation of the aggregate API.
    Request(Request),
    /// Block manager → client: the answer to a request.
    Response(Response),
    /// Block manager ↔ block manager, on a link.
    Link(crate::link::LinkMessage),
}

/// Message kinds on the wire.
mod kind {
    pub(super) const HELLO: u16 = 1;
    pub(super) const WELCOME: u16 = 2;
    pub(super) const REFUSED: u16 = 3;
    pub(super) const ERROR: u16 = 4;
    pub(super) const REQUEST: u16 = 5;
    pub(super) const RESPONSE: u16 = 6;
    pub(super) const RECORD: u16 = 7;
    pub(super) const LINK: u16 = 8;
}

/// Records — the requests without answer that a client writes on every direct transfer and
/// free (`Direct`, `Wake`, `Release`) — travel as kind 7 in a fixed little-endian layout
/// rather than postcard: a tag byte, then each field (ids eight bytes, a mode one byte:
/// 0 move, 1 share, 2 copy). One byte sequence per record, read without allocating.
mod record {
    pub(super) const DIRECT: u8 = 1;
    pub(super) const WAKE: u8 = 2;
    pub(super) const RELEASE: u8 = 3;
    pub(super) const INLINE: u8 = 4;
    pub(super) const LAND: u8 = 5;
}

fn rights_byte(r: WireRights) -> u8 {
    match r {
        WireRights::None => 0,
        WireRights::Read => 1,
        WireRights::ReadWrite => 2,
    }
}

fn mode_byte(m: WireMode) -> u8 {
    match m {
        WireMode::Move => 0,
        WireMode::Share => 1,
        WireMode::Copy => 2,
    }
}

/// Appends a record's fixed layout; `false` (nothing appended) for any other request.
fn record_body(r: &Request, out: &mut Vec<u8>) -> bool {
    match r {
        Request::Direct { agg, to, mode, new } => {
            out.push(record::DIRECT);
            out.extend_from_slice(&agg.to_le_bytes());
            out.extend_from_slice(&to.to_le_bytes());
            out.push(mode_byte(*mode));
            out.extend_from_slice(&new.to_le_bytes());
        }
        Request::Wake { to } => {
            out.push(record::WAKE);
            out.extend_from_slice(&to.to_le_bytes());
        }
        Request::Release { agg } => {
            out.push(record::RELEASE);
            out.extend_from_slice(&agg.to_le_bytes());
        }
        Request::Inline {
            agg,
            to,
            mode,
            weak,
        } => {
            out.push(record::INLINE);
            out.extend_from_slice(&agg.to_le_bytes());
            out.extend_from_slice(&to.to_le_bytes());
            out.push(mode_byte(*mode));
            out.push(u8::from(*weak));
        }
        Request::Land { agg, len, rights } => {
            out.push(record::LAND);
            out.extend_from_slice(&agg.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.push(rights_byte(*rights));
        }
        _ => return false,
    }
    true
}

/// Reads a record's fixed layout: exact length, known tag and mode.
fn decode_record_body(bytes: &[u8]) -> Result<Request, DecodeError> {
    let bad = |reason: String| DecodeError::Malformed {
        message: "record",
        reason,
    };
    let u64_at = |at: usize| -> u64 {
        bytes
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes)
    };
    let (tag, len) = match bytes.first() {
        Some(&record::DIRECT) => (record::DIRECT, 26),
        Some(&t @ (record::WAKE | record::RELEASE)) => (t, 9),
        Some(&record::INLINE) => (record::INLINE, 19),
        Some(&record::LAND) => (record::LAND, 18),
        Some(t) => return Err(bad(format!("record tag {t}"))),
        None => return Err(bad("empty".into())),
    };
    if bytes.len() != len {
        return Err(bad(format!("{} bytes for a record of {len}", bytes.len())));
    }
    let mode = |at: usize| match bytes[at] {
        0 => Ok(WireMode::Move),
        1 => Ok(WireMode::Share),
        2 => Ok(WireMode::Copy),
        m => Err(bad(format!("mode {m}"))),
    };
    Ok(match tag {
        record::DIRECT => Request::Direct {
            agg: u64_at(1),
            to: u64_at(9),
            mode: mode(17)?,
            new: u64_at(18),
        },
        record::INLINE => Request::Inline {
            agg: u64_at(1),
            to: u64_at(9),
            mode: mode(17)?,
            weak: match bytes[18] {
                0 => false,
                1 => true,
                w => return Err(bad(format!("strength {w}"))),
            },
        },
        record::LAND => Request::Land {
            agg: u64_at(1),
            len: u64_at(9),
            rights: match bytes[17] {
                0 => WireRights::None,
                1 => WireRights::Read,
                2 => WireRights::ReadWrite,
                r => return Err(bad(format!("rights {r}"))),
            },
        },
        record::WAKE => Request::Wake { to: u64_at(1) },
        _ => Request::Release { agg: u64_at(1) },
    })
}

#[derive(Serialize, Deserialize)]
struct HelloBody {
    min_version: u16,
    max_version: u16,
    name: String,
}

#[derive(Serialize, Deserialize)]
struct WelcomeBody {
    version: u16,
    domain: u64,
}

#[derive(Serialize, Deserialize)]
struct RefusedBody {
    reason: String,
}

#[derive(Serialize, Deserialize)]
struct ErrorBody {
    code: u16,
    message: String,
}

/// Why a message could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A text field is longer than [`MAX_TEXT`].
    #[error("a text field of {len} bytes is longer than the {MAX_TEXT}-byte limit")]
    TextTooLong {
        /// Its length.
        len: usize,
    },
    /// The frame would be larger than [`MAX_FRAME`].
    #[error("the frame would be {len} bytes, more than the {MAX_FRAME}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// The payload encoder failed.
    #[error("cannot encode the payload: {0}")]
    Payload(String),
}

/// Why bytes are not a valid frame. Every malformed input gets one of these, never a panic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than a header.
    #[error("frame of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The magic bytes are wrong: this is not a Cosh peer.
    #[error(
        "not a Cosh frame (magic {found:02x?}); is the other end a Cosh block manager or client?"
    )]
    BadMagic {
        /// The bytes found.
        found: [u8; 2],
    },
    /// A frame format this build does not speak.
    #[error(
        "frame format version {found} is not supported (this build speaks {FRAME_VERSION}); upgrade the older side"
    )]
    UnsupportedFrameVersion {
        /// The version found.
        found: u16,
    },
    /// The header announces more than [`MAX_FRAME`].
    #[error("frame announces {len} payload bytes, more than the {MAX_FRAME}-byte limit")]
    TooLarge {
        /// The announced payload length.
        len: u64,
    },
    /// The announced payload length does not match what arrived.
    #[error("frame announces {announced} payload bytes but carries {actual}")]
    LengthMismatch {
        /// The length in the header.
        announced: usize,
        /// The bytes present.
        actual: usize,
    },
    /// An unknown message kind.
    #[error("unknown message kind {kind}")]
    UnknownKind {
        /// The kind found.
        kind: u16,
    },
    /// The payload does not decode as the message its kind names.
    #[error("malformed {message} message: {reason}")]
    Malformed {
        /// The message kind's name.
        message: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn check_text(text: &str) -> Result<(), EncodeError> {
    if text.len() > MAX_TEXT {
        Err(EncodeError::TextTooLong { len: text.len() })
    } else {
        Ok(())
    }
}

/// Appends `value`'s postcard encoding to `out`.
fn body<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let bytes = std::mem::take(out);
    *out = postcard::to_extend(value, bytes).map_err(|e| EncodeError::Payload(e.to_string()))?;
    Ok(())
}

/// Encodes one message as one frame.
pub fn encode(message: &Message) -> Result<Vec<u8>, EncodeError> {
    let mut frame = Vec::new();
    encode_into(message, &mut frame)?;
    Ok(frame)
}

/// [`encode`] into `out` (cleared first), so that a caller that sends many messages reuses
/// one buffer.
pub fn encode_into(message: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.clear();
    out.resize(HEADER_LEN, 0);
    let kind = match message {
        Message::Hello {
            min_version,
            max_version,
            name,
        } => {
            check_text(name)?;
            body(
                &HelloBody {
                    min_version: *min_version,
                    max_version: *max_version,
                    name: name.clone(),
                },
                out,
            )?;
            kind::HELLO
        }
        Message::Welcome { version, domain } => {
            body(
                &WelcomeBody {
                    version: *version,
                    domain: domain.to_bits(),
                },
                out,
            )?;
            kind::WELCOME
        }
        Message::Refused { reason } => {
            check_text(reason)?;
            body(
                &RefusedBody {
                    reason: reason.clone(),
                },
                out,
            )?;
            kind::REFUSED
        }
        Message::Error { kind: k, message } => {
            check_text(message)?;
            body(
                &ErrorBody {
                    code: error_code(*k),
                    message: message.clone(),
                },
                out,
            )?;
            kind::ERROR
        }
        Message::Request(r) => {
            if record_body(r, out) {
                kind::RECORD
            } else {
                check_request(r).map_err(EncodeError::Payload)?;
                body(r, out)?;
                kind::REQUEST
            }
        }
        Message::Response(r) => {
            check_response(r).map_err(EncodeError::Payload)?;
            body(r, out)?;
            kind::RESPONSE
        }
        Message::Link(l) => {
            l.check().map_err(EncodeError::Payload)?;
            body(l, out)?;
            kind::LINK
        }
    };
    let len = out.len();
    if len > MAX_FRAME {
        return Err(EncodeError::TooLarge { len });
    }
    let payload = u32::try_from(len - HEADER_LEN).unwrap_or(u32::MAX);
    out[..2].copy_from_slice(&MAGIC);
    out[2..4].copy_from_slice(&FRAME_VERSION.to_le_bytes());
    out[4..6].copy_from_slice(&kind.to_le_bytes());
    out[6..10].copy_from_slice(&payload.to_le_bytes());
    Ok(())
}

/// Decodes a payload completely: trailing bytes are an error.
fn payload<'a, T: Deserialize<'a>>(
    message: &'static str,
    bytes: &'a [u8],
) -> Result<T, DecodeError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| DecodeError::Malformed {
            message,
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed {
            message,
            reason: format!("{} bytes after the payload", rest.len()),
        });
    }
    Ok(value)
}

fn text(message: &'static str, field: &str, value: String) -> Result<String, DecodeError> {
    if value.len() > MAX_TEXT {
        return Err(DecodeError::Malformed {
            message,
            reason: format!("{field} is {} bytes, more than {MAX_TEXT}", value.len()),
        });
    }
    Ok(value)
}

/// Decodes one frame. Only the canonical encoding of a message is accepted (postcard would
/// also take overlong integers), so every message has exactly one byte sequence on the wire.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    thread_local! {
        // The re-encoding compared below, kept between calls.
        static CANONICAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let message = decode_loosely(bytes)?;
    if bytes.get(4..6) == Some(&kind::RECORD.to_le_bytes()[..]) {
        // A fixed layout read exactly: canonical by construction.
        return Ok(message);
    }
    let canonical = CANONICAL.with(|c| {
        let mut c = c.borrow_mut();
        encode_into(&message, &mut c).is_ok() && c.as_slice() == bytes
    });
    if !canonical {
        return Err(DecodeError::Malformed {
            message: message.name(),
            reason: "not in canonical encoding".into(),
        });
    }
    Ok(message)
}

impl Message {
    /// The message's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Welcome { .. } => "welcome",
            Message::Refused { .. } => "refused",
            Message::Error { .. } => "error",
            Message::Request(_) => "request",
            Message::Response(_) => "response",
            Message::Link(_) => "link",
        }
    }
}

fn decode_loosely(bytes: &[u8]) -> Result<Message, DecodeError> {
    let Some((header, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(DecodeError::TooShort { len: bytes.len() });
    };
    let found = [header[0], header[1]];
    if found != MAGIC {
        return Err(DecodeError::BadMagic { found });
    }
    let version = u16::from_le_bytes([header[2], header[3]]);
    if version != FRAME_VERSION {
        return Err(DecodeError::UnsupportedFrameVersion { found: version });
    }
    let kind = u16::from_le_bytes([header[4], header[5]]);
    let announced = u32::from_le_bytes([header[6], header[7], header[8], header[9]]);
    if u64::from(announced) + HEADER_LEN as u64 > MAX_FRAME as u64 {
        return Err(DecodeError::TooLarge {
            len: u64::from(announced),
        });
    }
    let announced = announced as usize;
    if announced != rest.len() {
        return Err(DecodeError::LengthMismatch {
            announced,
            actual: rest.len(),
        });
    }
    match kind {
        kind::HELLO => {
            let b: HelloBody = payload("hello", rest)?;
            if b.min_version > b.max_version {
                return Err(DecodeError::Malformed {
                    message: "hello",
                    reason: format!(
                        "version range {}..={} is empty",
                        b.min_version, b.max_version
                    ),
                });
            }
            Ok(Message::Hello {
                min_version: b.min_version,
                max_version: b.max_version,
                name: text("hello", "name", b.name)?,
            })
        }
        kind::WELCOME => {
            let b: WelcomeBody = payload("welcome", rest)?;
            Ok(Message::Welcome {
                version: b.version,
                domain: DomainId::from_bits(b.domain),
            })
        }
        kind::REFUSED => {
            let b: RefusedBody = payload("refused", rest)?;
            Ok(Message::Refused {
                reason: text("refused", "reason", b.reason)?,
            })
        }
        kind::ERROR => {
            let b: ErrorBody = payload("error", rest)?;
            let kind = error_kind(b.code).ok_or_else(|| DecodeError::Malformed {
                message: "error",
                reason: format!("unknown error code {}", b.code),
            })?;
            Ok(Message::Error {
                kind,
                message: text("error", "message", b.message)?,
            })
        }
        kind::REQUEST => {
            let r: Request = payload("request", rest)?;
            check_request(&r).map_err(|reason| DecodeError::Malformed {
                message: "request",
                reason,
            })?;
            Ok(Message::Request(r))
        }
        kind::RECORD => Ok(Message::Request(decode_record_body(rest)?)),
        kind::RESPONSE => {
            let r: Response = payload("response", rest)?;
            check_response(&r).map_err(|reason| DecodeError::Malformed {
                message: "response",
                reason,
            })?;
            Ok(Message::Response(r))
        }
        kind::LINK => {
            let l: crate::link::LinkMessage = payload("link", rest)?;
            l.check().map_err(|reason| DecodeError::Malformed {
                message: "link",
                reason,
            })?;
            Ok(Message::Link(l))
        }
        other => Err(DecodeError::UnknownKind { kind: other }),
    }
}

/// Why a handshake was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "no common protocol version: the client speaks {client_min}..={client_max}, this block manager {server_min}..={server_max}; upgrade the older side"
)]
pub struct Refusal {
    /// Oldest version the client speaks.
    pub client_min: u16,
    /// Newest version the client speaks.
    pub client_max: u16,
    /// Oldest version this build speaks.
    pub server_min: u16,
    /// Newest version this build speaks.
    pub server_max: u16,
}

/// The newest protocol version both a client speaking `client_min..=client_max` and this
/// build speak.
pub fn negotiate(client_min: u16, client_max: u16) -> Result<u16, Refusal> {
    let (server_min, server_max) = (*PROTOCOL_VERSIONS.start(), *PROTOCOL_VERSIONS.end());
    let best = client_max.min(server_max);
    if client_min <= client_max && best >= client_min.max(server_min) {
        Ok(best)
    } else {
        Err(Refusal {
            client_min,
            client_max,
            server_min,
            server_max,
        })
    }
}
