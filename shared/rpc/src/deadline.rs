//! The `grpc-timeout` header: at most 8 ASCII digits followed by a unit
//! (`H` hours, `M` minutes, `S` seconds, `m` millis, `u` micros, `n` nanos). Absent means
//! no deadline. A proxy forwards the *remaining* budget, not the original value.

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};

/// Header name.
pub const HEADER: &str = "grpc-timeout";

const MAX_DIGITS: usize = 8;

/// Parses a `grpc-timeout` value; `None` when malformed.
#[must_use]
pub fn parse(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Encodes `d` with the finest unit that fits in 8 digits (rounding up, so a forwarded budget
/// is never shorter than what remains by more than the unit's precision).
#[must_use]
pub fn encode(d: Duration) -> HeaderValue {
    const LIMIT: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let (value, unit) = units
        .iter()
        .map(|&(scale, unit)| (nanos.div_ceil(scale), unit))
        .find(|&(value, _)| value <= LIMIT)
        .unwrap_or((LIMIT, 'H'));
    // Digits and a unit letter are always a valid header value.
    HeaderValue::from_str(&format!("{value}{unit}")).unwrap_or(HeaderValue::from_static("1n"))
}

/// The deadline of a request received at `received`, from its headers; `Ok(None)` when it has
/// none, `Err(raw)` when the header is malformed.
///
/// # Errors
/// The malformed header value, for an `INVALID_ARGUMENT` answer.
pub fn from_headers(headers: &HeaderMap, received: Instant) -> Result<Option<Instant>, String> {
    match headers.get(HEADER) {
        None => Ok(None),
        Some(raw) => {
            let text = raw.to_str().unwrap_or_default();
            let timeout = parse(text).ok_or_else(|| text.to_owned())?;
            Ok(Some(received.checked_add(timeout).unwrap_or(received)))
        }
    }
}

/// The deadline of a tonic request, taken as received now (handlers start within microseconds
/// of receipt); `None` when it has none or the header is malformed (tonic itself rejects those).
#[must_use]
pub fn of<T>(request: &tonic::Request<T>) -> Option<Instant> {
    from_headers(request.metadata().as_ref(), Instant::now())
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_rejects_malformed_values() {
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "1x", "-1S", "1.5S", " 1S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encode_round_trips_without_shortening() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_micros(1500),
            Duration::from_millis(4_999),
            Duration::from_secs(30),
            Duration::from_secs(86_400 * 365),
        ] {
            let text = encode(d);
            let back = parse(text.to_str().unwrap()).unwrap();
            assert!(back >= d, "{d:?} -> {text:?} -> {back:?}");
            assert!(
                back - d < d / 1000 + Duration::from_nanos(1),
                "{d:?} -> {back:?}"
            );
        }
    }
}
