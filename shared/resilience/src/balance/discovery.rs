//! Which connections to open and close when the resolved addresses change (pure logic).

use std::collections::BTreeSet;
use std::net::SocketAddr;

/// One connection: the endpoint's address and which of its connections (`0..per_endpoint`).
pub type ConnectionKey = (SocketAddr, usize);

/// A change to the balanced set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delta {
    /// Open this connection.
    Insert(ConnectionKey),
    /// Close this connection (calls in flight on it finish first).
    Remove(ConnectionKey),
}

/// The endpoints the balancer currently has.
#[derive(Debug)]
pub(crate) struct Membership {
    current: BTreeSet<SocketAddr>,
    per_endpoint: usize,
}

impl Membership {
    pub(crate) fn new(per_endpoint: usize) -> Self {
        Self {
            current: BTreeSet::new(),
            per_endpoint: per_endpoint.max(1),
        }
    }

    /// The endpoints now in the set.
    pub(crate) fn endpoints(&self) -> Vec<SocketAddr> {
        self.current.iter().copied().collect()
    }

    /// The changes that take the set to `resolved`. An empty answer changes nothing.
    ///
    /// // why keep the last set on an empty answer: a DNS hiccup, or a rollout with no ready
    /// pod for a moment, must not remove every connection (calls would then wait for an
    /// endpoint instead of trying the last known ones and failing fast into the breaker).
    pub(crate) fn update(&mut self, resolved: &[SocketAddr]) -> Vec<Delta> {
        if resolved.is_empty() {
            return Vec::new();
        }
        let next: BTreeSet<SocketAddr> = resolved.iter().copied().collect();
        let mut deltas = Vec::new();
        for gone in self.current.difference(&next) {
            deltas.extend((0..self.per_endpoint).map(|i| Delta::Remove((*gone, i))));
        }
        for new in next.difference(&self.current) {
            deltas.extend((0..self.per_endpoint).map(|i| Delta::Insert((*new, i))));
        }
        self.current = next;
        deltas
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 50053))
    }

    #[test]
    fn new_endpoints_get_every_connection_and_gone_ones_lose_them() {
        let mut m = Membership::new(2);
        let first = m.update(&[addr(1), addr(2)]);
        assert_eq!(
            first,
            vec![
                Delta::Insert((addr(1), 0)),
                Delta::Insert((addr(1), 1)),
                Delta::Insert((addr(2), 0)),
                Delta::Insert((addr(2), 1)),
            ]
        );
        // Same answer in another order: nothing to do.
        assert!(m.update(&[addr(2), addr(1), addr(2)]).is_empty());
        let moved = m.update(&[addr(2), addr(3)]);
        assert_eq!(
            moved,
            vec![
                Delta::Remove((addr(1), 0)),
                Delta::Remove((addr(1), 1)),
                Delta::Insert((addr(3), 0)),
                Delta::Insert((addr(3), 1)),
            ]
        );
        assert_eq!(m.endpoints(), vec![addr(2), addr(3)]);
    }

    #[test]
    fn an_empty_answer_keeps_the_last_endpoints() {
        let mut m = Membership::new(1);
        m.update(&[addr(1)]);
        assert!(m.update(&[]).is_empty());
        assert_eq!(m.endpoints(), vec![addr(1)]);
    }

    #[test]
    fn zero_connections_means_one() {
        let mut m = Membership::new(0);
        assert_eq!(m.update(&[addr(1)]), vec![Delta::Insert((addr(1), 0))]);
    }
}
