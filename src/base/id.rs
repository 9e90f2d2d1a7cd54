//! A connection's identity.

use std::fmt;

/// A connection's identity, unique for the lifetime of a [`Server`](crate::Server).
///
/// Ids are never reused, even when a connection's slab slot is: that is what
/// lets a stale [`ConnHandle`](crate::ConnHandle) notice that its connection
/// is gone. The id is the slot's *generation*.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u64);

impl ConnId {
    /// The id as a number, for logs and maps.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}
