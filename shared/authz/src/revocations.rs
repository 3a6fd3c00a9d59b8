//! The set of revoked tokens, sessions and users every verifier consults on every request.
//!
//! Entries are forgotten once no token they apply to can still be valid (`expires_at`), so the
//! set stays as small as the number of revocations within one access-token lifetime.

use std::collections::HashMap;

use parking_lot::RwLock;

use crate::claims::Claims;

/// What a revocation applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// One token, by `jti`.
    Token,
    /// A session (refresh-token family), by `sid`.
    Session,
    /// Every token of a user issued at or before `revoked_at`, by `sub`.
    User,
}

/// One revocation. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// What it applies to.
    pub kind: Kind,
    /// The `jti`, `sid` or user id.
    pub id: String,
    /// When it was revoked.
    pub revoked_at: i64,
    /// When it can be forgotten.
    pub expires_at: i64,
}

/// One map per kind, `id` → `(revoked_at, expires_at)`, so lookups borrow the claim strings.
#[derive(Debug, Default)]
struct Entries {
    tokens: HashMap<String, (i64, i64)>,
    sessions: HashMap<String, (i64, i64)>,
    users: HashMap<String, (i64, i64)>,
}

impl Entries {
    fn map_mut(&mut self, kind: Kind) -> &mut HashMap<String, (i64, i64)> {
        match kind {
            Kind::Token => &mut self.tokens,
            Kind::Session => &mut self.sessions,
            Kind::User => &mut self.users,
        }
    }

    fn iter(&self) -> impl Iterator<Item = (Kind, &String, &(i64, i64))> {
        let tag = |kind: Kind| move |(id, times)| (kind, id, times);
        self.tokens
            .iter()
            .map(tag(Kind::Token))
            .chain(self.sessions.iter().map(tag(Kind::Session)))
            .chain(self.users.iter().map(tag(Kind::User)))
    }
}

/// Thread-safe revocation set.
#[derive(Debug, Default)]
pub struct RevocationSet {
    entries: RwLock<Entries>,
}

impl RevocationSet {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Why `claims` are revoked, or `None`.
    #[must_use]
    pub fn check(&self, claims: &Claims) -> Option<&'static str> {
        let entries = self.entries.read();
        if entries.tokens.contains_key(&claims.jti) {
            return Some("token was revoked");
        }
        if entries.sessions.contains_key(&claims.sid) {
            return Some("session was revoked");
        }
        if let Some(&(revoked_at, _)) = entries.users.get(&claims.sub)
            && claims.iat <= revoked_at
        {
            return Some("user was disabled or changed after the token was issued");
        }
        None
    }

    /// Adds revocations (newer `revoked_at` wins for users).
    pub fn extend(&self, revocations: impl IntoIterator<Item = Revocation>) {
        let mut entries = self.entries.write();
        for r in revocations {
            let slot = entries
                .map_mut(r.kind)
                .entry(r.id)
                .or_insert((r.revoked_at, r.expires_at));
            slot.0 = slot.0.max(r.revoked_at);
            slot.1 = slot.1.max(r.expires_at);
        }
    }

    /// Replaces the whole set (a snapshot from the auth service).
    pub fn replace(&self, revocations: impl IntoIterator<Item = Revocation>) {
        let fresh = Self::new();
        fresh.extend(revocations);
        *self.entries.write() = fresh.entries.into_inner();
    }

    /// Forgets entries whose `expires_at` is before `now`.
    pub fn purge(&self, now: i64) {
        let mut entries = self.entries.write();
        for kind in [Kind::Token, Kind::Session, Kind::User] {
            entries
                .map_mut(kind)
                .retain(|_, &mut (_, expires)| expires >= now);
        }
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        let entries = self.entries.read();
        entries.tokens.len() + entries.sessions.len() + entries.users.len()
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry (for snapshots).
    #[must_use]
    pub fn snapshot(&self) -> Vec<Revocation> {
        self.entries
            .read()
            .iter()
            .map(|(kind, id, &(revoked_at, expires_at))| Revocation {
                kind,
                id: id.clone(),
                revoked_at,
                expires_at,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::AuthMethod;

    fn claims(iat: i64) -> Claims {
        Claims {
            iss: "i".into(),
            aud: "a".into(),
            sub: "u1".into(),
            name: "n".into(),
            roles: vec![],
            jti: "t1".into(),
            sid: "s1".into(),
            amr: AuthMethod::Password,
            iat,
            nbf: iat,
            exp: iat + 900,
        }
    }

    fn rev(kind: Kind, id: &str, at: i64) -> Revocation {
        Revocation {
            kind,
            id: id.into(),
            revoked_at: at,
            expires_at: at + 1000,
        }
    }

    #[test]
    fn each_kind_revokes_what_it_names() {
        let set = RevocationSet::new();
        assert_eq!(set.check(&claims(100)), None);
        set.extend([rev(Kind::Token, "other", 100)]);
        assert_eq!(set.check(&claims(100)), None);
        set.extend([rev(Kind::Token, "t1", 100)]);
        assert!(set.check(&claims(100)).is_some());

        let set = RevocationSet::new();
        set.extend([rev(Kind::Session, "s1", 100)]);
        assert!(set.check(&claims(100)).is_some());

        let set = RevocationSet::new();
        set.extend([rev(Kind::User, "u1", 150)]);
        assert!(
            set.check(&claims(150)).is_some(),
            "issued at the revocation instant"
        );
        assert_eq!(
            set.check(&claims(151)),
            None,
            "issued after: a fresh login is fine"
        );
    }

    #[test]
    fn replace_and_purge() {
        let set = RevocationSet::new();
        set.extend([rev(Kind::Token, "a", 0), rev(Kind::Token, "b", 5000)]);
        set.purge(2000);
        assert_eq!(set.len(), 1);
        set.replace([rev(Kind::Session, "x", 1)]);
        assert_eq!(set.snapshot(), vec![rev(Kind::Session, "x", 1)]);
    }
}
