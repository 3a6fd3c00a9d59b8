//! Compact JWS with Ed25519 through `jsonwebtoken`, pinned to one algorithm.
//!
//! Every verification goes through [`validation`]: `EdDSA` is the only algorithm of the
//! `Validation` (so `none`, HS256 keyed with a public key and RS/ES tokens are refused before
//! any key is used), `iss`, `aud`, `exp`, `nbf` and `sub` are required, and [`parse`] checks
//! `typ` (which the crate leaves to us) and that a `kid` is present, so an unknown `kid` is
//! refused before any verification. Departure from the hand-written predecessor: the crate
//! verifies with ed25519-dalek's `verify`, not `verify_strict`; the difference (small-order
//! public keys) cannot be reached because keys only come from our own JWKS.

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::claims::{Header, TOKEN_TYPE};

/// Longest token accepted before any parsing (a real one is well under 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Longest `kid` accepted.
const MAX_KID_BYTES: usize = 128;

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
    /// A registered claim failed validation (`iss`, `aud`, `exp`, `nbf`, or one is missing).
    #[error("token claim check failed: {0}")]
    Claim(ClaimError),
}

/// Which registered claim failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// `iss` is not the accepted issuer.
    #[error("issuer")]
    Issuer,
    /// `aud` is not the accepted audience.
    #[error("audience")]
    Audience,
    /// Past `exp` (plus leeway).
    #[error("expired")]
    Expired,
    /// Before `nbf` (minus leeway).
    #[error("not yet valid")]
    NotYetValid,
    /// A required claim is absent or has the wrong type.
    #[error("a required claim is missing or malformed")]
    Missing,
}

/// Signs `claims` as a compact JWS with `key`, naming it `kid`.
///
/// # Panics
/// Never: an Ed25519 key always has a PKCS#8 encoding and plain structs serialise.
#[must_use]
pub fn sign<C: Serialize>(claims: &C, kid: &str, key: &SigningKey) -> String {
    let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
    header.typ = Some(TOKEN_TYPE.into());
    header.kid = Some(kid.into());
    let der = key.to_pkcs8_der().expect("ed25519 keys encode as pkcs8");
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes()))
        .expect("signing with a valid ed25519 key cannot fail")
}

/// The one `Validation` of the mesh: EdDSA only, issuer and audience pinned, `exp`, `nbf`,
/// `iss`, `aud` and `sub` required, `leeway_secs` of clock skew.
#[must_use]
pub fn validation(issuer: &str, audience: &str, leeway_secs: u64) -> Validation {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = leeway_secs;
    validation
}

/// A token whose header passed [`parse`]; signature and claims not yet verified.
#[derive(Debug)]
pub struct Unverified<'a> {
    /// The checked header.
    pub header: Header,
    token: &'a str,
}

/// Checks the size and header of `token` (`alg`, `typ`, `kid` present). Cheap: no crypto.
///
/// # Errors
/// See [`JwsError`].
pub fn parse(token: &str) -> Result<Unverified<'_>, JwsError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwsError::Malformed("longer than 4096 bytes"));
    }
    if token.split('.').count() != 3 {
        return Err(JwsError::Malformed("expected three dot-separated parts"));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        // An `alg` the crate does not even name (`none`, …) fails as JSON.
        ErrorKind::Json(_) => JwsError::Malformed("header is not a JOSE header with a known alg"),
        _ => JwsError::Malformed("header is not base64url JSON"),
    })?;
    if header.alg != Algorithm::EdDSA {
        return Err(JwsError::Algorithm(format!("{:?}", header.alg)));
    }
    let typ = header.typ.unwrap_or_default();
    if typ != TOKEN_TYPE {
        return Err(JwsError::Type(typ));
    }
    let kid = match header.kid {
        Some(kid) if !kid.is_empty() && kid.len() <= MAX_KID_BYTES => kid,
        _ => return Err(JwsError::Malformed("header has no kid")),
    };
    Ok(Unverified {
        header: Header {
            alg: "EdDSA".into(),
            typ,
            kid,
        },
        token,
    })
}

