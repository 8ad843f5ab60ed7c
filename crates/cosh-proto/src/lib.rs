//! The Cosh wire protocol between clients and block managers, sans I/O: frames, the version
//! handshake, and stable codes for errors. Nothing here reads or writes a socket; callers hand
//! in and take out byte slices (one frame per SOCK_SEQPACKET message, or length-prefixed on a
//! stream).
//!
//! Every frame is a 10-byte header (magic `CO`, frame format version, message kind, payload
//! length, all little-endian) followed by a postcard payload; `PROTOCOL.md` documents the
//! layout and every message. Decoding never panics and never trusts a length it was given:
//! oversized, truncated, trailing or malformed input is an error.
//!
//! A connection starts with the handshake: the client sends [`Message::Hello`] with the range
//! of protocol versions it speaks; the block manager answers [`Message::Welcome`] with the
//! version chosen by [`negotiate`] and the client's domain id, or [`Message::Refused`].
//!
//! ```
//! use cosh_proto::{Message, decode, encode, negotiate, PROTOCOL_VERSIONS};
//!
//! let hello = Message::Hello { min_version: 1, max_version: 7, name: "example".into() };
//! let bytes = encode(&hello)?;
//! let Message::Hello { min_version, max_version, .. } = decode(&bytes)? else { unreachable!() };
//! assert_eq!(negotiate(min_version, max_version), Ok(*PROTOCOL_VERSIONS.end()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod codes;
mod frame;
pub mod link;
pub mod ops;

pub use codes::{error_code, error_kind};
pub use frame::{
    DecodeError, EncodeError, FRAME_VERSION, HEADER_LEN, MAGIC, MAX_FRAME, MAX_TEXT, Message,
    PROTOCOL_VERSIONS, Refusal, decode, encode, encode_into, negotiate,
};
