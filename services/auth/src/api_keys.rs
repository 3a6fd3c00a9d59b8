//! API keys: `umcp_` + 40 random base62 characters (≈238 bits) + a 6-character base62 CRC32
//! of the random part. The checksum lets secret scanners and this service reject random or
//! mistyped strings without a lookup. Only the SHA-256 of the whole key is stored (it is the
//! record's lookup key); the secret is returned once, at creation.
//!
//! Revocation and `last_used_at` updates are read-modify-writes serialised by one
//! process-wide async mutex (the store has no compare-and-set).

use std::collections::BTreeMap;

use umcp_authz::permissions::Role;
use umcp_store::{Node, Value};

use crate::clock::now_micros;
use crate::error::AuthError;
use crate::secrets::{self, BASE62};
use crate::storage::{NodeExt, Records, digest_key, opt_int, props};
use crate::users::{roles_from_string, roles_to_string};
use crate::validate::new_id;

type Result<T> = std::result::Result<T, AuthError>;

const LABEL: &str = "AuthApiKey";
/// Type prefix of every API key.
pub const PREFIX: &str = "umcp_";
const RANDOM_LEN: usize = 40;
const CHECKSUM_LEN: usize = 6;
/// Total key length.
pub const KEY_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
/// Characters of the key shown in listings to recognise it.
const DISPLAY_PREFIX_LEN: usize = PREFIX.len() + 6;
/// `last_used_at` is written at most this often per key (a write per exchange would turn
/// every exchange into an fsync).
const TOUCH_INTERVAL_MICROS: i64 = 60 * 1_000_000;

