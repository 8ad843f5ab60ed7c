//! Rights, transfer modes, strength and transfer flags: the vocabulary of Table 1.
//!
//! | mode  | sender needs | sender keeps | receiver gets   |
//! |-------|--------------|--------------|-----------------|
//! | move  | read/write   | no access    | read/write      |
//! | share | read         | read-only    | read-only       |
//! | copy  | read         | unchanged    | read/write copy |

use std::fmt;

/// Access rights on an aggregate, or a memory permission on a buffer. Ordered:
/// `None < Read < ReadWrite`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Rights {
    /// No access.
    #[default]
    None,
    /// Read-only access.
    Read,
    /// Read and write access.
    ReadWrite,
}

impl Rights {
    /// All rights, from least to most.
    pub const ALL: [Rights; 3] = [Rights::None, Rights::Read, Rights::ReadWrite];

    /// Whether these rights allow reading.
    pub fn can_read(self) -> bool {
        self >= Rights::Read
    }

    /// Whether these rights allow writing.
    pub fn can_write(self) -> bool {
        self == Rights::ReadWrite
    }

    /// The stable lower-case name used in scenario files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Rights::None => "none",
            Rights::Read => "read",
            Rights::ReadWrite => "read-write",
        }
    }

    /// Parses a name made by [`Rights::name`].
    pub fn from_name(name: &str) -> Option<Rights> {
        Rights::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rights::None => "no access",
            Rights::Read => "read-only",
            Rights::ReadWrite => "read/write",
        })
    }
}

/// The kind of access an iterator is started for (`iter_start(agg, read|write, offset)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reading: needs read-only or read/write rights.
    Read,
    /// Writing: needs read/write rights.
    Write,
}

impl Access {
    /// The rights this access needs.
    pub fn needs(self) -> Rights {
        match self {
            Access::Read => Rights::Read,
            Access::Write => Rights::ReadWrite,
        }
    }
}

/// How a transfer treats the data (Table 1 of the paper).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// Hand the data off: the sender needs read/write, keeps no access; the receiver gets
    /// read/write.
    Move,
    /// Share read-only: the sender needs read, keeps read-only; the receiver gets read-only.
    Share,
    /// Copy: the sender needs read and keeps its rights; the receiver gets a read/write copy.
    Copy,
}

impl Mode {
    /// All modes.
    pub const ALL: [Mode; 3] = [Mode::Move, Mode::Share, Mode::Copy];

    /// The rights the sender's aggregate needs for a transfer in this mode.
    pub fn sender_needs(self) -> Rights {
        match self {
            Mode::Move => Rights::ReadWrite,
            Mode::Share | Mode::Copy => Rights::Read,
        }
    }

    /// The rights the sender's aggregate keeps after a transfer, given what it held.
    pub fn sender_keeps(self, held: Rights) -> Rights {
        match self {
            Mode::Move => Rights::None,
            Mode::Share => held.min(Rights::Read),
            Mode::Copy => held,
        }
    }

    /// The rights the receiver's aggregate gets.
    pub fn receiver_gets(self) -> Rights {
        match self {
            Mode::Move | Mode::Copy => Rights::ReadWrite,
            Mode::Share => Rights::Read,
        }
    }

    /// The stable lower-case name used in scenario files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Move => "move",
            Mode::Share => "share",
            Mode::Copy => "copy",
        }
    }

    /// Parses a name made by [`Mode::name`].
    pub fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a transfer must leave every domain's memory permissions within its rights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Strength {
    /// After the transfer no domain's memory permissions exceed its rights (the default).
    #[default]
    Strong,
    /// Domains that earlier received access may keep permissions beyond their rights and are
    /// trusted not to use them. A hint that an implementation may ignore.
    Weak,
}

impl Strength {
    /// Both strengths.
    pub const ALL: [Strength; 2] = [Strength::Strong, Strength::Weak];

    /// The stable lower-case name used in scenario files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Strength::Strong => "strong",
            Strength::Weak => "weak",
        }
    }

    /// Parses a name made by [`Strength::name`].
    pub fn from_name(name: &str) -> Option<Strength> {
        Strength::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Strength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a transfer does when related aggregates of the sender still hold the transferred
/// buffers with more rights than the transfer leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum RelatedPolicy {
    /// Copy the affected portions; the related aggregates keep their rights (the default,
    /// which keeps reasoning about a transfer local).
    #[default]
    Copy,
    /// Fail the transfer; `find_related` lists the culprits.
    Fail,
}

