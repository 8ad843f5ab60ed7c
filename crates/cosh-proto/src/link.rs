//! Messages between block managers. A link carries transfers from domains of one pool to
//! domains of another (paper §4.3): the source block manager has already downgraded the
//! sender and holds the bytes; it tells the destination where they are ([`LinkMessage::Deliver`]),
//! the destination checks the receiver and allocates ([`LinkMessage::Accepted`]), copies on
//! its copy engine, queues the aggregate for the receiver and answers
//! ([`LinkMessage::Delivered`]), and the source drops its hold.
//!
//! On a link between block managers of one machine, the bytes stay where they are: each piece
//! names a slot of the source's memory, and the first delivery that names a slot carries a
//! read-only descriptor of it (SCM_RIGHTS, in the order of `new_slots`), which the destination
//! maps once and keeps until [`LinkMessage::Forget`].

use serde::{Deserialize, Serialize};

use crate::ops::{WireMode, WireStrength};

/// The most pieces in one [`LinkMessage::Deliver`] part.
pub const MAX_LINK_PIECES: usize = 1024;
/// The most descriptors (new slots) in one part: the socket's limit per message.
pub const MAX_LINK_SLOTS: usize = 16;
/// The longest link token.
pub const MAX_TOKEN: usize = 256;
/// The most slots in one [`LinkMessage::Forget`].
pub const MAX_LINK_FORGET: usize = 4096;

/// A piece of a transfer in the source's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPiece {
    /// The source's slot.
    pub slot: u64,
    /// Offset in the slot.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

/// A message on a link (frame kind 8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkMessage {
    /// Opener → acceptor, first: the opener's pool and the protocol versions it speaks.
    Open {
        /// The opener's pool.
        pool: u32,
        /// Oldest version spoken.
        min_version: u16,
        /// Newest version spoken.
        max_version: u16,
    },
    /// Acceptor → opener: the link is up.
    Opened {
        /// The acceptor's pool.
        pool: u32,
        /// The version both speak.
        version: u16,
    },
    /// Source → destination: one part of transfer `id`; parts of one transfer come in a row,
    /// and the last has `more: false`. Header fields are repeated in every part.
    Deliver {
        /// The source's number for the transfer (answered in `Delivered`).
        id: u64,
        /// The sending domain (of the source's pool).
        source: u64,
        /// The receiving domain (of the destination's pool).
        receiver: u64,
        /// Move, share or copy.
        mode: WireMode,
        /// The strength the receiver is told.
        strength: WireStrength,
        /// The ticket, for `attach_recv`.
        ticket: Option<u64>,
        /// The bytes, in order (at most [`MAX_LINK_PIECES`]).
        pieces: Vec<LinkPiece>,
        /// Slots named for the first time, one descriptor each (at most [`MAX_LINK_SLOTS`]).
        new_slots: Vec<u64>,
        /// Another part follows.
        more: bool,
    },
    /// Destination → source: transfer `id` was queued for its receiver (`error: None`) or
    /// failed (an error code of `cosh-proto` and a message).
    Delivered {
        /// The transfer.
        id: u64,
        /// Why it failed.
        error: Option<(u16, String)>,
    },
    /// Source → destination: these slots are gone; drop their mappings.
    Forget {
        /// Slots (at most [`MAX_LINK_FORGET`]).
        slots: Vec<u64>,
    },
    /// Opener → acceptor over TCP (another host), first: like `Open`, with the shared
    /// authentication token the acceptor was started with.
    OpenRemote {
        /// The opener's pool.
        pool: u32,
        /// Oldest version spoken.
        min_version: u16,
        /// Newest version spoken.
        max_version: u16,
        /// The link token (at most [`MAX_TOKEN`] bytes).
        token: String,
    },
    /// Source → destination over TCP: transfer `id`, whose `len` bytes follow this frame on
    /// the stream.
    Stream {
        /// The source's number for the transfer.
        id: u64,
        /// The sending domain.
        source: u64,
        /// The receiving domain.
        receiver: u64,
        /// Move, share or copy.
        mode: WireMode,
        /// The strength the receiver is told.
        strength: WireStrength,
        /// The ticket, for `attach_recv`.
        ticket: Option<u64>,
        /// Bytes that follow.
        len: u64,
    },
    /// Destination → source: transfer `id` has a receiver and memory and is being copied;
    /// `Delivered` follows. A weak move or share is answered to its sender now (pipelined:
    /// see [`answered_on_acceptance`]); a strong transfer or a copy once delivered.
    Accepted {
        /// The transfer.
        id: u64,
    },
    /// Source → destination: this domain of the source's pool disconnected (after every
    /// transfer of its sent before): receives waiting for it end with `unknown_domain`.
    Gone {
        /// The domain, as `DomainId::to_bits` makes it.
        domain: u64,
    },
}

/// Whether a transfer's sender is answered when the destination accepts it rather than once
/// the bytes are copied: weak moves and shares, whose senders are trusted not to touch what
/// they gave away. A strong transfer is a snapshot, so its sender waits for the copy.
pub fn answered_on_acceptance(mode: WireMode, strength: WireStrength) -> bool {
    mode != WireMode::Copy && strength == WireStrength::Weak
}

impl LinkMessage {
    /// Checks the limits a decoder enforces.
    pub(crate) fn check(&self) -> Result<(), String> {
        match self {
            LinkMessage::Deliver {
                pieces, new_slots, ..
            } if pieces.len() > MAX_LINK_PIECES || new_slots.len() > MAX_LINK_SLOTS => {
                Err(format!(
                    "a delivery part with {} pieces and {} new slots, more than {MAX_LINK_PIECES} and {MAX_LINK_SLOTS}",
                    pieces.len(),
                    new_slots.len()
                ))
            }
            LinkMessage::Delivered {
                error: Some((_, m)),
                ..
            } if m.len() > crate::MAX_TEXT => Err(format!("an error message of {} bytes", m.len())),
            LinkMessage::Forget { slots } if slots.len() > MAX_LINK_FORGET => Err(format!(
                "{} slots to forget, more than {MAX_LINK_FORGET}",
                slots.len()
            )),
            _ => Ok(()),
        }
    }
}