impl Unverified<'_> {
    /// Verifies the signature with `key` and the registered claims with `validation`, and
    /// decodes the claims.
    ///
    /// # Errors
    /// See [`JwsError`].
    pub fn verify<C: DeserializeOwned>(
        &self,
        key: &DecodingKey,
        validation: &Validation,
    ) -> Result<C, JwsError> {
        jsonwebtoken::decode::<C>(self.token, key, validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => JwsError::Signature,
                ErrorKind::InvalidAlgorithm => JwsError::Algorithm("a non-EdDSA key".into()),
                ErrorKind::InvalidIssuer => JwsError::Claim(ClaimError::Issuer),
                ErrorKind::InvalidAudience => JwsError::Claim(ClaimError::Audience),
                ErrorKind::ExpiredSignature => JwsError::Claim(ClaimError::Expired),
                ErrorKind::ImmatureSignature => JwsError::Claim(ClaimError::NotYetValid),
                ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
                    JwsError::Claim(ClaimError::Missing)
                }
                ErrorKind::Json(_) => {
                    JwsError::Malformed("claims are missing or have the wrong type")
                }
                _ => JwsError::Malformed("token is not base64url JSON parts"),
            })
    }
}

/// Base64url (no padding) of a public key, as in a JWK's `x`.
#[must_use]
pub fn encode_public_key(key: &ed25519_dalek::VerifyingKey) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_bytes())
}

/// The verification key of an Ed25519 public key.
#[must_use]
pub fn decoding_key(key: &ed25519_dalek::VerifyingKey) -> DecodingKey {
    DecodingKey::from_ed_der(key.as_bytes())
}

/// The verification key of a JWK `x` value, checked to be a valid Ed25519 point first.
///
/// # Errors
/// When it is not base64url of a valid 32-byte Ed25519 point.
pub fn decode_public_key(x: &str) -> Result<DecodingKey, JwsError> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(x)
        .map_err(|_| JwsError::Malformed("jwk x is not base64url"))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| JwsError::Malformed("jwk x is not 32 bytes"))?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| JwsError::Malformed("jwk x is not a valid key"))?;
    DecodingKey::from_ed_components(x).map_err(|_| JwsError::Malformed("jwk x is not base64url"))
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Small {
        iss: String,
        aud: String,
        sub: String,
        nbf: i64,
        exp: i64,
    }

    fn new_key() -> SigningKey {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).unwrap();
        SigningKey::from_bytes(&seed)
    }

    fn small(exp_offset: i64) -> Small {
        let now = crate::verifier::unix_now();
        Small {
            iss: "i".into(),
            aud: "a".into(),
            sub: "u1".into(),
            nbf: now - 10,
            exp: now + exp_offset,
        }
    }

    fn public(key: &SigningKey) -> DecodingKey {
        decode_public_key(&encode_public_key(&key.verifying_key())).unwrap()
    }

    #[test]
    fn sign_then_verify_round_trips_and_checks_claims() {
        let key = new_key();
        let v = validation("i", "a", 0);
        let token = sign(&small(60), "k1", &key);
        let parsed = parse(&token).unwrap();
        assert_eq!(parsed.header.kid, "k1");
        assert_eq!(parsed.header.typ, "at+jwt");
        assert_eq!(
            parsed.verify::<Small>(&public(&key), &v).unwrap(),
            small(60)
        );
        assert_eq!(
            parsed.verify::<Small>(&public(&new_key()), &v),
            Err(JwsError::Signature)
        );
        let expired = sign(&small(-60), "k1", &key);
        assert_eq!(
            parse(&expired).unwrap().verify::<Small>(&public(&key), &v),
            Err(JwsError::Claim(ClaimError::Expired))
        );
        let other_issuer = validation("someone-else", "a", 0);
        assert_eq!(
            parsed.verify::<Small>(&public(&key), &other_issuer),
            Err(JwsError::Claim(ClaimError::Issuer))
        );
    }

    #[test]
    fn wrong_algorithms_and_shapes_are_rejected_before_crypto() {
        let enc = |v: &str| URL_SAFE_NO_PAD.encode(v);
        let body = enc(r#"{"sub":"u1","exp":5}"#);
        for (header, expected) in [
            (r#"{"alg":"none","typ":"at+jwt","kid":"k"}"#, "known alg"),
            (
                r#"{"alg":"HS256","typ":"at+jwt","kid":"k"}"#,
                "algorithm `HS256`",
            ),
            (
                r#"{"alg":"RS256","typ":"at+jwt","kid":"k"}"#,
                "algorithm `RS256`",
            ),
            (
                r#"{"alg":"ES256","typ":"at+jwt","kid":"k"}"#,
                "algorithm `ES256`",
            ),
            (r#"{"alg":"EdDSA","typ":"JWT","kid":"k"}"#, "type `JWT`"),
            (r#"{"alg":"EdDSA","typ":"at+jwt"}"#, "no kid"),
            ("not json", "JOSE header"),
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
