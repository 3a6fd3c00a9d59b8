//! Argon2id password hashing (PHC strings), bounded in concurrency and run off the async
//! runtime.
//!
//! Each hash holds `memory_kib` of RAM for its duration, so a semaphore bounds how many run at
//! once (a login storm then queues instead of exhausting memory). Verification reads the
//! parameters from the stored PHC string, so hashes made with older parameters keep working.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::config::PasswordConfig;
use crate::error::AuthError;

/// Hashes and verifies passwords.
#[derive(Debug, Clone)]
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    /// A hash of a random password with the configured parameters. Logins for unknown
    /// usernames verify against it so they take as long as logins for real ones.
    dummy_hash: Arc<str>,
}

impl Passwords {
    /// Builds the hasher and its dummy hash (one hash: call from async code via
    /// [`Passwords::new`]).
    ///
    /// # Errors
    /// [`AuthError::Unexpected`] when the parameters are rejected by argon2.
    pub fn new_blocking(config: &PasswordConfig) -> Result<Self, AuthError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|e| AuthError::Unexpected(format!("argon2 parameters: {e}")))?;
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|e| AuthError::Unexpected(format!("getrandom: {e}")))?;
        let dummy_hash = hash_with(&params, &hex::encode(random))?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// [`Passwords::new_blocking`] on the blocking pool.
    ///
    /// # Errors
    /// As for [`Passwords::new_blocking`].
    pub async fn new(config: PasswordConfig) -> Result<Self, AuthError> {
        tokio::task::spawn_blocking(move || Self::new_blocking(&config))
            .await
            .map_err(|e| AuthError::Unexpected(format!("hashing task: {e}")))?
    }

    /// A new PHC string for `password`.
    ///
    /// # Errors
    /// [`AuthError::Unexpected`] when hashing fails, [`AuthError::DependencyUnavailable`] at shutdown.
    pub async fn hash(&self, password: &str) -> Result<String, AuthError> {
        let params = self.params.clone();
        let password = password.to_owned();
        self.run(move || hash_with(&params, &password)).await
    }

    /// Whether `password` matches `phc`; `None` verifies against the dummy hash and is always
    /// false, taking the same time as a real check.
    ///
    /// # Errors
    /// [`AuthError::DependencyUnavailable`] at shutdown, [`AuthError::Unexpected`] if the task panicked.
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool, AuthError> {
        let known = phc.is_some();
        let phc = phc.map_or_else(|| Arc::clone(&self.dummy_hash), Arc::from);
        let password = password.to_owned();
        let matched = self
            .run(move || {
                // A stored hash that does not parse can never match; treat it like a mismatch
                // (and say so in the log, without the hash).
                match PasswordHash::new(&phc) {
                    Ok(parsed) => Ok(Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()),
                    Err(_) => {
                        tracing::error!("stored password hash is not a valid phc string");
                        Ok(false)
                    }
                }
            })
            .await?;
        Ok(known && matched)
    }

    /// Whether `phc` was made with other parameters than the configured ones (older, weaker
    /// settings): the caller rehashes it after a successful login, while the password is known.
    #[must_use]
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return true;
        };
        let same = parsed.algorithm == Algorithm::Argon2id.ident()
            && Params::try_from(&parsed).is_ok_and(|p| {
                (p.m_cost(), p.t_cost(), p.p_cost())
                    == (
                        self.params.m_cost(),
                        self.params.t_cost(),
                        self.params.p_cost(),
                    )
            });
        !same
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| AuthError::DependencyUnavailable("shutting down".into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| AuthError::Unexpected(format!("hashing task: {e}")))?
    }
}

fn hash_with(params: &Params, password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AuthError::Unexpected(format!("getrandom: {e}")))?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| AuthError::Unexpected(format!("salt encoding: {e}")))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Unexpected(format!("argon2: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> PasswordConfig {
        PasswordConfig::fast_for_tests()
    }

    #[tokio::test]
    async fn hash_then_verify_and_dummy_never_matches() {
        let p = Passwords::new(fast()).await.unwrap();
        let phc = p.hash("correct horse battery").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(!phc.contains("correct"));
        assert!(p.verify("correct horse battery", Some(&phc)).await.unwrap());
        assert!(!p.verify("wrong", Some(&phc)).await.unwrap());
        assert!(!p.verify("correct horse battery", None).await.unwrap());
        assert!(!p.verify("x", Some("not a phc string")).await.unwrap());
        assert!(!p.needs_rehash(&phc));
        let stronger = Passwords::new(PasswordConfig {
            memory_kib: 128,
            ..fast()
        })
        .await
        .unwrap();
        assert!(stronger.needs_rehash(&phc));
        assert!(stronger.needs_rehash("garbage"));
    }

    #[test]
    fn default_parameters_are_the_owasp_minimum() {
        let c = PasswordConfig::default();
        let p = Passwords::new_blocking(&c).unwrap();
        assert!(p.params.m_cost() >= 19 * 1024);
        assert!(p.params.t_cost() >= 2);
        assert_eq!(p.params.p_cost(), 1);
        assert!(p.dummy_hash.contains("m=19456,t=2,p=1"), "{}", p.dummy_hash);
    }
}