/// CRC-32 (IEEE 802.3, reflected, as in zlib).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// The checksum of a random part: CRC32 in base62, zero-padded to 6 characters
/// (62^6 > 2^32, so every CRC fits).
fn checksum(random: &str) -> String {
    let mut n = crc32(random.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A new key.
///
/// # Errors
/// When the OS has no randomness.
pub fn generate() -> Result<String> {
    let random = secrets::base62(RANDOM_LEN)?;
    Ok(format!("{PREFIX}{random}{}", checksum(&random)))
}

/// Checks a key's shape and checksum without any lookup.
#[must_use]
pub fn well_formed(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(PREFIX) else {
        return false;
    };
    if rest.len() != RANDOM_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (random, sum) = rest.split_at(RANDOM_LEN);
    checksum(random) == sum
}

/// An API key's metadata (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Id (32 hex digits).
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// The first characters of the key.
    pub prefix: String,
    /// Owner's user id.
    pub owner: String,
    /// Roles granted; empty means all of the owner's roles.
    pub roles: Vec<Role>,
    /// Unix microseconds.
    pub created_at: i64,
    /// Unix microseconds; `None` = never expires.
    pub expires_at: Option<i64>,
    /// Unix microseconds; `None` = never used.
    pub last_used_at: Option<i64>,
    /// Revoked keys never exchange again.
    pub revoked: bool,
    store_key: String,
}

impl ApiKey {
    /// The roles a token from this key carries, given the owner's current roles: the key's
    /// roles still held by the owner (all of them for a key without explicit roles).
    #[must_use]
    pub fn effective_roles(&self, owner_roles: &[Role]) -> Vec<Role> {
        if self.roles.is_empty() {
            owner_roles.to_vec()
        } else {
            self.roles
                .iter()
                .copied()
                .filter(|r| owner_roles.contains(r))
                .collect()
        }
    }

    /// The access-token session id of this key.
    #[must_use]
    pub fn sid(&self) -> String {
        format!("key:{}", self.id)
    }

    fn from_node(node: &Node) -> Result<Self> {
        Ok(Self {
            id: node.string("id")?,
            name: node.string("name")?,
            prefix: node.string("prefix")?,
            owner: node.string("owner")?,
            roles: roles_from_string(&node.string("roles")?),
            created_at: node.int("created_at")?,
            expires_at: node.opt_int("expires_at"),
            last_used_at: node.opt_int("last_used_at"),
            revoked: node.flag("revoked"),
            store_key: node.key.clone(),
        })
    }
}

/// The API-key repository.
#[derive(Debug)]
pub struct ApiKeys {
    records: Records,
    lock: tokio::sync::Mutex<()>,
}

impl ApiKeys {
    /// Over the auth records.
    #[must_use]
    pub fn new(records: Records) -> Self {
        Self {
            records,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Creates a key; returns its metadata and the secret (the only time it exists outside
    /// the caller's hands).
    ///
    /// # Errors
    /// Store errors.
    pub async fn create(
        &self,
        owner: &str,
        name: &str,
        roles: Vec<Role>,
        expires_at: Option<i64>,
    ) -> Result<(ApiKey, String)> {
        let secret = generate()?;
        let key = ApiKey {
            id: new_id(),
            name: name.to_owned(),
            prefix: secret[..DISPLAY_PREFIX_LEN].to_owned(),
            owner: owner.to_owned(),
            roles,
            created_at: now_micros(),
            expires_at,
            last_used_at: None,
            revoked: false,
            store_key: digest_key("ak_", &secret),
        };
        self.write(&key).await?;
        tracing::info!(key_id = %key.id, owner = %key.owner, "api key created");
        Ok((key, secret))
    }

    /// The key record for a presented secret (any state: the caller decides).
    ///
    /// # Errors
    /// Store errors.
    pub async fn by_secret(&self, secret: &str) -> Result<Option<ApiKey>> {
        self.records
            .get(LABEL, &digest_key("ak_", secret))
            .await?
            .as_ref()
            .map(ApiKey::from_node)
            .transpose()
    }

    /// The key with this id.
    ///
    /// # Errors
    /// Store errors.
    pub async fn by_id(&self, id: &str) -> Result<Option<ApiKey>> {
        let mut params = BTreeMap::new();
        params.insert("id".to_owned(), Value::String(id.into()));
        let nodes = self
            .records
            .scan(LABEL, "n.id = $id", params, "id", None, 1)
            .await?;
        nodes.first().map(ApiKey::from_node).transpose()
    }

    /// Keys in id order (creation order), of one owner or of everyone.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list(
        &self,
        owner: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ApiKey>> {
        let mut params = BTreeMap::new();
        let filter = match owner {
            Some(owner) => {
                params.insert("owner".to_owned(), Value::String(owner.into()));
                "n.owner = $owner"
            }
            None => "",
        };
        self.records
            .scan(LABEL, filter, params, "id", after, limit)
            .await?
            .iter()
            .map(ApiKey::from_node)
            .collect()
    }

    /// Marks a key revoked (idempotent). Returns the updated key.
    ///
    /// # Errors
    /// [`AuthError::DoesNotExist`]; store errors.
    pub async fn revoke(&self, id: &str) -> Result<ApiKey> {
        let _guard = self.lock.lock().await;
        let mut key = self
            .by_id(id)
            .await?
            .ok_or_else(|| AuthError::DoesNotExist(format!("api key {id} does not exist")))?;
        key.revoked = true;
        self.write(&key).await?;
        tracing::info!(key_id = %key.id, "api key revoked");
        Ok(key)
    }

    /// Records a use (at most once a minute per key).
    ///
    /// # Errors
    /// Store errors.
    pub async fn touch(&self, key: &ApiKey) -> Result<()> {
        let now = now_micros();
        if key
            .last_used_at
            .is_some_and(|t| now - t < TOUCH_INTERVAL_MICROS)
        {
            return Ok(());
        }
        let _guard = self.lock.lock().await;
        self.records
            .put(
                &key.store_key,
                LABEL,
                props([("last_used_at", Value::Int(now))]),
            )
            .await
    }

    async fn write(&self, key: &ApiKey) -> Result<()> {
        self.records
            .put(
                &key.store_key,
                LABEL,
                props([
                    ("id", Value::String(key.id.clone())),
                    ("name", Value::String(key.name.clone())),
                    ("prefix", Value::String(key.prefix.clone())),
                    ("owner", Value::String(key.owner.clone())),
                    ("roles", Value::String(roles_to_string(&key.roles))),
                    ("created_at", Value::Int(key.created_at)),
                    ("expires_at", opt_int(key.expires_at)),
                    ("last_used_at", opt_int(key.last_used_at)),
                    ("revoked", Value::Bool(key.revoked)),
                ]),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use umcp_store::grafeo::{GrafeoConfig, GrafeoStore};

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn generated_keys_are_well_formed_and_garbage_is_not() {
        let key = generate().unwrap();
        assert_eq!(key.len(), KEY_LEN);
        assert!(well_formed(&key));
        // Flip one character of the random part: the checksum no longer matches.
        let mut bytes = key.clone().into_bytes();
        bytes[10] = if bytes[10] == b'a' { b'b' } else { b'a' };
        assert!(!well_formed(&String::from_utf8(bytes).unwrap()));
        for bad in [
            "",
            "umcp_",
            "ghp_abc",
            &key[..KEY_LEN - 1],
            &format!("{key}x"),
            &key.replace("umcp_", "umcp-"),
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
    }

    #[test]
    fn effective_roles_are_the_intersection_with_the_owner() {
        let mut key = ApiKey {
            id: "i".into(),
            name: "n".into(),
            prefix: "p".into(),
            owner: "o".into(),
            roles: vec![],
            created_at: 0,
            expires_at: None,
            last_used_at: None,
            revoked: false,
            store_key: "k".into(),
        };
        assert_eq!(
            key.effective_roles(&[Role::Viewer, Role::Admin]),
            vec![Role::Viewer, Role::Admin]
        );
        key.roles = vec![Role::Viewer, Role::Developer];
        assert_eq!(key.effective_roles(&[Role::Viewer]), vec![Role::Viewer]);
        assert_eq!(key.sid(), "key:i");
    }

    #[tokio::test]
    async fn create_find_list_touch_revoke() {
        let store = GrafeoStore::open(GrafeoConfig::in_memory()).await.unwrap();
        let keys = ApiKeys::new(Records::new(Arc::new(store)));
        let (a, secret) = keys
            .create("u1", "ci", vec![Role::Viewer], Some(1))
            .await
            .unwrap();
        let (b, _) = keys.create("u2", "other", vec![], None).await.unwrap();
        assert!(secret.starts_with(&a.prefix));
        assert_eq!(keys.by_secret(&secret).await.unwrap().unwrap(), a);
        assert!(
            keys.by_secret(&generate().unwrap())
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            keys.list(Some("u1"), None, 10).await.unwrap(),
            vec![a.clone()]
        );
        assert_eq!(
            keys.list(None, Some(&a.id), 10).await.unwrap(),
            vec![b.clone()]
        );
        keys.touch(&a).await.unwrap();
        assert!(
            keys.by_id(&a.id)
                .await
                .unwrap()
                .unwrap()
                .last_used_at
                .is_some()
        );
        assert!(keys.revoke(&a.id).await.unwrap().revoked);
        assert!(keys.by_secret(&secret).await.unwrap().unwrap().revoked);
        assert!(matches!(
            keys.revoke(&new_id()).await,
            Err(AuthError::DoesNotExist(_))
        ));
    }
}
