//! Errors of the aggregate API, each with a stable [`ErrorKind`].
//!
//! Every variant carries the numbers a user needs to see what went wrong, and its message
//! says what to do. The kind is what scenarios, the wire protocol and the C API compare.

use std::fmt;

use crate::id::{AggId, BufferId, DomainId, Ticket};
use crate::rights::{Mode, Rights};

/// The operation that needed rights it did not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Reading through an aggregate.
    Read,
    /// Writing through an aggregate.
    Write,
    /// Selecting or concatenating (needs some access).
    Derive,
    /// A transfer in the given mode.
    Transfer(Mode),
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Read => f.write_str("read"),
            Operation::Write => f.write_str("write"),
            Operation::Derive => f.write_str("select or concat"),
            Operation::Transfer(m) => write!(f, "transfer by {m}"),
        }
    }
}

fn rights_hint(held: Rights) -> &'static str {
    match held {
        Rights::None => " (it was moved away or downgraded to no access; drop it)",
        Rights::Read => " (it was shared or downgraded; shared data stays read-only until freed)",
        Rights::ReadWrite => "",
    }
}

/// An error of the aggregate API.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The domain is not connected.
    #[error("domain {domain} is not connected (it exited, was killed, or never existed)")]
    UnknownDomain {
        /// The domain named.
        domain: DomainId,
    },
    /// The handle names no live aggregate of this domain.
    #[error(
        "aggregate {agg} does not exist in domain {domain} (never allocated here, already freed by its last decref, or not yet received)"
    )]
    UnknownAggregate {
        /// The handle used.
        agg: AggId,
        /// The domain that used it.
        domain: DomainId,
    },
    /// A byte range does not fit in the aggregate.
    #[error(
        "range of {len} bytes at offset {offset} does not fit in aggregate {agg} of {available} bytes"
    )]
    OutOfRange {
        /// The aggregate.
        agg: AggId,
        /// Requested start.
        offset: u64,
        /// Requested length.
        len: u64,
        /// The aggregate's length.
        available: u64,
    },
    /// The aggregate's rights do not allow the operation.
    #[error("cannot {op}: it needs {needed} rights but aggregate {agg} has {held}{}", rights_hint(*.held))]
    InsufficientRights {
        /// The aggregate.
        agg: AggId,
        /// What was attempted.
        op: Operation,
        /// The rights needed.
        needed: Rights,
        /// The rights held.
        held: Rights,
    },
    /// An aggregate would be longer than the implementation allows.
    #[error("an aggregate of {len} bytes is too large: the limit here is {max} bytes")]
    TooLarge {
        /// The length asked for (saturated at `u64::MAX`).
        len: u64,
        /// The limit.
        max: u64,
    },
    /// An aggregate would have more chunks than the implementation allows.
    #[error(
        "an aggregate of {chunks} chunks is too fragmented: the limit is {max}; coalesce it (copy it into a fresh aggregate) first"
    )]
    TooFragmented {
        /// The chunks it would have.
        chunks: usize,
        /// The limit.
        max: usize,
    },
    /// Rights only go down.
    #[error(
        "cannot raise aggregate {agg} from {held} to {requested}: rights are only ever downgraded"
    )]
    RightsUpgrade {
        /// The aggregate.
        agg: AggId,
        /// The rights held.
        held: Rights,
        /// The rights asked for.
        requested: Rights,
    },
    /// A domain tried to transfer to itself.
    #[error("domain {domain} cannot transfer to itself; select or clone the aggregate instead")]
    SelfTransfer {
        /// The domain.
        domain: DomainId,
    },
    /// Related aggregates hold the transferred buffers with more rights than the transfer
    /// leaves, and the transfer was asked to fail rather than copy.
    #[error(
        "transfer of {agg} refused: related aggregates {} still hold its buffers with more rights than the transfer leaves (find_related lists them; drop or downgrade them, or transfer without fail-if-related to copy those portions)", list(.related)
    )]
    RelatedAggregates {
        /// The aggregate to be transferred.
        agg: AggId,
        /// The related aggregates in the way.
        related: Vec<AggId>,
    },
    /// No transfer is waiting.
    #[error("no transfer is waiting for domain {domain}{}", from_hint(*.sender))]
    NothingPending {
        /// The receiving domain.
        domain: DomainId,
        /// The sender waited on, if any.
        sender: Option<DomainId>,
    },
    /// No transfer with this ticket was sent by this source.
    #[error("{ticket} from {sender} is unknown: no transfer with it was sent to this domain")]
    UnknownTicket {
        /// The ticket.
        ticket: Ticket,
        /// The sending domain.
        sender: DomainId,
    },
    /// The transfer with this ticket was already received.
    #[error("{ticket} from {sender} was already received; tickets are good for one receive")]
    TicketReused {
        /// The ticket.
        ticket: Ticket,
        /// The sending domain.
        sender: DomainId,
    },
    /// A transfer plan no longer matches the ledger (something changed between plan and
    /// commit).
    #[error("the transfer plan is stale: the ledger changed after it was made; plan again")]
    StalePlan,
    /// A transfer announced on a direct ring that the ledger cannot honour by reference alone
    /// (the sender's library broke the direct-ring rules).
    #[error("direct transfer of {agg} refused: {reason}")]
    DirectRefused {
        /// The sender's aggregate.
        agg: AggId,
        /// Why.
        reason: &'static str,
    },
    /// A memory access outside the domain's mappings.
    #[error("memory fault: domain {domain} has no {needed} mapping of buffer {buffer}")]
    Fault {
        /// The domain.
        domain: DomainId,
        /// The buffer touched.
        buffer: BufferId,
        /// The access attempted.
        needed: Rights,
    },
}