/// The optional flags of a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TransferFlags {
    /// Strong (default) or weak.
    pub strength: Strength,
    /// What to do about related aggregates.
    pub related: RelatedPolicy,
}

impl TransferFlags {
    /// Wire and C bit: the transfer is weak.
    pub const WEAK_BIT: u32 = 1;
    /// Wire and C bit: fail instead of copying when related aggregates hold more rights.
    pub const FAIL_IF_RELATED_BIT: u32 = 2;

    /// Strong transfer, related portions copied: the defaults.
    pub fn strong() -> Self {
        TransferFlags::default()
    }

    /// Weak transfer, related portions copied.
    pub fn weak() -> Self {
        TransferFlags {
            strength: Strength::Weak,
            related: RelatedPolicy::Copy,
        }
    }

    /// The same flags, failing instead of copying when related aggregates hold more rights.
    pub fn fail_if_related(self) -> Self {
        TransferFlags {
            related: RelatedPolicy::Fail,
            ..self
        }
    }

    /// Encodes the flags as bits for the wire and the C API.
    pub fn to_bits(self) -> u32 {
        let mut bits = 0;
        if self.strength == Strength::Weak {
            bits |= Self::WEAK_BIT;
        }
        if self.related == RelatedPolicy::Fail {
            bits |= Self::FAIL_IF_RELATED_BIT;
        }
        bits
    }

    /// Decodes bits made by [`TransferFlags::to_bits`]; unknown bits are refused, never
    /// ignored, and handed back.
    pub fn from_bits(bits: u32) -> Result<Self, u32> {
        let unknown = bits & !(Self::WEAK_BIT | Self::FAIL_IF_RELATED_BIT);
        if unknown != 0 {
            return Err(unknown);
        }
        Ok(TransferFlags {
            strength: if bits & Self::WEAK_BIT != 0 {
                Strength::Weak
            } else {
                Strength::Strong
            },
            related: if bits & Self::FAIL_IF_RELATED_BIT != 0 {
                RelatedPolicy::Fail
            } else {
                RelatedPolicy::Copy
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_are_ordered_and_named() {
        assert!(Rights::None < Rights::Read && Rights::Read < Rights::ReadWrite);
        for r in Rights::ALL {
            assert_eq!(Rights::from_name(r.name()), Some(r));
        }
        assert_eq!(Rights::from_name("rw"), None);
    }

    #[test]
    fn table_1_is_encoded() {
        assert_eq!(Mode::Move.sender_needs(), Rights::ReadWrite);
        assert_eq!(Mode::Move.sender_keeps(Rights::ReadWrite), Rights::None);
        assert_eq!(Mode::Move.receiver_gets(), Rights::ReadWrite);
        assert_eq!(Mode::Share.sender_needs(), Rights::Read);
        assert_eq!(Mode::Share.sender_keeps(Rights::ReadWrite), Rights::Read);
        assert_eq!(Mode::Share.sender_keeps(Rights::Read), Rights::Read);
        assert_eq!(Mode::Share.receiver_gets(), Rights::Read);
        assert_eq!(Mode::Copy.sender_needs(), Rights::Read);
        assert_eq!(Mode::Copy.sender_keeps(Rights::Read), Rights::Read);
        assert_eq!(
            Mode::Copy.sender_keeps(Rights::ReadWrite),
            Rights::ReadWrite
        );
        assert_eq!(Mode::Copy.receiver_gets(), Rights::ReadWrite);
    }

    #[test]
    fn flags_round_trip_and_refuse_unknown_bits() {
        for strength in Strength::ALL {
            for related in [RelatedPolicy::Copy, RelatedPolicy::Fail] {
                let f = TransferFlags { strength, related };
                assert_eq!(TransferFlags::from_bits(f.to_bits()), Ok(f));
            }
        }
        assert_eq!(TransferFlags::from_bits(0x10 | 1), Err(0x10));
    }
}
