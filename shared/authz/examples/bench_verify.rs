//! Access-token verification cost, in one run: the full path (parse, Ed25519 signature, claims,
//! revocations) on never-seen tokens, and the cached path a client hits when it reuses its token.
//!
//! `cargo run --release -p umcp-authz --example bench_verify` (part of `make bench`).
//! Target: ≤ 50 µs p99 per verification.

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::RwLock;
use umcp_authz::claims::{AuthMethod, Claims, DEFAULT_AUDIENCE, DEFAULT_ISSUER};
use umcp_authz::keys::{StaticKeys, jwk};
use umcp_authz::revocations::{Kind, Revocation, RevocationSet};
use umcp_authz::verifier::unix_now;
use umcp_authz::{Verifier, VerifierConfig, jws};

const N: usize = 20_000;

fn claims(i: usize) -> Claims {
    let now = unix_now();
    Claims {
        iss: DEFAULT_ISSUER.into(),
        aud: DEFAULT_AUDIENCE.into(),
        sub: format!("user-{i}"),
        name: format!("user-{i}"),
        roles: vec!["developer".into()],
        jti: format!("01890a5d-ac96-774b-bcce-{i:012}"),
        sid: format!("session-{i}"),
        amr: AuthMethod::Password,
        iat: now,
        nbf: now,
        exp: now + 900,
    }
}

fn report(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<34} p50 {:>6.1} µs   p99 {:>6.1} µs   max {:>7.1} µs",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let keys = StaticKeys(Arc::new(RwLock::new(vec![jwk("k1", &key.verifying_key())])));
    let revocations = Arc::new(RevocationSet::new());
    // A realistic revocation set: a few hundred entries of each kind.
    revocations.extend((0..300).flat_map(|i| {
        [Kind::Token, Kind::Session, Kind::User].map(|kind| Revocation {
            kind,
            id: format!("revoked-{i}"),
            revoked_at: unix_now(),
            expires_at: unix_now() + 900,
        })
    }));
    let verifier = Verifier::new(VerifierConfig::default(), Arc::new(keys), revocations);
    let tokens: Vec<String> = (0..N).map(|i| jws::sign(&claims(i), "k1", &key)).collect();
    // Warm the key cache so the first measured call does not include the JWKS fetch.
    verifier.verify(&tokens[0]).await.expect("valid");

    let mut cold = Histogram::<u64>::new(3).expect("histogram");
    for token in &tokens[1..] {
        let t = Instant::now();
        verifier.verify(token).await.expect("valid");
        cold.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX))
            .expect("record");
    }
    let mut warm = Histogram::<u64>::new(3).expect("histogram");
    for token in tokens.iter().cycle().take(N * 5) {
        let t = Instant::now();
        verifier.verify(token).await.expect("valid");
        warm.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX))
            .expect("record");
    }
    println!("token verification, {N} distinct EdDSA tokens, 900 revocations in the set");
    report("first sight (signature verified)", &cold);
    report("repeat (verified-token cache)", &warm);
    let p99 = Duration::from_nanos(cold.value_at_quantile(0.99));
    println!(
        "summary: verification p99 {:.1} µs uncached, {:.1} µs cached (target <= 50 µs)",
        p99.as_secs_f64() * 1e6,
        warm.value_at_quantile(0.99) as f64 / 1000.0
    );
}
