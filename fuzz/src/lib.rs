//! What the fuzz targets share: checking a protocol frame the way the block manager reads one.

#![forbid(unsafe_code)]

use cosh_proto::{FRAME_VERSION, HEADER_LEN, MAGIC, Message, decode, encode};

/// The frame kinds on the wire (`cosh-proto`'s frame layout).
pub mod kind {
    /// Client → block manager, first.
    pub const HELLO: u16 = 1;
    /// The handshake's answer.
    pub const WELCOME: u16 = 2;
    /// The handshake's refusal.
    pub const REFUSED: u16 = 3;
    /// A failed request.
    pub const ERROR: u16 = 4;
    /// A request (postcard).
    pub const REQUEST: u16 = 5;
    /// A response (postcard).
    pub const RESPONSE: u16 = 6;
    /// A request without answer, in a fixed layout.
    pub const RECORD: u16 = 7;
    /// Block manager ↔ block manager.
    pub const LINK: u16 = 8;
}

/// `body` behind a well-formed header of `kind`, so that the fuzzer spends its time on what
/// follows the header.
pub fn framed(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&FRAME_VERSION.to_le_bytes());
    frame.extend_from_slice(&kind.to_le_bytes());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(body);
    frame
}

/// Decodes `frame` as the block manager does; what it accepts must be the one encoding of a
/// message (records aside, which re-encode as the request they carry), and re-encoding it
/// must give that message back.
pub fn check_frame(frame: &[u8]) -> Option<Message> {
    let message = decode(frame).ok()?;
    let again = encode(&message).expect("a decoded message encodes");
    let record = frame.get(4..6) == Some(&kind::RECORD.to_le_bytes()[..]);
    if !record {
        assert_eq!(again, frame, "accepted a frame that is not canonical");
    }
    assert_eq!(
        decode(&again).expect("a re-encoded message decodes"),
        message,
        "the message changed on its way round"
    );
    Some(message)
}
