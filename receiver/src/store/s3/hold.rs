//! Legal hold on everything of a tenant or a device: an Object Lock legal hold (which keeps an
//! object past its retention date until released) on every record and alert object, present
//! and future, recorded as an audit event. Retention is never touched: releasing a hold never
//! shortens anything (COMPLIANCE retention cannot be shortened anyway).
//!
//! How new objects get the hold: a small marker object per held tenant or device, which every
//! receiver reads (cached for [`MARKER_TTL`]) before writing and, when it is on, writes with
//! `x-amz-object-lock-legal-hold: ON`. Putting a hold writes the marker first, waits out the
//! cache, and only then sweeps the objects already there: so no object falls between the two.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Inner;
use super::client::{Put, PutOptions};
use crate::error::{Error, Result};
use crate::time::now_ms;

/// How long a receiver trusts what it read of the hold markers.
pub const MARKER_TTL: Duration = Duration::from_secs(5);

/// A hold marker (mutable; the audit events are the record of who did what).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Marker {
    on: bool,
    at_ms: i64,
}

/// The audit event of a hold put or released (locked like the records).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldEvent {
    pub action: String,
    pub tenant: String,
    pub device: Option<String>,
    pub reason: String,
    pub by: String,
    pub at_ms: i64,
    /// Objects whose legal hold was set by this command.
    pub objects: u64,
}

/// What a hold command did.
#[derive(Debug, Clone, Serialize)]
pub struct HoldSummary {
    pub event: HoldEvent,
    /// The audit event's object key.
    pub audit_key: String,
}

/// Cached marker reads, per marker key.
#[derive(Default)]
pub(crate) struct MarkerCache {
    seen: std::sync::Mutex<std::collections::HashMap<String, (bool, Instant)>>,
}

async fn marker_on(s: &Inner, key: &str) -> Result<bool> {
    if let Some((on, at)) = s.holds.seen.lock().unwrap_or_else(|p| p.into_inner()).get(key)
        && at.elapsed() < MARKER_TTL
    {
        return Ok(*on);
    }
    let on = match s.client.get(key).await? {
        Some(o) => serde_json::from_slice::<Marker>(&o.body).map(|m| m.on).unwrap_or(true),
        None => false,
    };
    s.holds.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), (on, Instant::now()));
    Ok(on)
}

/// Whether new objects of this device must be written under legal hold.
pub(crate) async fn held(s: &Inner, tenant: &str, device: &str) -> Result<bool> {
    Ok(marker_on(s, &s.layout.hold(tenant, None)).await? || marker_on(s, &s.layout.hold(tenant, Some(device))).await?)
}

/// Puts (`on`) or releases the legal hold on everything of `tenant` (or of one device of it),
/// and records the audit event. `wait` is how long to let receivers' marker caches expire
/// before the sweep ([`MARKER_TTL`] in production).
pub(crate) async fn set(
    s: &Inner,
    tenant: &str,
    device: Option<&str>,
    on: bool,
    reason: &str,
    by: &str,
    wait: Duration,
) -> Result<HoldSummary> {
    if reason.trim().is_empty() {
        return Err(Error::Config("a legal hold needs a reason (the matter or case reference)".into()));
    }
    let now = now_ms();
    let marker = Marker { on, at_ms: now };
    s.client.put(&s.layout.hold(tenant, device), serde_json::to_vec(&marker).unwrap_or_default(), &PutOptions::default()).await?;
    if on {
        tokio::time::sleep(wait).await;
    }
    let prefix = match device {
        Some(d) => s.layout.device(tenant, d),
        None => s.layout.tenant(tenant),
    };
    // One listing page at a time: memory stays bounded whatever the archive's size.
    let mut objects = 0u64;
    let mut next: Option<String> = None;
    loop {
        let page = s.client.list(&prefix, None, None, next.as_deref()).await?;
        for key in page.keys.iter().filter(|k| super::layout::Layout::is_locked(k)) {
            s.client.put_legal_hold(key, on).await?;
            objects += 1;
        }
        match page.next {
            Some(n) => next = Some(n),
            None => break,
        }
    }
    let event = HoldEvent {
        action: if on { "legal_hold_put" } else { "legal_hold_released" }.into(),
        tenant: tenant.to_string(),
        device: device.map(str::to_string),
        reason: reason.to_string(),
        by: by.to_string(),
        at_ms: now,
        objects,
    };
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| Error::Store(format!("random: {e}")))?;
    let audit_key = s.layout.audit(now, &hex::encode(nonce));
    let options = PutOptions { if_none_match: true, retain_until: Some(s.retention.until(tenant, now)), ..PutOptions::default() };
    match s.client.put(&audit_key, serde_json::to_vec(&event).unwrap_or_default(), &options).await? {
        Put::Written { .. } => Ok(HoldSummary { event, audit_key }),
        Put::PreconditionFailed => Err(Error::Store("audit event key already taken; run the command again".into())),
    }
}

/// Every audit event in the bucket, oldest first.
pub(crate) async fn audit_events(s: &Inner) -> Result<Vec<HoldEvent>> {
    let mut out = Vec::new();
    for key in s.client.list_all(&s.layout.audits(), None).await? {
        if let Some(o) = s.client.get(&key).await? {
            out.push(serde_json::from_slice(&o.body).map_err(|e| Error::Store(format!("an audit event is not valid: {e}")))?);
        }
    }
    Ok(out)
}
