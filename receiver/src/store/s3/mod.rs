//! The object store: records as immutable objects in an S3 bucket with Object Lock, written in
//! COMPLIANCE mode until a per-tenant retain-until date, so that any number of stateless
//! receivers can serve one archive side by side, with no coordinator.
//!
//! Exactly-once without a coordinator (see [`writer`]): a receiver stores a batch's new records
//! as one object whose key is the sequence right after the stream's head it read, written with
//! `If-None-Match: *`; only one receiver can ever create that key, so two receivers racing on
//! one stream can store neither a gap, a fork nor a duplicate: the loser re-reads and answers
//! as the SQLite store would (a duplicate, or a conflict with what is held). The head object is
//! moved forward with a compare-and-swap (`If-Match` on its ETag); it is a hint that may lag
//! (a receiver killed between the two writes), and readers and writers follow the batch
//! objects past it. A batch is acknowledged only once its object is written.
//!
//! Where things live in the bucket: [`layout`]. Device tokens do not live in the bucket: each
//! receiver reads the token file it is given (see `docs/deployment.md`), because a token must
//! be revocable and nothing written under Object Lock can be removed.

mod client;
mod copy;
mod hold;
mod layout;
mod reader;
mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use verbatim_core::chain::{Link, StreamId};
use verbatim_core::wire::Batch;

pub use client::{COMPLIANCE, Put, PutOptions, S3Client, S3Config};
pub use copy::{CopySummary, copy_archive};
pub use hold::{HoldEvent, HoldSummary, MARKER_TTL};
pub use layout::Layout;
pub use reader::S3Reader;

use super::{ArchiveStore, BoxFuture, Mode, Outcome, StoreRules};
use crate::error::{Error, Result};

const DAY_MS: i64 = 86_400_000;

/// `s3://BUCKET[/PREFIX]`, as given to `--store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://BUCKET[/PREFIX]`; `None` when `s` is not an `s3://` URL.
    pub fn parse(s: &str) -> Option<Result<S3Location>> {
        let rest = s.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            return Some(Err(Error::Config(format!(
                "--store {s}: the bucket name must be 3 to 63 lowercase letters, digits, '-' or '.'"
            ))));
        }
        if prefix.len() > 256 || prefix.chars().any(char::is_control) {
            return Some(Err(Error::Config("--store: the prefix must be at most 256 bytes without control characters".into())));
        }
        Some(Ok(S3Location { bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string() }))
    }
}

/// How long records stay locked: COMPLIANCE retention of this many days from when they are
/// written, per tenant. Only ever lengthens what a later write is given; nothing written is
/// ever shortened (Object Lock COMPLIANCE refuses that anyway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub default_days: u32,
    pub tenants: BTreeMap<String, u32>,
}

impl Retention {
    /// Six years: SEC 17a-4(b)(4) business communications.
    pub const DEFAULT_DAYS: u32 = 6 * 366;

    pub fn days(default_days: u32) -> Retention {
        Retention { default_days, tenants: BTreeMap::new() }
    }

    pub fn days_for(&self, tenant: &str) -> u32 {
        self.tenants.get(tenant).copied().unwrap_or(self.default_days)
    }

    /// The retain-until date (RFC 3339) for a record of `tenant` written at `now_ms`.
    pub fn until(&self, tenant: &str, now_ms: i64) -> String {
        crate::time::rfc3339(now_ms.saturating_add(i64::from(self.days_for(tenant)).saturating_mul(DAY_MS)))
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention::days(Retention::DEFAULT_DAYS)
    }
}

/// Everything the object store needs.
#[derive(Debug, Clone)]
pub struct S3StoreConfig {
    pub s3: S3Config,
    pub prefix: String,
    pub retention: Retention,
}

/// Shared by the store's futures.
pub(crate) struct Inner {
    pub(crate) client: S3Client,
    pub(crate) layout: Layout,
    pub(crate) rules: StoreRules,
    pub(crate) retention: Retention,
    pub(crate) holds: hold::MarkerCache,
}

impl Inner {
    fn new(client: S3Client, config: &S3StoreConfig, rules: StoreRules) -> Inner {
        Inner {
            client,
            layout: Layout::new(&config.prefix),
            rules,
            retention: config.retention.clone(),
            holds: hold::MarkerCache::default(),
        }
    }
}

pub struct S3Store {
    inner: Arc<Inner>,
    closed: AtomicBool,
}

