//! Stable numeric codes for error kinds on the wire (and, later, in `cosh.h`). Codes are never
//! reused or renumbered; a new kind gets the next number.

use cosh_core::ErrorKind;

/// The wire code of an error kind.
pub fn error_code(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::UnknownDomain => 1,
        ErrorKind::UnknownAggregate => 2,
        ErrorKind::OutOfRange => 3,
        ErrorKind::InsufficientRights => 4,
        ErrorKind::RightsUpgrade => 5,
        ErrorKind::SelfTransfer => 6,
        ErrorKind::RelatedAggregates => 7,
        ErrorKind::NothingPending => 8,
        ErrorKind::UnknownTicket => 9,
        ErrorKind::TicketReused => 10,
        ErrorKind::StalePlan => 11,
        ErrorKind::Fault => 12,
        ErrorKind::TooLarge => 13,
        ErrorKind::TooFragmented => 14,
        ErrorKind::UnknownName => 15,
        ErrorKind::NameTaken => 16,
        ErrorKind::Unavailable => 17,
        ErrorKind::Protocol => 18,
        ErrorKind::OverQuota => 19,
    }
}

/// The error kind of a wire code, if it names one.
pub fn error_kind(code: u16) -> Option<ErrorKind> {
    ErrorKind::ALL.into_iter().find(|k| error_code(*k) == code)
}
