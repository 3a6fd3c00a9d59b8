//! The verification keys (JWKS): fetched once per process, cached, refetched when a token names
//! an unknown `kid` (single-flight and rate-limited, so a flood of forged kids cannot turn into
//! a flood of fetches) and periodically (so retired keys disappear), with the last good set
//! kept while the auth service is unreachable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use jsonwebtoken::DecodingKey;
use parking_lot::RwLock;
use umcp_proto::auth::v1::Jwk;

use crate::claims::ALGORITHM;
use crate::jws;

/// Where public keys come from: the auth service over gRPC, or its own key ring in-process.
#[async_trait::async_trait]
pub trait KeySource: Send + Sync + 'static {
    /// The current JWKS.
    async fn fetch(&self) -> Result<Vec<Jwk>, KeySourceError>;
}

/// Why the keys could not be fetched.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot fetch signing keys: {0}")]
pub struct KeySourceError(pub String);

/// Why no key could be found for a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The `kid` is not published (also after a refetch).
    #[error("signing key `{0}` is unknown")]
    Unknown(String),
    /// No keys could ever be fetched.
    #[error("signing keys are unavailable")]
    Unavailable,
}

type KeyMap = HashMap<String, DecodingKey>;

/// Unknown-kid fetches allowed in a burst; one more is earned every `min_refetch`.
const UNKNOWN_KID_BURST: f64 = 3.0;

/// Fetch bookkeeping, behind the single-flight lock.
#[derive(Debug)]
struct FetchState {
    /// When the last fetch finished.
    last_done: Option<Instant>,
    /// Token bucket for fetches caused by unknown kids (periodic refreshes do not use it, so
    /// they can never starve the fetch that learns a freshly rotated key).
    tokens: f64,
    refilled: Instant,
}

/// See the module docs.
pub struct JwksCache {
    source: Arc<dyn KeySource>,
    keys: RwLock<Arc<KeyMap>>,
    /// Held while fetching: concurrent misses wait for one fetch instead of starting their own.
    fetching: tokio::sync::Mutex<FetchState>,
    min_refetch: Duration,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("kids", &self.keys.read().keys().collect::<Vec<_>>())
            .field("min_refetch", &self.min_refetch)
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    /// A cache over `source` that refetches at most once per `min_refetch` on unknown kids.
    #[must_use]
    pub fn new(source: Arc<dyn KeySource>, min_refetch: Duration) -> Self {
        Self {
            source,
            keys: RwLock::new(Arc::new(HashMap::new())),
            fetching: tokio::sync::Mutex::new(FetchState {
                last_done: None,
                tokens: UNKNOWN_KID_BURST,
                refilled: Instant::now(),
            }),
            min_refetch,
        }
    }

    /// Installs `jwks` as the current set unless it has no usable key (seeding from a copy
    /// before the first fetch; the next fetch replaces it).
    pub fn install(&self, jwks: &[Jwk]) -> usize {
        let parsed = parse_jwks(jwks);
        let count = parsed.len();
        if count > 0 {
            *self.keys.write() = Arc::new(parsed);
        }
        count
    }