/// Refuses a bucket without Object Lock: records there could be deleted or overwritten.
pub async fn require_object_lock(client: &S3Client) -> Result<()> {
    if client.object_lock_enabled().await? {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "bucket {} does not have Object Lock enabled: records there could be deleted or overwritten. \
             Create the bucket with Object Lock (it cannot be turned on later for an existing bucket on most stores)",
            client.bucket_name()
        )))
    }
}

impl S3Store {
    /// Connects, and refuses to run on a bucket without Object Lock.
    pub async fn open(config: &S3StoreConfig, rules: StoreRules) -> Result<S3Store> {
        if rules.accepted_keys.is_empty() {
            return Err(Error::Config("the archive store needs at least one accepted archive key".into()));
        }
        if rules.max_streams_per_device == 0 {
            return Err(Error::Config("max_streams_per_device must be at least 1".into()));
        }
        if config.retention.default_days == 0 || config.retention.tenants.values().any(|d| *d == 0) {
            return Err(Error::Config("a retention period must be at least 1 day".into()));
        }
        let client = S3Client::new(&config.s3)?;
        require_object_lock(&client).await?;
        let inner = Inner::new(client, config, rules);
        Ok(S3Store { inner: Arc::new(inner), closed: AtomicBool::new(false) })
    }
}

/// Administration of a bucket archive: legal holds and the audit trail.
pub struct S3Admin {
    inner: Inner,
}

impl S3Admin {
    /// Connects; refuses a bucket without Object Lock.
    pub async fn open(config: &S3StoreConfig) -> Result<S3Admin> {
        let client = S3Client::new(&config.s3)?;
        require_object_lock(&client).await?;
        let rules = StoreRules::new(crate::keys::AcceptedKeys::from_key_ids(std::iter::empty::<&str>()));
        Ok(S3Admin { inner: Inner::new(client, config, rules) })
    }

    /// Puts (`on`) or releases the legal hold on everything of `tenant`, or of one of its
    /// devices, present and future; records the audit event (who, why, how many objects).
    /// Retention dates are never changed.
    pub async fn legal_hold(&self, tenant: &str, device: Option<&str>, on: bool, reason: &str, by: &str) -> Result<HoldSummary> {
        hold::set(&self.inner, tenant, device, on, reason, by, MARKER_TTL).await
    }

    /// [`S3Admin::legal_hold`] waiting `wait` for receivers' hold caches instead of
    /// [`MARKER_TTL`] (tests whose receivers started after the marker).
    pub async fn legal_hold_waiting(
        &self,
        tenant: &str,
        device: Option<&str>,
        on: bool,
        reason: &str,
        by: &str,
        wait: Duration,
    ) -> Result<HoldSummary> {
        hold::set(&self.inner, tenant, device, on, reason, by, wait).await
    }

    /// The audit trail (legal holds put and released), oldest first.
    pub async fn audit_events(&self) -> Result<Vec<HoldEvent>> {
        hold::audit_events(&self.inner).await
    }
}

impl ArchiveStore for S3Store {
    fn submit(&self, batch: Batch, mode: Mode) -> BoxFuture<'_, Result<Outcome>> {
        Box::pin(async move {
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            writer::submit(&self.inner, batch, mode, None).await
        })
    }

    fn cursor(&self, id: StreamId) -> BoxFuture<'_, Result<(u64, Link)>> {
        Box::pin(async move { writer::cursor(&self.inner, &id).await })
    }

    fn close(&self) {
        // Nothing buffered: every acknowledged batch is already an object in the bucket.
        self.closed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_locations_parse_and_bad_ones_are_named() {
        assert!(S3Location::parse("/var/archive").is_none());
        let l = S3Location::parse("s3://my-archive/firm/a/").unwrap().unwrap();
        assert_eq!(l, S3Location { bucket: "my-archive".into(), prefix: "firm/a".into() });
        assert_eq!(S3Location::parse("s3://b-1").unwrap().unwrap().prefix, "");
        let e = S3Location::parse("s3://Bad_Bucket").unwrap().unwrap_err().to_string();
        assert!(e.contains("bucket name"), "{e}");
    }

    #[test]
    fn retention_is_per_tenant_with_a_default() {
        let mut r = Retention::days(10);
        r.tenants.insert("long".into(), 3650);
        assert_eq!(r.days_for("other"), 10);
        assert_eq!(r.until("other", 0), crate::time::rfc3339(10 * DAY_MS));
        assert_eq!(r.until("long", 0), crate::time::rfc3339(3650 * DAY_MS));
    }
}
