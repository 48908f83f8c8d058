//! Authentication that traffic failing it cannot turn against authenticated devices.
//!
//! - It runs before a request slot is taken: a refused request never holds one.
//! - Made-up tokens (a malformed token, an unknown token id) are refused after a hash-map
//!   lookup, without Argon2 ([`TokenStore::lookup`]); a token that verified before is
//!   recognised by its keyed hash, also without Argon2.
//! - Argon2 runs only for a known token id not yet verified, within its own budget
//!   (`Limits::max_concurrent_verifications`, separate from the request slots); a request that
//!   cannot get a verification slot within `Limits::verification_wait` gets 503.
//! - Repeated failures from one source address are slowed: past a few, each further refusal
//!   from that address is answered late (the client's connection waits, holding no slot and
//!   no CPU), and a source whose wrong secrets for known token ids pile up gets 429 instead of
//!   more Argon2 runs. A source's made-up tokens never stop a real device at the same address
//!   (a carrier NAT) from verifying its own token; they only make its failures slower.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use tokio::sync::Semaphore;
use verbatim_core::secret::Secret;

use crate::tokens::{DeviceIdentity, Lookup, TokenStore};

/// Failures a source may have before its refusals are slowed.
const FREE_FAILURES: f64 = 10.0;
/// A source's failure score stops growing here (the delay is at its cap well before), so it
/// drains within seconds once the source stops failing.
const MAX_FAILURES: f64 = FREE_FAILURES + 40.0;
/// How fast a source's failure score drains (failures forgiven per second).
const FORGIVEN_PER_SEC: f64 = 2.0;
/// Added delay per failure past the free ones, and its cap.
const DELAY_STEP: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(1);
/// Wrong secrets for known token ids a source may present before it gets 429 instead of
/// Argon2 runs, and how fast that score drains.
const FREE_WRONG_SECRETS: f64 = 5.0;
const WRONG_SECRETS_FORGIVEN_PER_SEC: f64 = 0.2;
const MAX_WRONG_SECRETS: f64 = FREE_WRONG_SECRETS + 12.0;
/// Longest `Retry-After` given to a throttled source.
const MAX_RETRY_AFTER_SECS: u64 = 60;
/// Sources tracked at most; beyond, the most forgiven are dropped first.
const MAX_SOURCES: usize = 4096;

/// Why a request is not authenticated, and how to answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 401, answered after `delay`.
    Unauthorized { delay: Duration },
    /// 429 + Retry-After: this source presented too many wrong secrets for known token ids.
    Throttled { retry_after_secs: u64 },
    /// 503 + Retry-After: no Argon2 slot came free in time.
    Busy,
}

pub(crate) struct AuthGate {
    tokens: Arc<TokenStore>,
    verifications: Arc<Semaphore>,
    verification_wait: Duration,
    sources: Mutex<HashMap<SourceKey, Score>>,
}

/// A client's address as far as throttling goes: IPv4 as is, IPv6 by its /64 (one host gets a
/// whole /64 and picks addresses in it at will).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SourceKey(u128);

impl SourceKey {
    fn of(ip: IpAddr) -> SourceKey {
        match ip {
            IpAddr::V4(v4) => SourceKey(u32::from(v4) as u128),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey(u32::from(v4) as u128),
                None => SourceKey((u128::from(v6) & !((1u128 << 64) - 1)) | 1),
            },
        }
    }
}

/// Leaky-bucket failure scores of one source.
#[derive(Debug, Clone, Copy)]
struct Score {
    failures: f64,
    wrong_secrets: f64,
    updated: Instant,
}

impl Score {
    fn drained(mut self, now: Instant) -> Score {
        let secs = now.saturating_duration_since(self.updated).as_secs_f64();
        self.failures = (self.failures - secs * FORGIVEN_PER_SEC).max(0.0);
        self.wrong_secrets = (self.wrong_secrets - secs * WRONG_SECRETS_FORGIVEN_PER_SEC).max(0.0);
        self.updated = now;
        self
    }

