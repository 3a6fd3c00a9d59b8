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
    /// Interned resource (0 = none).
    pub(crate) resource: u32,
    pub(crate) sequence: u64,
    /// Event time in microseconds since the epoch.
    pub(crate) time_micros: i64,
    /// Hash of the correlation id (0 = none); matches are confirmed on the record itself.
    pub(crate) correlation: u64,
    pub(crate) event_type: u8,
    /// [`NO_OUTCOME`], [`SUCCEEDED`] or [`FAILED`].
    pub(crate) outcome: u8,
}

/// [`Entry::outcome`] of an event without an `outcome`.
const NO_OUTCOME: u8 = 0;
/// [`Entry::outcome`] of a success.
const SUCCEEDED: u8 = 1;
/// [`Entry::outcome`] of a failure.
const FAILED: u8 = 2;

/// Which outcomes a filter selects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum OutcomeMatch {
    /// Every event, also those without an outcome.
    #[default]
    Any,
    /// `outcome.success` is true.
    Success,
    /// An outcome whose `success` is false.
    Failure,
}

impl OutcomeMatch {
    fn accepts(self, outcome: u8) -> bool {
        match self {
            Self::Any => true,
            Self::Success => outcome == SUCCEEDED,
            Self::Failure => outcome == FAILED,
        }
    }
}

fn outcome_of(event: &AuditEvent) -> u8 {
    match &event.outcome {
        None => NO_OUTCOME,
        Some(o) if o.success => SUCCEEDED,
        Some(_) => FAILED,
    }
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
    /// Exact resource.
    pub resource: Option<String>,
    /// Inclusive lower bound, microseconds.
    pub since_micros: Option<i64>,
    /// Exclusive upper bound, microseconds.
    pub until_micros: Option<i64>,
    /// Outcomes selected.
    pub outcome: OutcomeMatch,
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

    /// Whether `event` passes every filter (exact: the index only holds hashes of
    /// correlation ids, so candidates it finds are confirmed with this).
    #[must_use]
    pub fn matches(&self, event: &AuditEvent) -> bool {
        let user = event.actor.as_ref().map_or("", |a| a.user_id.as_str());
        let time = event_micros(event);
        (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
            && self.user_id.as_deref().is_none_or(|u| u == user)
            && self
                .correlation_id
                .as_deref()
                .is_none_or(|c| c == event.correlation_id)
            && self.resource.as_deref().is_none_or(|r| r == event.resource)
            && self.since_micros.is_none_or(|s| time >= s)
            && self.until_micros.is_none_or(|u| time < u)
            && self.outcome.accepts(outcome_of(event))
    }
}

impl Hash for Filter {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.event_types.hash(state);
        self.user_id.hash(state);
        self.correlation_id.hash(state);
        self.resource.hash(state);
        self.since_micros.hash(state);
        self.until_micros.hash(state);
        self.outcome.hash(state);
    }
}

