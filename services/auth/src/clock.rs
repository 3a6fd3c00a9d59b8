//! Wall-clock time as stored and put in tokens: Unix seconds or microseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (0 if the clock is before 1970).
#[must_use]
pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Seconds since the Unix epoch.
#[must_use]
pub(crate) fn now_secs() -> i64 {
    now_micros() / 1_000_000
}

/// A protobuf timestamp from Unix microseconds.
#[must_use]
pub(crate) fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        // rem_euclid keeps this in 0..1_000_000, so the product fits an i32.
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).unwrap_or(0),
    }
}

/// Unix microseconds of a protobuf timestamp; `None` when it is out of range or malformed.
#[must_use]
pub(crate) fn micros_of(ts: &prost_types::Timestamp) -> Option<i64> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    ts.seconds
        .checked_mul(1_000_000)?
        .checked_add(i64::from(ts.nanos / 1_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_reject_bad_nanos() {
        for micros in [0, 1, 1_700_000_000_123_456, -5] {
            assert_eq!(micros_of(&timestamp(micros)), Some(micros));
        }
        let bad = prost_types::Timestamp {
            seconds: 1,
            nanos: -1,
        };
        assert_eq!(micros_of(&bad), None);
        assert!(now_secs() > 1_700_000_000);
    }
}
