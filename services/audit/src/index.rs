//! The compact in-memory index: one fixed-size entry per record (file offset plus the fields
//! queries filter on), rebuilt from the log at start-up. A filtered query scans entries in
//! memory and reads only the matching records from disk, so it costs a few milliseconds even
//! on a million events.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use umcp_proto::audit::v1::AuditEvent;

/// One record in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) offset: u64,
    pub(crate) len: u32,
    /// Interned user id (0 = none).
    pub(crate) user: u32,
    pub(crate) sequence: u64,
    /// Event time in microseconds since the epoch.
    pub(crate) time_micros: i64,
    /// Hash of the correlation id (0 = none); matches are confirmed on the record itself.
    pub(crate) correlation: u64,
    pub(crate) event_type: u8,
    pub(crate) failed: bool,
}

/// A query's filters in index terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Event type numbers; empty = all.
    pub event_types: Vec<i32>,
    /// Exact actor user id.
    pub user_id: Option<String>,
    /// Exact correlation id.
    pub correlation_id: Option<String>,
    /// Inclusive lower bound, microseconds.
    pub since_micros: Option<i64>,
    /// Exclusive upper bound, microseconds.
    pub until_micros: Option<i64>,
    /// Only failed outcomes.
    pub failures_only: bool,
}

impl Filter {
    /// A fingerprint bound into page tokens, so a token cannot be replayed with other filters.
    pub(crate) fn fingerprint(&self) -> u32 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        let full = h.finish();
        // Folding keeps the token short; collisions only mean a mismatched token is accepted.
        (full ^ (full >> 32)) as u32
    }
}

impl Hash for Filter {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.event_types.hash(state);
        self.user_id.hash(state);
        self.correlation_id.hash(state);
        self.since_micros.hash(state);
        self.until_micros.hash(state);
        self.failures_only.hash(state);
    }
}

/// Stable 64-bit hash of a non-empty string (0 reserved for "none").
pub(crate) fn string_hash(s: &str) -> u64 {
    if s.is_empty() {
        return 0;
    }
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish().max(1)
}

/// Microseconds of an event's timestamp.
pub(crate) fn event_micros(event: &AuditEvent) -> i64 {
    event.timestamp.as_ref().map_or(0, |t| {
        t.seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(t.nanos / 1000))
    })
}

/// The index, ids for idempotency, and interned user ids.
#[derive(Debug, Default)]
pub(crate) struct Index {
    entries: Vec<Entry>,
    users: HashMap<Box<str>, u32>,
    ids: HashSet<u128>,
}

impl Index {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Last sequence in the index (0 when empty).
    pub(crate) fn head(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.sequence)
    }

    pub(crate) fn contains_id(&self, id: u128) -> bool {
        self.ids.contains(&id)
    }

    pub(crate) fn entry(&self, position: usize) -> Option<&Entry> {
        self.entries.get(position)
    }

    /// Position of the first entry with a sequence above `sequence` (entries are in sequence
    /// order in a sound log).
    pub(crate) fn position_after(&self, sequence: u64) -> usize {
        self.entries.partition_point(|e| e.sequence <= sequence)
    }

    /// Adds a committed record.
    pub(crate) fn push(&mut self, offset: u64, len: u32, sequence: u64, event: &AuditEvent) {
        let user = match event.actor.as_ref().map(|a| a.user_id.as_str()) {
            None | Some("") => 0,
            Some(user) => match self.users.get(user) {
                Some(&n) => n,
                None => {
                    let n = u32::try_from(self.users.len() + 1).unwrap_or(u32::MAX);
                    self.users.insert(user.into(), n);
                    n
                }
            },
        };
        if let Ok(id) = uuid::Uuid::try_parse(&event.event_id) {
            self.ids.insert(id.as_u128());
        }
        self.entries.push(Entry {
            offset,
            len,
            user,
            sequence,
            time_micros: event_micros(event),
            correlation: string_hash(&event.correlation_id),
            event_type: u8::try_from(event.event_type).unwrap_or(0),
            failed: event.outcome.as_ref().is_some_and(|o| !o.success),
        });
    }

    /// Positions of up to `limit` entries matching `filter`, starting at `from`; also returns
    /// the position to resume from when more may match.
    pub(crate) fn scan(
        &self,
        filter: &Filter,
        from: usize,
        limit: usize,
    ) -> (Vec<usize>, Option<usize>) {
        let user = match &filter.user_id {
            // An unknown user matches nothing; no need to scan.
            Some(u) => match self.users.get(u.as_str()) {
                Some(&n) => Some(n),
                None => return (Vec::new(), None),
            },
            None => None,
        };
        let correlation = filter.correlation_id.as_deref().map(string_hash);
        let types: Vec<u8> = filter
            .event_types
            .iter()
            .filter_map(|t| u8::try_from(*t).ok())
            .collect();
        let mut found = Vec::with_capacity(limit.min(1024));
        for (position, e) in self.entries.iter().enumerate().skip(from) {
            let matches = (types.is_empty() || types.contains(&e.event_type))
                && user.is_none_or(|u| e.user == u)
                && correlation.is_none_or(|c| e.correlation == c)
                && filter.since_micros.is_none_or(|s| e.time_micros >= s)
                && filter.until_micros.is_none_or(|u| e.time_micros < u)
                && (!filter.failures_only || e.failed);
            if matches {
                if found.len() == limit {
                    return (found, Some(position));
                }
                found.push(position);
            }
        }
        (found, None)
    }
}