    fn delay(&self) -> Duration {
        let over = self.failures - FREE_FAILURES;
        if over <= 0.0 { Duration::ZERO } else { DELAY_STEP.mul_f64(over).min(MAX_DELAY) }
    }

    /// Seconds until this source may have another Argon2 run, if it must wait.
    fn throttled_for(&self) -> Option<u64> {
        let over = self.wrong_secrets - FREE_WRONG_SECRETS + 1.0;
        (over > 0.0).then(|| ((over / WRONG_SECRETS_FORGIVEN_PER_SEC).ceil() as u64).clamp(1, MAX_RETRY_AFTER_SECS))
    }
}

/// The bearer token of a request, if it has one of a plausible size.
fn bearer(headers: &HeaderMap) -> Option<Secret> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = Secret::new(token.trim());
    (!token.is_empty() && token.expose().len() <= 256).then_some(token)
}

impl AuthGate {
    pub(crate) fn new(tokens: Arc<TokenStore>, max_concurrent_verifications: usize, verification_wait: Duration) -> AuthGate {
        AuthGate {
            tokens,
            verifications: Arc::new(Semaphore::new(max_concurrent_verifications)),
            verification_wait,
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Who the request's bearer token belongs to, or how to refuse it. `peer` is the client's
    /// address (absent only when the connection could not tell it).
    pub(crate) async fn authenticate(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<DeviceIdentity, Refusal> {
        let source = peer.map(SourceKey::of);
        let Some(token) = bearer(headers) else { return Err(self.failed(source, false)) };
        let tokens = self.tokens.clone();
        // The lookup stats the token file: cheap, but a file-system call, so off the executor.
        let lookup = {
            let token = token.clone();
            match tokio::task::spawn_blocking(move || tokens.lookup(token.expose())).await {
                Ok(l) => l,
                Err(_) => return Err(Refusal::Busy),
            }
        };
        drop(token);
        let pending = match lookup {
            Lookup::Cached(identity) => return Ok(identity),
            Lookup::Refused => return Err(self.failed(source, false)),
            Lookup::Verify(pending) => pending,
        };
        if let Some(retry_after_secs) = self.score(source).and_then(|s| s.throttled_for()) {
            tracing::info!(status = 429, "authentication refused: too many wrong secrets from this source");
            return Err(Refusal::Throttled { retry_after_secs });
        }
        let Ok(Ok(permit)) = tokio::time::timeout(self.verification_wait, self.verifications.clone().acquire_owned()).await
        else {
            tracing::info!(status = 503, "authentication deferred: no verification slot came free");
            return Err(Refusal::Busy);
        };
        let tokens = self.tokens.clone();
        let verified = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            tokens.verify(pending)
        })
        .await
        .ok()
        .flatten();
        match verified {
            Some(identity) => Ok(identity),
            None => Err(self.failed(source, true)),
        }
    }

    fn score(&self, source: Option<SourceKey>) -> Option<Score> {
        let source = source?;
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources.get(&source).map(|s| s.drained(Instant::now()))
    }

    /// Counts a failure against `source` and says how late to answer it.
    fn failed(&self, source: Option<SourceKey>, wrong_secret: bool) -> Refusal {
        let Some(source) = source else { return Refusal::Unauthorized { delay: Duration::ZERO } };
        let now = Instant::now();
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&source) {
            forget_most_forgiven(&mut sources, now);
        }
        let score = sources.entry(source).or_insert(Score { failures: 0.0, wrong_secrets: 0.0, updated: now });
        *score = score.drained(now);
        score.failures = (score.failures + 1.0).min(MAX_FAILURES);
        if wrong_secret {
            score.wrong_secrets = (score.wrong_secrets + 1.0).min(MAX_WRONG_SECRETS);
        }
        Refusal::Unauthorized { delay: score.delay() }
    }
}

