//! Compact JWS with Ed25519, and nothing else.
//!
//! Hand-written on purpose: the format is three base64url parts, and accepting exactly one
//! algorithm by construction removes the whole class of `alg` confusion attacks (`none`,
//! HS256 keyed with a public key, RS/ES tokens) instead of configuring a general library not
//! to fall for them. The cryptography is `ed25519-dalek`'s (strict verification: rejects
//! non-canonical and small-order signatures and keys).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::claims::{ALGORITHM, Header, TOKEN_TYPE};

/// Longest token accepted before any parsing (a real one is well under 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Why a token was rejected before its claims were looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not three base64url parts, bad JSON, or too long.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is not `EdDSA`.
    #[error("token algorithm `{0}` is not accepted (only EdDSA)")]
    Algorithm(String),
    /// `typ` is not `at+jwt`.
    #[error("token type `{0}` is not accepted (only at+jwt)")]
    Type(String),
    /// The signature does not verify with the key named by `kid`.
    #[error("token signature is invalid")]
    Signature,
}

/// Signs `claims` as a compact JWS with `key`, naming it `kid`.
///
/// # Panics
/// Never: serialising plain structs to JSON cannot fail.
#[must_use]
pub fn sign<C: Serialize>(claims: &C, kid: &str, key: &SigningKey) -> String {
    let header = Header {
        alg: ALGORITHM.into(),
        typ: TOKEN_TYPE.into(),
        kid: kid.into(),
    };
    let header = serde_json::to_vec(&header).expect("header serialises");
    let payload = serde_json::to_vec(claims).expect("claims serialise");
    let mut token = String::with_capacity(256);
    URL_SAFE_NO_PAD.encode_string(header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = key.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
    token
}

/// A token split and its header checked, signature not yet verified.
#[derive(Debug)]
pub struct Unverified<'a> {
    /// The checked header.
    pub header: Header,
    signing_input: &'a str,
    payload: &'a str,
    signature: Signature,
}

/// Splits `token` and checks its header (`alg`, `typ`, `kid` present). Cheap: no crypto.
///
/// # Errors
/// See [`JwsError`].
pub fn parse(token: &str) -> Result<Unverified<'_>, JwsError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwsError::Malformed("longer than 4096 bytes"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed("expected three dot-separated parts"));
    };
    let header_json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwsError::Malformed("header is not base64url"))?;
    #[derive(serde::Deserialize)]
    struct RawHeader {
        alg: Option<String>,
        typ: Option<String>,
        kid: Option<String>,
    }
    let raw: RawHeader = serde_json::from_slice(&header_json)
        .map_err(|_| JwsError::Malformed("header is not a JSON object"))?;
    let alg = raw.alg.unwrap_or_default();
    if alg != ALGORITHM {
        return Err(JwsError::Algorithm(alg));
    }
    let typ = raw.typ.unwrap_or_default();
    if typ != TOKEN_TYPE {
        return Err(JwsError::Type(typ));
    }
    let kid = match raw.kid {
        Some(kid) if !kid.is_empty() && kid.len() <= 128 => kid,
        _ => return Err(JwsError::Malformed("header has no kid")),
    };
    let signature_bytes = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| JwsError::Malformed("signature is not base64url"))?;
    let signature = Signature::from_slice(&signature_bytes)
        .map_err(|_| JwsError::Malformed("signature is not 64 bytes"))?;
    let signing_input_len = header.len() + 1 + payload.len();
    Ok(Unverified {
        header: Header { alg, typ, kid },
        signing_input: &token[..signing_input_len],
        payload,
        signature,
    })
}

impl Unverified<'_> {
    /// Verifies the signature with `key` and decodes the claims.
    ///
    /// # Errors
    /// [`JwsError::Signature`] for a bad signature, [`JwsError::Malformed`] for bad claims JSON.
    pub fn verify<C: DeserializeOwned>(&self, key: &VerifyingKey) -> Result<C, JwsError> {
        key.verify_strict(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| JwsError::Signature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(self.payload)
            .map_err(|_| JwsError::Malformed("payload is not base64url"))?;
        serde_json::from_slice(&payload)
            .map_err(|_| JwsError::Malformed("claims are missing or have the wrong type"))
    }
}

/// Base64url (no padding) of a public key, as in a JWK's `x`.
#[must_use]
pub fn encode_public_key(key: &VerifyingKey) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

/// Parses a JWK `x` value.
///
/// # Errors
/// When it is not base64url of a valid 32-byte Ed25519 point.
pub fn decode_public_key(x: &str) -> Result<VerifyingKey, JwsError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(x)
        .map_err(|_| JwsError::Malformed("jwk x is not base64url"))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| JwsError::Malformed("jwk x is not 32 bytes"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| JwsError::Malformed("jwk x is not a valid key"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Small {
        sub: String,
        exp: i64,
    }

    fn new_key() -> SigningKey {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).unwrap();
        SigningKey::from_bytes(&seed)
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let key = new_key();
        let claims = Small {
            sub: "u1".into(),
            exp: 5,
        };
        let token = sign(&claims, "k1", &key);
        let parsed = parse(&token).unwrap();
        assert_eq!(parsed.header.kid, "k1");
        assert_eq!(
            parsed.verify::<Small>(&key.verifying_key()).unwrap(),
            claims
        );
        let other = new_key();
        assert_eq!(
            parsed.verify::<Small>(&other.verifying_key()),
            Err(JwsError::Signature)
        );
    }

    #[test]
    fn wrong_algorithms_and_shapes_are_rejected_before_crypto() {
        let enc = |v: &str| URL_SAFE_NO_PAD.encode(v);
        let body = enc(r#"{"sub":"u1","exp":5}"#);
        for (header, expected) in [
            (
                r#"{"alg":"none","typ":"at+jwt","kid":"k"}"#,
                "algorithm `none`",
            ),
            (
                r#"{"alg":"HS256","typ":"at+jwt","kid":"k"}"#,
                "algorithm `HS256`",
            ),
            (
                r#"{"alg":"RS256","typ":"at+jwt","kid":"k"}"#,
                "algorithm `RS256`",
            ),
            (r#"{"alg":"EdDSA","typ":"JWT","kid":"k"}"#, "type `JWT`"),
            (r#"{"alg":"EdDSA","typ":"at+jwt"}"#, "no kid"),
            ("not json", "not a JSON object"),
        ] {
            let token = format!(
                "{}.{body}.{}",
                enc(header),
                URL_SAFE_NO_PAD.encode([0u8; 64])
            );
            let err = parse(&token).unwrap_err().to_string();
            assert!(err.contains(expected), "{header}: {err}");
        }
        for bad in ["", "a.b", "a.b.c.d", "%%%.b.c"] {
            assert!(matches!(parse(bad), Err(JwsError::Malformed(_))), "{bad}");
        }
        assert!(matches!(
            parse(&"a".repeat(5000)),
            Err(JwsError::Malformed(_))
        ));
    }
}