/// Encodes a resume position and the filter fingerprint as an opaque token.
pub(crate) fn page_token(position: usize, fingerprint: u32) -> String {
    format!("{:016x}{fingerprint:08x}", position as u64)
}

/// Decodes a token made by [`page_token`] for the same filters.
pub(crate) fn parse_page_token(token: &str, fingerprint: u32) -> Option<usize> {
    if token.len() != 24 || !token.is_ascii() {
        return None;
    }
    let position = u64::from_str_radix(&token[..16], 16).ok()?;
    let print = u32::from_str_radix(&token[16..], 16).ok()?;
    (print == fingerprint).then_some(usize::try_from(position).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use umcp_proto::audit::v1::{Actor, Outcome};

    fn event(user: &str, kind: i32, ok: bool, secs: i64) -> AuditEvent {
        AuditEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            event_type: kind,
            actor: Some(Actor {
                user_id: user.into(),
                ..Actor::default()
            }),
            outcome: Some(Outcome {
                success: ok,
                ..Outcome::default()
            }),
            timestamp: Some(prost_types::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            correlation_id: format!("c-{secs}"),
            ..AuditEvent::default()
        }
    }

    #[test]
    fn filters_combine_and_paging_resumes() {
        let mut index = Index::default();
        for i in 0..10u64 {
            let user = if i % 2 == 0 { "alice" } else { "bob" };
            index.push(
                i * 100,
                100,
                i + 1,
                &event(user, 1 + (i % 3) as i32, i % 4 != 0, 1000 + i as i64),
            );
        }
        let alice = Filter {
            user_id: Some("alice".into()),
            ..Filter::default()
        };
        let (page, next) = index.scan(&alice, 0, 3);
        assert_eq!(page, vec![0, 2, 4]);
        let (page, next) = index.scan(&alice, next.unwrap(), 3);
        assert_eq!((page, next), (vec![6, 8], None));
        let failures = Filter {
            failures_only: true,
            ..Filter::default()
        };
        assert_eq!(index.scan(&failures, 0, 100).0, vec![0, 4, 8]);
        let window = Filter {
            since_micros: Some(1_002_000_000),
            until_micros: Some(1_004_000_000),
            ..Filter::default()
        };
        assert_eq!(index.scan(&window, 0, 100).0, vec![2, 3]);
        let corr = Filter {
            correlation_id: Some("c-1007".into()),
            ..Filter::default()
        };
        assert_eq!(index.scan(&corr, 0, 100).0, vec![7]);
        let nobody = Filter {
            user_id: Some("mallory".into()),
            ..Filter::default()
        };
        assert_eq!(index.scan(&nobody, 0, 100).0, Vec::<usize>::new());
        let token = page_token(6, alice.fingerprint());
        assert_eq!(parse_page_token(&token, alice.fingerprint()), Some(6));
        assert_eq!(parse_page_token(&token, failures.fingerprint()), None);
        assert_eq!(parse_page_token("zz", 0), None);
    }
}
