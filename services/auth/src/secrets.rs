//! Random secrets from the operating system's CSPRNG.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::AuthError;

/// The base62 alphabet (letters and digits: double-click selects a whole key).
pub(crate) const BASE62: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `N` random bytes.
///
/// # Errors
/// [`AuthError::Unexpected`] when the OS has no randomness to give (never on Linux after boot).
pub(crate) fn bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| AuthError::Unexpected(format!("getrandom: {e}")))?;
    Ok(out)
}

/// 256 random bits, base64url without padding (43 characters).
///
/// # Errors
/// As for [`bytes`].
pub(crate) fn token() -> Result<String, AuthError> {
    Ok(URL_SAFE_NO_PAD.encode(bytes::<32>()?))
}

/// `len` uniformly random base62 characters (rejection sampling: no modulo bias).
///
/// # Errors
/// As for [`bytes`].
pub(crate) fn base62(len: usize) -> Result<String, AuthError> {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in bytes::<64>()? {
            // 248 = 4 × 62: bytes at or above it would favour the first characters.
            if b < 248 && out.len() < len {
                out.push(char::from(BASE62[usize::from(b % 62)]));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_uniqueness() {
        let t = token().unwrap();
        assert_eq!(t.len(), 43);
        assert_ne!(t, token().unwrap());
        let s = base62(40).unwrap();
        assert_eq!(s.len(), 40);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