    /// Whether `kid` is in the current set (no fetch).
    #[must_use]
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.read().contains_key(kid)
    }

    /// The key named `kid`, fetching once if it is not known yet.
    ///
    /// # Errors
    /// See [`KeyError`].
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, KeyError> {
        if let Some(key) = self.keys.read().get(kid) {
            return Ok(key.clone());
        }
        self.refetch(false).await;
        let keys = self.keys.read();
        match keys.get(kid) {
            Some(key) => Ok(key.clone()),
            None if keys.is_empty() => Err(KeyError::Unavailable),
            None => Err(KeyError::Unknown(kid.to_owned())),
        }
    }

    /// Fetches the set now. `force` (periodic refresh, a known rotation) skips the rate limit
    /// that bounds fetches caused by unknown kids. On failure the last good set stays.
    pub async fn refetch(&self, force: bool) {
        let started = Instant::now();
        let mut state = self.fetching.lock().await;
        // Another task fetched while we waited for the lock: its result is as fresh as ours.
        if state.last_done.is_some_and(|done| done >= started) {
            return;
        }
        if !force {
            let now = Instant::now();
            let earned = if self.min_refetch.is_zero() {
                UNKNOWN_KID_BURST
            } else {
                now.duration_since(state.refilled).as_secs_f64() / self.min_refetch.as_secs_f64()
            };
            state.tokens = (state.tokens + earned).min(UNKNOWN_KID_BURST);
            state.refilled = now;
            if state.tokens < 1.0 {
                return;
            }
            state.tokens -= 1.0;
        }
        let result = self.source.fetch().await;
        state.last_done = Some(Instant::now());
        match result {
            Ok(jwks) => {
                let parsed = parse_jwks(&jwks);
                if parsed.is_empty() {
                    tracing::warn!("jwks has no usable ed25519 key; keeping the last good set");
                    return;
                }
                *self.keys.write() = Arc::new(parsed);
            }
            Err(e) => tracing::warn!(error = %e, "jwks fetch failed; keeping the last good set"),
        }
    }
}

/// Keeps only keys usable for our one algorithm: the algorithm is pinned per key, so a key
/// published for something else can never verify an EdDSA token (and vice versa).
fn parse_jwks(jwks: &[Jwk]) -> KeyMap {
    jwks.iter()
        .filter(|k| k.kty == "OKP" && k.crv == "Ed25519" && k.alg == ALGORITHM && !k.kid.is_empty())
        .filter(|k| k.r#use.is_empty() || k.r#use == "sig")
        .filter_map(|k| match jws::decode_public_key(&k.x) {
            Ok(key) => Some((k.kid.clone(), key)),
            Err(e) => {
                tracing::warn!(kid = %k.kid, error = %e, "ignoring an invalid jwk");
                None
            }
        })
        .collect()
}

/// Builds the JWK of a public key (used by the auth service and by tests).
#[must_use]
pub fn jwk(kid: &str, key: &VerifyingKey) -> Jwk {
    Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        kid: kid.into(),
        x: jws::encode_public_key(key),
        alg: ALGORITHM.into(),
        r#use: "sig".into(),
    }
}

/// A JWKS document (RFC 7517 JSON, as `GetJwks` returns in `jwks_json`) in a file, re-read on
/// every fetch: for verifiers that get keys distributed as files (a mounted secret), and tests
/// of real binaries without an auth service.
#[derive(Debug, Clone)]
pub struct FileKeySource {
    path: std::path::PathBuf,
}

impl FileKeySource {
    /// Keys from the JWKS file at `path`.
    #[must_use]
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

#[async_trait::async_trait]
impl KeySource for FileKeySource {
    async fn fetch(&self) -> Result<Vec<Jwk>, KeySourceError> {
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| KeySourceError(format!("cannot read {}: {e}", self.path.display())))?;
        parse_jwks_json(&text)
    }
}

/// Parses a JWKS JSON document (RFC 7517 `{"keys": [...]}`, through `jsonwebtoken::jwk`)
/// into JWKs. Keys of other types than Ed25519 octet key pairs are left out (no verifier here
/// could use them).
///
/// # Errors
/// When the text is not a JWKS document.
pub fn parse_jwks_json(text: &str) -> Result<Vec<Jwk>, KeySourceError> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
    let set: JwkSet = serde_json::from_str(text)
        .map_err(|e| KeySourceError(format!("jwks is not a JWKS: {e}")))?;
    Ok(set
        .keys
        .iter()
        .filter_map(|k| match &k.algorithm {
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Some(Jwk {
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    kid: k.common.key_id.clone().unwrap_or_default(),
                    x: p.x.clone(),
                    alg: k
                        .common
                        .key_algorithm
                        .map(|a| format!("{a:?}"))
                        .unwrap_or_default(),
                    r#use: match &k.common.public_key_use {
                        Some(PublicKeyUse::Signature) => "sig".into(),
                        Some(PublicKeyUse::Encryption) => "enc".into(),
                        Some(PublicKeyUse::Other(other)) => other.clone(),
                        None => String::new(),
                    },
                })
            }
            _ => None,
        })
        .collect())
}