/// Stable 64-bit hash of a non-empty string (0 reserved for "none").
fn string_hash(s: &str) -> u64 {
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

/// Strings stored once, numbered from 1 (0 = none), so entries stay fixed-size.
#[derive(Debug, Default)]
struct Interned(HashMap<Box<str>, u32>);

impl Interned {
    fn intern(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if let Some(&n) = self.0.get(s) {
            return n;
        }
        let n = u32::try_from(self.0.len() + 1).unwrap_or(u32::MAX);
        self.0.insert(s.into(), n);
        n
    }

    /// `Ok(None)` for no filter, `Err(())` for a string never stored (matches nothing).
    fn lookup(&self, s: Option<&str>) -> Result<Option<u32>, ()> {
        match s {
            None => Ok(None),
            Some(s) => self.0.get(s).map(|&n| Some(n)).ok_or(()),
        }
    }
}

/// A filter resolved against the index.
struct Matcher {
    types: Vec<u8>,
    user: Option<u32>,
    resource: Option<u32>,
    correlation: Option<u64>,
    since: Option<i64>,
    until: Option<i64>,
    outcome: OutcomeMatch,
}

impl Matcher {
    fn matches(&self, e: &Entry) -> bool {
        (self.types.is_empty() || self.types.contains(&e.event_type))
            && self.user.is_none_or(|u| e.user == u)
            && self.resource.is_none_or(|r| e.resource == r)
            && self.correlation.is_none_or(|c| e.correlation == c)
            && self.since.is_none_or(|s| e.time_micros >= s)
            && self.until.is_none_or(|u| e.time_micros < u)
            && self.outcome.accepts(e.outcome)
    }
}

/// The index, ids for idempotency, and interned user ids and resources.
#[derive(Debug, Default)]
pub(crate) struct Index {
    entries: Vec<Entry>,
    users: Interned,
    resources: Interned,
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

    /// Position of the first entry with a sequence of `sequence` or above.
    pub(crate) fn position_of(&self, sequence: u64) -> usize {
        self.entries.partition_point(|e| e.sequence < sequence)
    }

    /// Adds a committed record.
    pub(crate) fn push(&mut self, offset: u64, len: u32, sequence: u64, event: &AuditEvent) {
        let user = self
            .users
            .intern(event.actor.as_ref().map_or("", |a| a.user_id.as_str()));
        let resource = self.resources.intern(&event.resource);
        if let Ok(id) = uuid::Uuid::try_parse(&event.event_id) {
            self.ids.insert(id.as_u128());
        }
        self.entries.push(Entry {
            offset,
            len,
            user,
            resource,
            sequence,
            time_micros: event_micros(event),
            correlation: string_hash(&event.correlation_id),
            event_type: u8::try_from(event.event_type).unwrap_or(0),
            outcome: outcome_of(event),
        });
    }

    /// `None` when nothing can match (an unknown user or resource: no need to scan).
    fn matcher(&self, filter: &Filter) -> Option<Matcher> {
        Some(Matcher {
            types: filter
                .event_types
                .iter()
                .filter_map(|t| u8::try_from(*t).ok())
                .collect(),
            user: self.users.lookup(filter.user_id.as_deref()).ok()?,
            resource: self.resources.lookup(filter.resource.as_deref()).ok()?,
            correlation: filter.correlation_id.as_deref().map(string_hash),
            since: filter.since_micros,
            until: filter.until_micros,
            outcome: filter.outcome,
        })
    }

    /// Positions of up to `limit` entries matching `filter` below position `before`, newest
    /// first; also whether another match lies below the last one (so a next page is never
    /// empty).
    pub(crate) fn scan_back(
        &self,
        filter: &Filter,
        before: usize,
        limit: usize,
    ) -> (Vec<usize>, bool) {
        let Some(matcher) = self.matcher(filter) else {
            return (Vec::new(), false);
        };
        let before = before.min(self.entries.len());
        let mut found = Vec::with_capacity(limit.min(1024));
        for (position, e) in self.entries[..before].iter().enumerate().rev() {
            if matcher.matches(e) {
                if found.len() == limit {
                    return (found, true);
                }
                found.push(position);
            }
        }
        (found, false)
    }

    /// Positions of up to `limit` entries matching `filter` from position `from` on, oldest
    /// first; also the position after the last entry examined (the end of the index when the
    /// scan reached it).
    pub(crate) fn scan_forward(
        &self,
        filter: &Filter,
        from: usize,
        limit: usize,
    ) -> (Vec<usize>, usize) {
        let Some(matcher) = self.matcher(filter) else {
            return (Vec::new(), self.entries.len());
        };
        let mut found = Vec::with_capacity(limit.min(1024));
        for (position, e) in self.entries.iter().enumerate().skip(from) {
            if matcher.matches(e) {
                found.push(position);
                if found.len() == limit {
                    return (found, position + 1);
                }
            }
        }
        (found, self.entries.len())
    }
}

/// Encodes a cursor (the next page holds sequences below `before`) and the filter
/// fingerprint as an opaque token. A sequence, unlike a position, names the same place
/// whatever was committed since.
pub(crate) fn page_token(before: u64, fingerprint: u32) -> String {
    format!("{before:016x}{fingerprint:08x}")
}

/// Decodes a token made by [`page_token`] for the same filters.
pub(crate) fn parse_page_token(token: &str, fingerprint: u32) -> Option<u64> {
    if token.len() != 24 || !token.is_ascii() {
        return None;
    }
    let before = u64::from_str_radix(&token[..16], 16).ok()?;
    let print = u32::from_str_radix(&token[16..], 16).ok()?;
    (print == fingerprint && before > 0).then_some(before)
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
    fn filters_combine_and_pages_run_newest_first() {
        let mut index = Index::default();
        for i in 0..10u64 {
            let user = if i % 2 == 0 { "alice" } else { "bob" };
            let mut e = event(user, 1 + (i % 3) as i32, i % 4 != 0, 1000 + i as i64);
            e.resource = format!("/r{}", i % 2);
            if i == 9 {
                e.outcome = None;
            }
            index.push(i * 100, 100, i + 1, &e);
        }
        let alice = Filter {
            user_id: Some("alice".into()),
            ..Filter::default()
        };
        let (page, more) = index.scan_back(&alice, usize::MAX, 3);
        assert_eq!((page.as_slice(), more), ([8, 6, 4].as_slice(), true));
        let (page, more) = index.scan_back(&alice, 4, 3);
        assert_eq!((page, more), (vec![2, 0], false));
        // Exactly a page left: no next page.
        assert_eq!(index.scan_back(&alice, 4, 2), (vec![2, 0], false));
        let failures = Filter {
            outcome: OutcomeMatch::Failure,
            ..Filter::default()
        };
        assert_eq!(index.scan_back(&failures, 10, 100).0, vec![8, 4, 0]);
        let successes = Filter {
            outcome: OutcomeMatch::Success,
            ..Filter::default()
        };
        // Sequence 10 has no outcome: neither a success nor a failure.
        assert_eq!(
            index.scan_back(&successes, 10, 100).0,
            vec![7, 6, 5, 3, 2, 1]
        );
        let resource = Filter {
            resource: Some("/r1".into()),
            outcome: OutcomeMatch::Success,
            ..Filter::default()
        };
        assert_eq!(index.scan_back(&resource, 10, 100).0, vec![7, 5, 3, 1]);
        let unknown = Filter {
            resource: Some("/r".into()),
            ..Filter::default()
        };
        assert_eq!(index.scan_back(&unknown, 10, 100), (vec![], false));
        let window = Filter {
            since_micros: Some(1_002_000_000),
            until_micros: Some(1_004_000_000),
            ..Filter::default()
        };
        assert_eq!(index.scan_back(&window, 10, 100).0, vec![3, 2]);
        let corr = Filter {
            correlation_id: Some("c-1007".into()),
            ..Filter::default()
        };
        assert_eq!(index.scan_back(&corr, 10, 100).0, vec![7]);
        let nobody = Filter {
            user_id: Some("mallory".into()),
            ..Filter::default()
        };
        assert_eq!(index.scan_back(&nobody, 10, 100).0, Vec::<usize>::new());
        // Forward (tail replay): stops after `limit` matches, says where.
        assert_eq!(index.scan_forward(&alice, 1, 2), (vec![2, 4], 5));
        assert_eq!(index.scan_forward(&alice, 5, 10), (vec![6, 8], 10));
        let token = page_token(7, alice.fingerprint());
        assert_eq!(parse_page_token(&token, alice.fingerprint()), Some(7));
        assert_eq!(parse_page_token(&token, failures.fingerprint()), None);
        assert_eq!(parse_page_token(&page_token(0, 0), 0), None);
        assert_eq!(parse_page_token("zz", 0), None);
    }

    #[test]
    fn exact_matching_agrees_with_the_index() {
        let mut e = event("alice", 4, false, 1000);
        e.resource = "/a".into();
        let all = Filter {
            event_types: vec![4],
            user_id: Some("alice".into()),
            correlation_id: Some("c-1000".into()),
            resource: Some("/a".into()),
            since_micros: Some(1_000_000_000),
            until_micros: Some(1_000_000_001),
            outcome: OutcomeMatch::Failure,
        };
        assert!(all.matches(&e));
        for other in [
            Filter {
                event_types: vec![5],
                ..all.clone()
            },
            Filter {
                user_id: Some("bob".into()),
                ..all.clone()
            },
            Filter {
                correlation_id: Some("c-1001".into()),
                ..all.clone()
            },
            Filter {
                resource: Some("/b".into()),
                ..all.clone()
            },
            Filter {
                until_micros: Some(1_000_000_000),
                ..all.clone()
            },
            Filter {
                outcome: OutcomeMatch::Success,
                ..all.clone()
            },
        ] {
            assert!(!other.matches(&e), "{other:?}");
        }
    }
}
