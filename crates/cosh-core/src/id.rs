//! Identifiers: newtypes for pools, domains, buffers, aggregates and tickets.
//!
//! Only these identifiers (never addresses) cross process or host boundaries. A [`DomainId`]
//! names the pool its domain lives in, so a client addresses a domain in another pool exactly
//! as a local one.

use std::fmt;

/// One distinct pool of physical memory, served by one block manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PoolId(pub u32);

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// A protection domain (on Linux, a process connected to a block manager).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId {
    /// The pool whose block manager serves this domain.
    pub pool: PoolId,
    /// The domain's number within its pool.
    pub index: u32,
}

impl DomainId {
    /// Packs the id into one integer (pool in the high half), as it travels on the wire.
    pub fn to_bits(self) -> u64 {
        (u64::from(self.pool.0) << 32) | u64::from(self.index)
    }

    /// Unpacks an id made by [`DomainId::to_bits`].
    pub fn from_bits(bits: u64) -> Self {
        DomainId {
            pool: PoolId((bits >> 32) as u32),
            index: bits as u32,
        }
    }
}

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.d{}", self.pool, self.index)
    }
}

/// A page-aligned region of one pool: the unit of mapping and protection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BufferId(pub u64);

impl fmt::Display for BufferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}", self.0)
    }
}

/// A handle on an aggregate held by one domain. Handles are never reused, so a stale handle
/// is always reported as unknown instead of naming some later aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AggId(pub u64);

impl fmt::Display for AggId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a{}", self.0)
    }
}

/// An opaque integer that travels in an RPC and names the aggregate sent with it, unique for
/// one (source, destination) pair. Tickets start at 1; 0 is never issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ticket {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_id_round_trips_through_bits() {
        let d = DomainId {
            pool: PoolId(7),
            index: u32::MAX,
        };
        assert_eq!(DomainId::from_bits(d.to_bits()), d);
        assert_eq!(d.to_string(), "p7.d4294967295");
    }
}