fn list(aggs: &[AggId]) -> String {
    aggs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn from_hint(sender: Option<DomainId>) -> String {
    sender.map(|s| format!(" from {s}")).unwrap_or_default()
}

/// The stable classification of an [`Error`], compared by scenarios and carried on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// See [`Error::UnknownDomain`].
    UnknownDomain,
    /// See [`Error::UnknownAggregate`].
    UnknownAggregate,
    /// See [`Error::OutOfRange`].
    OutOfRange,
    /// See [`Error::InsufficientRights`].
    InsufficientRights,
    /// See [`Error::TooLarge`].
    TooLarge,
    /// See [`Error::TooFragmented`].
    TooFragmented,
    /// See [`Error::RightsUpgrade`].
    RightsUpgrade,
    /// See [`Error::SelfTransfer`].
    SelfTransfer,
    /// See [`Error::RelatedAggregates`].
    RelatedAggregates,
    /// See [`Error::NothingPending`].
    NothingPending,
    /// See [`Error::UnknownTicket`].
    UnknownTicket,
    /// See [`Error::TicketReused`].
    TicketReused,
    /// See [`Error::StalePlan`].
    StalePlan,
    /// See [`Error::Fault`].
    Fault,
    /// No domain is registered under the name (raised by the block manager's name service).
    UnknownName,
    /// Another domain already registered the name.
    NameTaken,
    /// The block manager could not carry out the request: it ran out of memory or
    /// descriptors, it is shutting down, or the connection to it was lost.
    Unavailable,
    /// A message broke the wire protocol (malformed, unexpected, or over a limit).
    Protocol,
    /// The domain (or its user) is at one of its quotas — bytes or buffers it made that are
    /// still alive, transfers it sent that wait for their receivers, connections of one uid —
    /// and must free or wait for some before making more.
    OverQuota,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 19] = [
        ErrorKind::UnknownDomain,
        ErrorKind::UnknownAggregate,
        ErrorKind::OutOfRange,
        ErrorKind::TooLarge,
        ErrorKind::TooFragmented,
        ErrorKind::InsufficientRights,
        ErrorKind::RightsUpgrade,
        ErrorKind::SelfTransfer,
        ErrorKind::RelatedAggregates,
        ErrorKind::NothingPending,
        ErrorKind::UnknownTicket,
        ErrorKind::TicketReused,
        ErrorKind::StalePlan,
        ErrorKind::Fault,
        ErrorKind::UnknownName,
        ErrorKind::NameTaken,
        ErrorKind::Unavailable,
        ErrorKind::Protocol,
        ErrorKind::OverQuota,
    ];

    /// The stable snake-case name used in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::UnknownDomain => "unknown_domain",
            ErrorKind::UnknownAggregate => "unknown_aggregate",
            ErrorKind::OutOfRange => "out_of_range",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::TooFragmented => "too_fragmented",
            ErrorKind::InsufficientRights => "insufficient_rights",
            ErrorKind::RightsUpgrade => "rights_upgrade",
            ErrorKind::SelfTransfer => "self_transfer",
            ErrorKind::RelatedAggregates => "related_aggregates",
            ErrorKind::NothingPending => "nothing_pending",
            ErrorKind::UnknownTicket => "unknown_ticket",
            ErrorKind::TicketReused => "ticket_reused",
            ErrorKind::StalePlan => "stale_plan",
            ErrorKind::Fault => "fault",
            ErrorKind::UnknownName => "unknown_name",
            ErrorKind::NameTaken => "name_taken",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Protocol => "protocol",
            ErrorKind::OverQuota => "over_quota",
        }
    }

    /// Parses a name made by [`ErrorKind::name`].
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Error {
    /// The stable classification of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::UnknownDomain { .. } => ErrorKind::UnknownDomain,
            Error::UnknownAggregate { .. } => ErrorKind::UnknownAggregate,
            Error::OutOfRange { .. } => ErrorKind::OutOfRange,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::TooFragmented { .. } => ErrorKind::TooFragmented,
            Error::InsufficientRights { .. } => ErrorKind::InsufficientRights,
            Error::RightsUpgrade { .. } => ErrorKind::RightsUpgrade,
            Error::SelfTransfer { .. } => ErrorKind::SelfTransfer,
            Error::RelatedAggregates { .. } => ErrorKind::RelatedAggregates,
            Error::NothingPending { .. } => ErrorKind::NothingPending,
            Error::UnknownTicket { .. } => ErrorKind::UnknownTicket,
            Error::TicketReused { .. } => ErrorKind::TicketReused,
            Error::StalePlan => ErrorKind::StalePlan,
            Error::DirectRefused { .. } => ErrorKind::Protocol,
            Error::Fault { .. } => ErrorKind::Fault,
        }
    }
}

/// The result type of the aggregate API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_by_name() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(k.name()), Some(k));
        }
    }

    #[test]
    fn messages_say_what_was_wrong() {
        let e = Error::InsufficientRights {
            agg: AggId(3),
            op: Operation::Transfer(Mode::Move),
            needed: Rights::ReadWrite,
            held: Rights::None,
        };
        let msg = e.to_string();
        assert!(msg.contains("transfer by move"), "{msg}");
        assert!(msg.contains("read/write"), "{msg}");
        assert!(msg.contains("moved away"), "{msg}");
    }
}