/// Renders JWKs as a JWKS JSON document (`jsonwebtoken::jwk::JwkSet`), the `GetJwks` format.
#[must_use]
pub fn jwks_json(keys: &[Jwk]) -> String {
    use jsonwebtoken::jwk::{
        AlgorithmParameters, CommonParameters, EllipticCurve, JwkSet, KeyAlgorithm,
        OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
    };
    let keys = keys
        .iter()
        .map(|k| jsonwebtoken::jwk::Jwk {
            common: CommonParameters {
                public_key_use: (k.r#use == "sig").then_some(PublicKeyUse::Signature),
                key_algorithm: (k.alg == ALGORITHM).then_some(KeyAlgorithm::EdDSA),
                key_id: Some(k.kid.clone()),
                ..CommonParameters::default()
            },
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: k.x.clone(),
            }),
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).expect("a JWKS serialises")
}

/// A fixed key set (the auth service's own ring, tests).
#[derive(Debug, Clone)]
pub struct StaticKeys(pub Arc<RwLock<Vec<Jwk>>>);

#[async_trait::async_trait]
impl KeySource for StaticKeys {
    async fn fetch(&self) -> Result<Vec<Jwk>, KeySourceError> {
        Ok(self.0.read().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        calls: AtomicUsize,
        keys: Vec<Jwk>,
    }

    #[async_trait::async_trait]
    impl KeySource for Counting {
        async fn fetch(&self) -> Result<Vec<Jwk>, KeySourceError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.keys.is_empty() {
                Err(KeySourceError("down".into()))
            } else {
                Ok(self.keys.clone())
            }
        }
    }

    fn key(seed: u8) -> VerifyingKey {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key()
    }

    #[tokio::test]
    async fn unknown_kids_refetch_once_under_concurrency() {
        let source = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            keys: vec![jwk("k1", &key(1))],
        });
        let cache = Arc::new(JwksCache::new(source.clone(), Duration::from_secs(10)));
        let lookups = (0..50).map(|i| {
            let cache = Arc::clone(&cache);
            async move { cache.key(if i % 2 == 0 { "k1" } else { "forged" }).await }
        });
        let results = futures::future::join_all(lookups).await;
        assert_eq!(
            source.calls.load(Ordering::SeqCst),
            1,
            "single flight + rate limit"
        );
        assert!(results.iter().step_by(2).all(Result::is_ok));
        assert_eq!(
            results[1].as_ref().err(),
            Some(&KeyError::Unknown("forged".into()))
        );
    }

    #[test]
    fn jwks_json_round_trips() {
        let keys = vec![jwk("a", &key(5)), jwk("b", &key(6))];
        assert_eq!(parse_jwks_json(&jwks_json(&keys)).unwrap(), keys);
        assert!(parse_jwks_json("{}").is_err());
        assert!(parse_jwks_json("nope").is_err());
    }

    #[tokio::test]
    async fn wrong_key_types_are_ignored_and_down_source_is_unavailable() {
        let mut rsa = jwk("rsa", &key(2));
        rsa.kty = "RSA".into();
        let mut hs = jwk("hs", &key(3));
        hs.alg = "HS256".into();
        let source = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            keys: vec![rsa, hs, jwk("ok", &key(4))],
        });
        let cache = JwksCache::new(source, Duration::ZERO);
        assert!(cache.key("ok").await.is_ok());
        assert!(matches!(cache.key("rsa").await, Err(KeyError::Unknown(_))));
        assert!(matches!(cache.key("hs").await, Err(KeyError::Unknown(_))));

        let down = JwksCache::new(
            Arc::new(Counting {
                calls: AtomicUsize::new(0),
                keys: vec![],
            }),
            Duration::ZERO,
        );
        assert_eq!(down.key("x").await.err(), Some(KeyError::Unavailable));
    }
}