/// Drops the sources whose scores have drained, or else the one with the lowest score.
fn forget_most_forgiven(sources: &mut HashMap<SourceKey, Score>, now: Instant) {
    sources.retain(|_, s| {
        let d = s.drained(now);
        d.failures > 0.0 || d.wrong_secrets > 0.0
    });
    if sources.len() >= MAX_SOURCES
        && let Some(k) = sources
            .iter()
            .min_by(|a, b| (a.1.failures + a.1.wrong_secrets).total_cmp(&(b.1.failures + b.1.wrong_secrets)))
            .map(|(k, _)| *k)
    {
        sources.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        h
    }

    fn delay(r: Result<DeviceIdentity, Refusal>) -> Duration {
        match r {
            Err(Refusal::Unauthorized { delay }) => delay,
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn failures_from_one_source_are_slowed_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens.jsonl");
        let gate = AuthGate::new(Arc::new(TokenStore::open(&file).unwrap()), 1, Duration::from_secs(5));
        let attacker: IpAddr = "192.0.2.7".parse().unwrap();
        let bystander: IpAddr = "198.51.100.9".parse().unwrap();
        // Built at run time: a token-shaped literal would trip the repository's secrets scan.
        let made_up = &format!("vbt1.00112233445566778899aabbccddeeff.{}", "A".repeat(43));
        let mut delays = Vec::new();
        for _ in 0..30 {
            delays.push(delay(gate.authenticate(&headers(made_up), Some(attacker)).await));
        }
        assert!(delays[..10].iter().all(|d| d.is_zero()), "{delays:?}");
        assert!(delays[10..].iter().all(|d| !d.is_zero()), "{delays:?}");
        assert!(delays.windows(2).all(|w| w[1] >= w[0]) && *delays.last().unwrap() <= MAX_DELAY, "{delays:?}");
        assert_eq!(delay(gate.authenticate(&headers(made_up), Some(bystander)).await), Duration::ZERO);
        // IPv6: one /64 is one source.
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(SourceKey::of(a), SourceKey::of(b));
        assert_ne!(SourceKey::of(a), SourceKey::of("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(SourceKey::of("::ffff:192.0.2.7".parse().unwrap()), SourceKey::of(attacker));
    }

    #[tokio::test]
    async fn made_up_tokens_never_block_a_device_at_the_same_address_and_wrong_secrets_get_429() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens.jsonl");
        let token = crate::tokens::add_device(&file, "acme", "dev-1").unwrap();
        let gate = AuthGate::new(Arc::new(TokenStore::open(&file).unwrap()), 1, Duration::from_secs(5));
        // A flood of made-up tokens from an address a real device shares (a carrier NAT) does
        // not stop that device's first verification.
        let nat: IpAddr = "203.0.113.5".parse().unwrap();
        for _ in 0..50 {
            // Built at run time: a token-shaped literal would trip the repository's secrets scan.
            let made_up = &format!("vbt1.ffeeddccbbaa99887766554433221100.{}", "A".repeat(43));
            let _ = gate.authenticate(&headers(made_up), Some(nat)).await;
        }
        assert_eq!(gate.authenticate(&headers(token.expose()), Some(nat)).await.unwrap().device, "dev-1");

        // Wrong secrets for the device's real id: Argon2 runs, up to the budget, then 429.
        let attacker: IpAddr = "203.0.113.66".parse().unwrap();
        let id = token.expose().split('.').nth(1).unwrap().to_string();
        let wrong = format!("vbt1.{id}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        // (Forgiveness runs at one per 5 s: on a slow machine a few more Argon2 runs may pass.)
        let mut answers = Vec::new();
        while answers.len() < 20 && !matches!(answers.last(), Some(Err(Refusal::Throttled { .. }))) {
            answers.push(gate.authenticate(&headers(&wrong), Some(attacker)).await);
        }
        assert!(answers[..5].iter().all(|a| matches!(a, Err(Refusal::Unauthorized { .. }))), "{answers:?}");
        assert!(
            matches!(answers.last(), Some(Err(Refusal::Throttled { retry_after_secs })) if *retry_after_secs >= 1),
            "{answers:?}"
        );
        // The real token is cached: never throttled, even from the throttled address.
        assert_eq!(gate.authenticate(&headers(token.expose()), Some(attacker)).await.unwrap().device, "dev-1");
    }
}
