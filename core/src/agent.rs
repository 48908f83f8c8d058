//! The agent: the one object the app talks to. It applies the policy in force, checks each
//! event and its scope (rules in [`crate::model`]), turns it into records for the [`Queue`],
//! keeps the compliance evidence, starts upload sessions (the uploader sees only the queue, the
//! policy and the clock) and reports status.
//!
//! Threading: `open` and `read_batch` do disk I/O and are background-only. `capture`,
//! `apply_policy`, `acknowledge` and `close` are async: they wait for the writer thread without
//! blocking the caller's thread. `status` reads memory only and is safe anywhere.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use crate::block_on::block_on;
use crate::chain::StreamId;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::evidence::{Cause, Counted, EvidenceState};
use crate::model::{self, Channel, Event, in_scope, validate};
use crate::policy::{self, LogLevel, Policy, UploadSchedule, Value};
use crate::queue::{self, Config, NewRecords, Pending, Queue, Snapshot};
use crate::record::{AgentEvent, AttachmentHeader, CallRecord, Record, RecordBody};
use crate::seal::Sealing;
use crate::sources::{Mark, SourceState};
use crate::wire::Batch;

/// Why capture is refused after the MDM removed the managed configuration.
const WITHDRAWN_REASON: &str = "the MDM removed the managed configuration; capture resumes when one is pushed again";

/// A wall clock that moves this much more or less than the monotonic clock has jumped.
pub const CLOCK_JUMP_TOLERANCE_MS: i64 = 60_000;

pub struct AgentOptions {
    pub clock: Arc<dyn Clock>,
    /// Caps the store's size: SQLite then fails writes exactly as on a full disk. For tests
    /// and for emulating small devices; `None` in production.
    pub storage_limit_bytes: Option<u64>,
    /// How new epochs seal records: conversation keys (erasable per conversation, the
    /// default) or the original single epoch key, which an archive of before conversation
    /// keys understands. Not a policy setting: the original sealing exists for compatibility
    /// tests and for archives that cannot be upgraded yet.
    pub sealing: Sealing,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions { clock: Arc::new(SystemClock::default()), storage_limit_bytes: None, sealing: Sealing::ConversationKeys }
    }
}

/// What unenroll did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct UnenrollReport {
    /// The local store was destroyed.
    pub shredded: bool,
    /// It was destroyed although records were not acknowledged (`force`).
    pub forced: bool,
    /// Records the archive had not acknowledged when unenroll ended.
    pub unsent_records: u64,
    pub upload: Option<crate::upload::UploadReport>,
}

/// What became of a captured event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CaptureOutcome {
    /// Durable in the queue, sealed, under these sequence numbers.
    Captured { first_seq: u64, last_seq: u64 },
    /// Not business per policy: dropped before anything was written; only a counter remains.
    OutOfScope,
}

pub use crate::evidence::Counters;
pub use crate::upload::UploadStatus;

/// Everything about the agent, read from memory (safe on the main thread).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record), uniffi(name = "AgentStatus"))]
pub struct Status {
    /// This library's version, for MDM feedback.
    pub agent_version: String,
    /// A policy is in force for capture (not before the first, not after the MDM withdrew it).
    pub configured: bool,
    /// Why capture is refused when not configured (no policy yet, policy rejected, withdrawn).
    pub not_configured_reason: Option<String>,
    /// Captures are accepted right now (configured, queue not full, agent open).
    pub capture_enabled: bool,
    /// Policy `fail_closed`: when `capture_enabled` is false the app must block sending
    /// business messages. True when no policy is in force for capture (fail closed by default).
    pub fail_closed: bool,
    /// Policy `disclaimer_text`: the notice to show; None means the app's built-in notice.
    pub disclaimer_text: Option<String>,
    /// Policy `organization_name`: who archives the phone's own messages, for the notice the
    /// platform shows while it does (Android's Google Messages archival).
    pub organization_name: Option<String>,
    /// The policy's log level (the default, `Info`, before any policy).
    pub log_level: LogLevel,
    /// What the platform's upload scheduler should wait for; None without a policy. Kept while
    /// the policy is withdrawn: what is queued still has to go.
    pub upload_schedule: Option<UploadSchedule>,
    pub channels: Vec<Channel>,
    pub tenant_id: Option<String>,
    pub device_id: Option<String>,
    pub stream_id: Option<String>,
    pub policy_version: Option<String>,
    pub policy_fingerprint: Option<String>,
    pub queue_records: u64,
    pub queue_bytes: u64,
    pub queue_max_bytes: u64,
    pub queue_alert: bool,
    pub queue_full: bool,
    /// Pending records are older than the policy's `pending_alert_hours`.
    pub pending_stale: bool,
    /// Causes for which capture is unavailable right now, in their text form (`not_configured`,
    /// `policy_withdrawn`, `queue_full`, `disk_full`, `channel_disabled:<channel>`).
    pub unavailable: Vec<Cause>,
    pub last_heartbeat_ms: i64,
    pub oldest_pending_ms: Option<i64>,
    pub oldest_pending_age_ms: Option<i64>,
    pub last_seq: u64,
    pub acked_through: u64,
    pub epoch: Option<u64>,
    pub counters: Counters,
    pub upload: UploadStatus,
    /// When the app may start an upload on its own, soon after a capture while it is in the
    /// foreground (wall-clock ms; None: it should not, no policy or nothing queued). See
    /// `upload::due`. The OS's background windows are not affected.
    pub upload_due_ms: Option<i64>,
}

/// Notices wall-clock jumps by comparing it with the monotonic clock.
struct ClockWatch {
    wall_ms: i64,
    mono_ms: i64,
}

struct Inner {
    dir: PathBuf,
    queue: Queue,
    policy: RwLock<Option<Arc<Policy>>>,
    /// The MDM removed the managed configuration: the policy stays for uploading what is
    /// queued, capture is refused. Persisted as the open `policy_withdrawn` evidence window.
    withdrawn: AtomicBool,
    not_configured_reason: Mutex<String>,
    generated_device_id: String,
    clock: Arc<dyn Clock>,
    clock_watch: Mutex<ClockWatch>,
    uploader: crate::upload::UploaderState,
    evidence: Mutex<EvidenceState>,
    /// Key of capture sources' content digests ([`crate::sources`]).
    source_digest_key: [u8; 32],
    sealing: Sealing,
    closed: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: record a clean stop and wait for the writer to release the
        // store, so the directory can be opened again at once. The writer answers in
        // milliseconds; this waits on a thread park, safe inside any async runtime.
        self.queue.shut_down_blocking();
    }
}

/// The capture agent over one data directory. Cheap to clone; all clones share one agent.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Agent {
    /// Opens (or creates) the agent's store in `dir` and re-applies the stored policy, which
    /// has no device token: capture works at once; upload once the platform layer has applied
    /// the managed configuration again (it does at every start).
    /// Background-only: it opens and migrates the database.
    pub fn open(dir: &Path, options: AgentOptions) -> Result<Agent> {
        let clock = options.clock;
        let now = clock.now_ms();
        let (queue, info) = queue::open(dir, now, options.storage_limit_bytes)?;
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            queue,
            policy: RwLock::new(None),
            withdrawn: AtomicBool::new(false),
            not_configured_reason: Mutex::new("no policy has been applied".into()),
            generated_device_id: info.generated_device_id.clone(),
            clock_watch: Mutex::new(ClockWatch { wall_ms: now, mono_ms: clock.monotonic_ms() }),
            clock,
            uploader: Default::default(),
            evidence: Mutex::new(EvidenceState::load(info.evidence_json.as_deref(), now)),
            source_digest_key: digest_key(&info.source_digest_key)?,
            sealing: options.sealing,
            closed: AtomicBool::new(false),
        });
        let agent = Agent { inner };
        tracing::debug!(after_crash = info.after_crash, stored_policy = info.stored_policy.is_some(), "agent: store opened");
        if let Some((tree_json, fingerprint)) = &info.stored_policy {
            agent.restore_policy(tree_json, fingerprint)?;
        }
        let mut events =
            vec![AgentEvent::Started { agent_version: env!("CARGO_PKG_VERSION").to_string(), after_crash: info.after_crash }];
        if info.last_captured_ms - now > CLOCK_JUMP_TOLERANCE_MS {
            // The clock is behind the last capture of the previous run: it was set backwards.
            events.push(AgentEvent::ClockJumped {
                expected_ms: info.last_captured_ms,
                observed_ms: now,
                delta_ms: now - info.last_captured_ms,
            });
        }
        if agent.policy().is_none() {
            let reason = lock(&agent.inner.not_configured_reason).clone();
            lock(&agent.inner.evidence).open_window(Cause::NotConfigured, &reason, now, false);
        } else if lock(&agent.inner.evidence).windows.contains_key(&Cause::PolicyWithdrawn) {
            agent.inner.withdrawn.store(true, Ordering::Release);
            *lock(&agent.inner.not_configured_reason) = WITHDRAWN_REASON.into();
        }
        block_on(agent.save_evidence(events))?;
        block_on(agent.tick())?;
        Ok(agent)
    }

    /// Records `events` and saves the evidence state in the same commit.
    async fn save_evidence(&self, events: Vec<AgentEvent>) -> Result<()> {
        let now = self.inner.clock.now_ms();
        let json = lock(&self.inner.evidence).to_json();
        let meta = vec![(queue::EVIDENCE_META_KEY.to_string(), json)];
        self.inner.queue.record(events, meta, now).await.map(|_| ())
    }

    /// Gives the agent its chance to record what is due: the heartbeat, and the alert for
    /// pending data older than policy allows. Called at open, capture and upload; the platform's
    /// background task should call it too, so a phone that captures nothing still reports.
    pub async fn tick(&self) -> Result<()> {
        self.check_open()?;
        let Some(policy) = self.policy() else { return Ok(()) };
        let now = self.inner.clock.now_ms();
        let oldest = self.inner.queue.snapshot().oldest_pending_ms;
        let events = lock(&self.inner.evidence).due(&policy, oldest, now);
        if events.is_empty() {
            return Ok(());
        }
        self.save_evidence(events).await
    }

    /// Re-applies the policy persisted by an earlier run, without new audit events. It has no
    /// device token (never stored): capture works at once, upload once the platform layer has
    /// applied the managed configuration again. Keeps the stored fingerprint, so that the same
    /// configuration applied again is recognised as unchanged.
    fn restore_policy(&self, tree_json: &str, fingerprint: &str) -> Result<()> {
        let Some((restored, kept_json)) = policy::stored::parse_stored(tree_json) else {
            *lock(&self.inner.not_configured_reason) =
                "the stored policy is unreadable or no longer validates; push the policy again".into();
            return Ok(());
        };
        let mut config = self.config_for(&restored, kept_json, Vec::new());
        config.fingerprint = fingerprint.to_string();
        let now = self.inner.clock.now_ms();
        block_on(self.inner.queue.configure(config, now))?;
        *self.inner.policy.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(restored));
        Ok(())
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.dir
    }

    /// What the writer needs of a policy; `tree_json` is the tree to persist (no secrets).
    fn config_for(&self, p: &Policy, tree_json: String, events: Vec<AgentEvent>) -> Config {
        Config {
            tenant: p.tenant_id.clone(),
            device: p.device_id.clone().unwrap_or_else(|| self.inner.generated_device_id.clone()),
            archive_public_key: p.archive_public_key,
            archive_key_id: p.archive_key_id.clone(),
            queue_max_bytes: p.queue_max_mb as u64 * 1024 * 1024,
            alert_percent: p.queue_alert_percent,
            tree_json,
            fingerprint: hex::encode(p.fingerprint()),
            events,
            sealing: self.inner.sealing,
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Closed, "the agent is closed"));
        }
        Ok(())
    }

    /// The policy in force, if any (also while withdrawn: it still says where the queue goes).
    pub fn policy(&self) -> Option<Arc<Policy>> {
        self.inner.policy.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The policy capture runs under: none before a policy and after the MDM withdrew it.
    pub(crate) fn capture_policy(&self) -> Option<Arc<Policy>> {
        if self.inner.withdrawn.load(Ordering::Acquire) { None } else { self.policy() }
    }

    /// The MDM removed the managed configuration (the platform layer saw it disappear).
    /// Records a `policy_withdrawn` agent event and stops capture: from now on it fails closed
    /// with `NotConfigured`, as before the first policy, so the app blocks business messaging.
    /// Nothing is deleted: what is queued is the firm's record and keeps uploading under the
    /// withdrawn policy's archive settings. The state survives restarts; applying a
    /// configuration again (even the same one) resumes capture, and the interval is evidenced
    /// as a `capture_unavailable` window with cause `policy_withdrawn`. Destroying the store is
    /// unenroll's job, never this one's. Returns false (and records nothing) when no policy is
    /// in force or it was already withdrawn.
    pub async fn withdraw_policy(&self) -> Result<bool> {
        self.check_open()?;
        let Some(policy) = self.capture_policy() else { return Ok(false) };
        let now = self.inner.clock.now_ms();
        let snap = self.inner.queue.snapshot();
        let event = AgentEvent::PolicyWithdrawn {
            policy_version: policy.policy_version.clone(),
            fingerprint: snap.policy_fingerprint.clone().unwrap_or_default(),
            pending_records: snap.pending_count,
        };
        lock(&self.inner.evidence).open_window(Cause::PolicyWithdrawn, WITHDRAWN_REASON, now, false);
        // The event and the open window commit together: after a crash either both are
        // stored or neither is.
        self.save_evidence(vec![event]).await?;
        *lock(&self.inner.not_configured_reason) = WITHDRAWN_REASON.into();
        self.inner.withdrawn.store(true, Ordering::Release);
        tracing::info!(pending = snap.pending_count, "policy: withdrawn by the MDM; capture stops, the queue keeps uploading");
        Ok(true)
    }

    /// Validates and applies a managed configuration tree. On any problem the policy in force
    /// stays, the rejection is recorded as an agent event, and the error lists every problem by
    /// key. Returns the warnings (unknown keys) of an accepted policy.
    pub async fn apply_policy(&self, tree: &Value) -> Result<Vec<policy::Problem>> {
        self.check_open()?;
        let now = self.inner.clock.now_ms();
        let parsed = match policy::parse(tree) {
            Ok(parsed) => parsed,
            Err(rejected) => {
                let error = Error::policy_rejected(rejected.problems);
                self.record_rejection(&error).await?;
                return Err(error);
            }
        };
        let new = parsed.policy;
        let old = self.policy();
        let fingerprint = hex::encode(new.fingerprint());
        let unchanged = self.inner.queue.snapshot().policy_fingerprint.as_deref() == Some(fingerprint.as_str());
        let mut events = Vec::new();
        if !unchanged {
            events.push(AgentEvent::PolicyApplied {
                policy_version: new.policy_version.clone(),
                fingerprint: fingerprint.clone(),
                archive_key_id: new.archive_key_id.clone(),
            });
            let before: Vec<Channel> = old.as_ref().map(|p| p.capture_channels.iter().copied().collect()).unwrap_or_default();
            let enabled: Vec<Channel> = new.capture_channels.iter().copied().filter(|c| !before.contains(c)).collect();
            let disabled: Vec<Channel> = before.iter().copied().filter(|c| !new.capture_channels.contains(c)).collect();
            if !enabled.is_empty() || !disabled.is_empty() {
                events.push(AgentEvent::CaptureChannels { enabled, disabled });
            }
        }
        let config = self.config_for(&new, policy::stored::persistable_json(tree), events);
        match self.inner.queue.configure(config, now).await {
            Ok(_) => {
                tracing::info!(fingerprint = &fingerprint[..16], unchanged, warnings = parsed.warnings.len(), "policy: applied");
                let channels = new.capture_channels.clone();
                *self.inner.policy.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(new));
                self.inner.withdrawn.store(false, Ordering::Release);
                self.evidence_after_policy(old.as_deref(), &channels, now).await?;
                Ok(parsed.warnings)
            }
            Err(e) if e.kind == ErrorKind::PolicyRejected => {
                self.record_rejection(&e).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Records a rejected policy in the chain (its problems' keys and kinds: a detail could
    /// quote a value) and, when no policy is in force, says why capture is refused.
    async fn record_rejection(&self, error: &Error) -> Result<()> {
        tracing::info!(problems = error.problems.len(), "policy: rejected; the policy in force stays");
        let problems = error.problems.iter().map(|p| format!("{}: {:?}", p.key, p.kind)).collect();
        self.record_agent_events(vec![AgentEvent::PolicyRejected { problems }]).await?;
        self.note_rejection(error.problems.len());
        Ok(())
    }

    fn note_rejection(&self, problems: usize) {
        if self.policy().is_none() {
            let reason = format!("the pushed policy was rejected ({problems} problems)");
            if let Some(w) = lock(&self.inner.evidence).windows.get_mut(&Cause::NotConfigured) {
                w.detail = reason.clone();
            }
            *lock(&self.inner.not_configured_reason) = reason;
        }
    }

    /// A policy is in force: capture is available again, and channels switched off or on by
    /// policy open or close their own windows.
    async fn evidence_after_policy(
        &self,
        old: Option<&Policy>,
        channels: &std::collections::BTreeSet<Channel>,
        now: i64,
    ) -> Result<()> {
        let events = {
            let mut ev = lock(&self.inner.evidence);
            let mut closing = vec![Cause::NotConfigured, Cause::PolicyWithdrawn];
            if let Some(old) = old {
                for c in old.capture_channels.difference(channels) {
                    ev.open_window(Cause::ChannelDisabled(*c), "switched off by policy", now, false);
                }
            }
            closing.extend(channels.iter().map(|c| Cause::ChannelDisabled(*c)));
            ev.close_windows(closing, now)
        };
        self.save_evidence(events).await
    }

    /// Records agent events in the chain (or, before any policy, in the deferred table).
    pub async fn record_agent_events(&self, events: Vec<AgentEvent>) -> Result<()> {
        let now = self.inner.clock.now_ms();
        self.inner.queue.record(events, Vec::new(), now).await.map(|_| ())
    }

    /// Captures one event. Returns once it is durable (or dropped as out of scope).
    pub async fn capture(&self, event: Event) -> Result<CaptureOutcome> {
        self.capture_with(event, Vec::new(), None).await
    }

    /// Capture, with a source's marks, and for an attachment whose bytes are not there, the
    /// reason it is recorded as omitted instead.
    async fn capture_with(&self, event: Event, marks: Vec<Mark>, omitted: Option<&str>) -> Result<CaptureOutcome> {
        self.check_open()?;
        let Some(policy) = self.capture_policy() else {
            {
                let cause =
                    if self.inner.withdrawn.load(Ordering::Acquire) { Cause::PolicyWithdrawn } else { Cause::NotConfigured };
                let mut ev = lock(&self.inner.evidence);
                ev.count(Counted::RefusedNotConfigured);
                ev.count_in_window(cause);
            }
            let reason = lock(&self.inner.not_configured_reason).clone();
            return Err(Error::new(ErrorKind::NotConfigured, format!("capture refused: agent not configured ({reason})")));
        };
        let now = self.inner.clock.now_ms();
        if let Err(e) = validate(&event, now) {
            tracing::debug!(kind = event.kind(), error = e.kind.as_str(), "capture: invalid event refused");
            lock(&self.inner.evidence).count(Counted::Invalid);
            return Err(e);
        }
        if !in_scope(&policy, &event) {
            tracing::trace!(kind = event.kind(), channel = event.meta().channel.as_str(), "capture: out of scope, dropped");
            {
                let mut ev = lock(&self.inner.evidence);
                ev.count(Counted::OutOfScope);
                ev.count_in_window(Cause::ChannelDisabled(event.meta().channel));
            }
            // Nothing of the event is stored, but a source remembers that it saw it.
            if !marks.is_empty() {
                self.save_marks(marks).await?;
            }
            return Ok(CaptureOutcome::OutOfScope);
        }
        if let Some(jump) = self.check_clock(now) {
            self.record_agent_events(vec![jump]).await?;
        }
        self.tick().await?;
        let kind = event.kind();
        let records = records_of(&policy, event, now, omitted)?;
        let result = self.inner.queue.append_marked(records, marks).await;
        match result {
            Ok(o) => {
                tracing::trace!(kind, first_seq = o.first_seq, last_seq = o.last_seq, "capture: durable");
                let closed = {
                    let mut ev = lock(&self.inner.evidence);
                    ev.count(Counted::Captured);
                    ev.close_windows([Cause::QueueFull, Cause::DiskFull], now)
                };
                if !closed.is_empty() {
                    self.save_evidence(closed).await?;
                }
                Ok(CaptureOutcome::Captured { first_seq: o.first_seq, last_seq: o.last_seq })
            }
            Err(e) => {
                tracing::debug!(kind, error = e.kind.as_str(), "capture: failed");
                let cause = match e.kind {
                    ErrorKind::QueueFull => Some((Cause::QueueFull, Counted::RefusedQueueFull)),
                    ErrorKind::DiskFull => Some((Cause::DiskFull, Counted::RefusedDiskFull)),
                    _ => None,
                };
                if let Some((cause, counted)) = cause {
                    let new = {
                        let mut ev = lock(&self.inner.evidence);
                        ev.count(counted);
                        ev.open_window(cause, &e.detail, now, true)
                    };
                    if new {
                        // On a full disk this save fails too; the window stays in memory and is
                        // saved with the next evidence that can be written.
                        let _ = self.save_evidence(Vec::new()).await;
                    }
                }
                Err(e)
            }
        }
    }

    /// [`Agent::capture`] for a capture source: `marks` (what the source has now seen, see
    /// [`crate::sources`]) commit in the same transaction as the event's records, so a crash
    /// leaves both or neither. An out-of-scope event stores nothing but the marks; a refused
    /// capture (not configured, queue full, invalid) stores nothing at all, and the source
    /// offers the event again at its next scan.
    pub async fn capture_marked(&self, event: Event, marks: Vec<Mark>) -> Result<CaptureOutcome> {
        self.capture_with(event, marks, None).await
    }

    /// A capture source saw an attachment whose bytes are not there (a file not downloaded
    /// yet): records it as `attachment_omitted` with `reason` (metadata only), checked and
    /// scoped like any capture, with the source's marks in the same commit. If the file
    /// appears later the source captures the attachment itself under the same id.
    pub async fn capture_attachment_omitted(
        &self,
        attachment: model::Attachment,
        reason: &str,
        marks: Vec<Mark>,
    ) -> Result<CaptureOutcome> {
        self.capture_with(Event::Attachment(attachment), marks, Some(reason)).await
    }

    /// Saves a capture source's marks with nothing captured (a first scan's baseline, rows
    /// seen and deliberately left alone).
    pub async fn save_marks(&self, marks: Vec<Mark>) -> Result<()> {
        self.check_open()?;
        self.inner.queue.save_marks(marks, self.inner.clock.now_ms()).await
    }

    /// Everything a capture source saved: key → value. Reads the store: background-only.
    pub fn source_state(&self, source: &str) -> Result<SourceState> {
        self.check_open()?;
        self.inner.queue.source_state(source)
    }

    /// A capture source cannot read the store it captures from (Messages' database missing,
    /// Full Disk Access revoked): opens the could-not-record window `source_unavailable:
    /// <source>`, which status and MDM feedback show (`verbatim.unavailable`) and which
    /// survives restarts. Returns whether the window was newly opened.
    pub async fn source_unavailable(&self, source: &'static str, detail: &str) -> Result<bool> {
        self.check_open()?;
        let now = self.inner.clock.now_ms();
        let new = lock(&self.inner.evidence).open_window(Cause::SourceUnavailable(source), detail, now, false);
        if new {
            self.save_evidence(Vec::new()).await?;
        }
        Ok(new)
    }

    /// The source can read its store again: closes its window, recording the interval as a
    /// `capture_unavailable` agent event in the same commit. Returns whether one was open.
    pub async fn source_available(&self, source: &'static str) -> Result<bool> {
        self.check_open()?;
        let now = self.inner.clock.now_ms();
        let events = lock(&self.inner.evidence).close_windows([Cause::SourceUnavailable(source)], now);
        if events.is_empty() {
            return Ok(false);
        }
        self.save_evidence(events).await?;
        Ok(true)
    }

    /// When a capture source's window opened, if it is open (Unix ms). Memory only.
    pub fn source_unavailable_since(&self, source: &'static str) -> Option<i64> {
        lock(&self.inner.evidence).windows.get(&Cause::SourceUnavailable(source)).map(|w| w.start_ms)
    }

    /// One value a capture source saved, by key. Reads the store: background-only.
    pub fn source_value(&self, source: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        self.inner.queue.source_value(source, key)
    }

    /// A page of the keys a capture source saved: `after < key < before`, in key order, at most
    /// `limit`, so a source can walk a large state in bounded memory (values by
    /// [`Agent::source_value`]). Reads the store: background-only.
    pub fn source_keys(&self, source: &str, after: &str, before: &str, limit: usize) -> Result<Vec<String>> {
        self.check_open()?;
        self.inner.queue.source_keys(source, after, before, limit)
    }

    /// A keyed hash of `bytes` (HMAC-SHA256 under this store's random digest key, separated by
    /// source), for a source to remember content by fingerprint, never by text.
    pub fn content_digest(&self, source: &str, bytes: &[u8]) -> [u8; 32] {
        crate::sources::digest(&self.inner.source_digest_key, source, bytes)
    }

    /// Blocking form of [`Agent::capture`], for background threads.
    pub fn capture_blocking(&self, event: Event) -> Result<CaptureOutcome> {
        block_on(self.capture(event))
    }

    fn check_clock(&self, now: i64) -> Option<AgentEvent> {
        let mono = self.inner.clock.monotonic_ms();
        let mut watch = lock(&self.inner.clock_watch);
        let expected = watch.wall_ms + (mono - watch.mono_ms);
        watch.wall_ms = now;
        watch.mono_ms = mono;
        let delta = now - expected;
        (delta.abs() > CLOCK_JUMP_TOLERANCE_MS).then_some(AgentEvent::ClockJumped {
            expected_ms: expected,
            observed_ms: now,
            delta_ms: delta,
        })
    }

    /// The archive acknowledged everything through `through`: delete it from the queue.
    pub async fn acknowledge(&self, through: u64) -> Result<()> {
        self.check_open()?;
        self.inner.queue.acknowledge(through).await
    }

    /// The next batch to upload after what was acknowledged, at most `max_bytes` (but always at
    /// least one record). Background-only: it reads the database.
    pub fn read_batch(&self, max_bytes: usize) -> Result<Option<Batch>> {
        self.check_open()?;
        self.inner.queue.read_batch(max_bytes)
    }

    /// The queue, for reading it as the archive will receive it (tools and tests); the app
    /// needs only the agent's own methods.
    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    /// The stream this agent writes, once a policy is in force.
    pub fn stream(&self) -> Option<StreamId> {
        self.inner.queue.stream()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.inner.queue.snapshot()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Everything about the agent's state, from memory: safe on any thread.
    pub fn status(&self) -> Status {
        let snap = self.snapshot();
        let policy = self.capture_policy();
        let uploading_under = self.policy();
        let now = self.inner.clock.now_ms();
        let configured = policy.is_some();
        // One lock at a time: a guard in a struct expression lives to the end of the statement.
        let (pending_stale, unavailable, last_heartbeat_ms, counters) = {
            let ev = lock(&self.inner.evidence);
            (ev.pending_alert_raised, ev.windows.keys().cloned().collect(), ev.last_heartbeat_ms, ev.since_open.clone())
        };
        let upload = self.inner.uploader.status();
        // Under the policy uploads run under: also while withdrawn (the queue keeps uploading).
        let upload_due_ms = self.inner.uploader.app_upload_due_ms(
            uploading_under.as_deref(),
            snap.pending_count,
            now,
            self.inner.clock.monotonic_ms(),
        );
        let not_configured_reason = (!configured).then(|| lock(&self.inner.not_configured_reason).clone());
        Status {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            configured,
            not_configured_reason,
            capture_enabled: configured && !snap.full && !self.inner.closed.load(Ordering::Acquire),
            fail_closed: policy.as_ref().is_none_or(|p| p.fail_closed),
            disclaimer_text: policy.as_ref().and_then(|p| p.disclaimer_text.clone()),
            organization_name: policy.as_ref().and_then(|p| p.organization_name.clone()),
            log_level: uploading_under.as_ref().map_or(LogLevel::Info, |p| p.log_level),
            upload_schedule: uploading_under.as_ref().map(|p| p.upload_schedule()),
            channels: policy.as_ref().map(|p| p.capture_channels.iter().copied().collect()).unwrap_or_default(),
            tenant_id: snap.stream.as_ref().map(|s| s.tenant.clone()),
            device_id: snap.stream.as_ref().map(|s| s.device.clone()),
            stream_id: snap.stream.as_ref().map(|s| s.stream.clone()),
            policy_version: policy.as_ref().map(|p| p.policy_version.clone()),
            policy_fingerprint: snap.policy_fingerprint.clone(),
            queue_records: snap.pending_count,
            queue_bytes: snap.pending_bytes,
            queue_max_bytes: snap.queue_max_bytes,
            queue_alert: snap.alert_raised,
            queue_full: snap.full,
            pending_stale,
            unavailable,
            last_heartbeat_ms,
            oldest_pending_ms: snap.oldest_pending_ms,
            oldest_pending_age_ms: snap.oldest_pending_ms.map(|t| (now - t).max(0)),
            last_seq: snap.last_seq,
            acked_through: snap.acked_through,
            epoch: snap.epoch,
            counters,
            upload,
            upload_due_ms,
        }
    }

    /// Uploads pending records to the archive within `options.deadline` on the network the
    /// platform reports. Must run inside a tokio runtime (the bindings and CLI provide one).
    pub async fn upload(&self, options: crate::upload::UploadOptions) -> crate::upload::UploadReport {
        if let Err(e) = self.check_open() {
            return crate::upload::UploadReport::failed(&e);
        }
        // Upload is the OS's regular chance to run: record what is due (the heartbeat) first,
        // so it goes out now if the network allows.
        let _ = self.tick().await;
        let outbox =
            crate::upload::Outbox { queue: self.inner.queue.clone(), policy: self.policy(), clock: self.inner.clock.clone() };
        crate::upload::run(&outbox, &self.inner.uploader, options).await
    }

    /// Stops the upload running now, if any, at its next wait; it then reports `Cancelled`.
    /// For the OS taking a background window back (an iOS BGTask's expiration). Safe: nothing
    /// is deleted before the archive acknowledged it. An upload started afterwards runs
    /// normally. From memory only; safe on any thread.
    pub fn cancel_upload(&self) {
        self.inner.uploader.cancel();
    }

    /// The host app let a communication through while capture was unavailable (possible only
    /// when the policy's `fail_closed` is false, or before any policy): record it, metadata
    /// only, so it is evidenced rather than silent.
    pub async fn report_uncaptured(&self, meta: &model::EventMeta, direction: model::Direction, reason: &str) -> Result<()> {
        self.check_open()?;
        let field = |name: &str, v: &str| {
            if v.trim().is_empty() {
                Err(Error::new(ErrorKind::InvalidEvent, format!("uncaptured report: {name} is empty")))
            } else {
                Ok(())
            }
        };
        field("conversation_id", &meta.conversation_id)?;
        field("source_id", &meta.source_id)?;
        field("reason", reason)?;
        let fail_closed = self.policy().is_none_or(|p| p.fail_closed);
        self.record_agent_events(vec![AgentEvent::UncapturedCommunication {
            channel: meta.channel,
            conversation_id: meta.conversation_id.clone(),
            source_id: meta.source_id.clone(),
            source_time_ms: meta.source_time_ms,
            direction,
            reason: reason.to_string(),
            fail_closed,
        }])
        .await
    }

    /// The client notice the app must show or send in this conversation now, if any (policy
    /// `disclaimer_text` and `disclaimer_mode`). Memory only.
    pub fn disclaimer_due(&self, channel: Channel, conversation_id: &str) -> Option<String> {
        let policy = self.capture_policy()?;
        let now = self.inner.clock.now_ms();
        let due = lock(&self.inner.evidence).disclaimer_due(&policy, channel, conversation_id, now);
        if due { policy.disclaimer_text.clone() } else { None }
    }

    /// The app showed or sent the client notice in a conversation: capture that in the
    /// conversation and remember it for the schedule.
    pub async fn disclaimer_shown(&self, meta: model::EventMeta) -> Result<CaptureOutcome> {
        self.check_open()?;
        let Some(policy) = self.capture_policy() else {
            return Err(Error::new(ErrorKind::NotConfigured, "no policy in force"));
        };
        let Some(text) = policy.disclaimer_text.clone() else {
            return Err(Error::new(ErrorKind::InvalidEvent, "disclaimer: the policy sets no disclaimer_text"));
        };
        // Validated like a reaction: ids present, time sane.
        let probe = Event::Unsend(model::Unsend { meta: meta.clone(), target_message_id: "-".into(), actor: "-".into() });
        validate(&probe, self.inner.clock.now_ms())?;
        if !in_scope(&policy, &probe) {
            return Ok(CaptureOutcome::OutOfScope);
        }
        let now = self.inner.clock.now_ms();
        let (channel, conversation) = (meta.channel, meta.conversation_id.clone());
        let body = RecordBody::DisclaimerShown { meta, mode: policy.disclaimer_mode, text };
        let records = vec![Pending::new(&Record::new(now, body))];
        let o = self.inner.queue.append(NewRecords::Records(records)).await?;
        lock(&self.inner.evidence).disclaimer_shown(channel, &conversation, now);
        self.save_evidence(Vec::new()).await?;
        Ok(CaptureOutcome::Captured { first_seq: o.first_seq, last_seq: o.last_seq })
    }

    /// Leaves the device: records a final agent event, uploads everything within the options'
    /// deadline, and only when the archive has acknowledged all of it destroys the local store
    /// (crypto-shred: the database files go, and every epoch key lived only in memory). If the
    /// archive cannot be reached the data is kept and the report says so. With `force` (the
    /// MDM's selective wipe) the store is destroyed regardless, after recording and trying to
    /// send that fact. After a shred the agent is closed.
    pub async fn unenroll(&self, options: crate::upload::UploadOptions, force: bool) -> Result<UnenrollReport> {
        self.check_open()?;
        let pending = self.inner.queue.snapshot().pending_count;
        if self.policy().is_some() {
            self.record_agent_events(vec![AgentEvent::Unenrolling { forced: force, pending_records: pending }]).await?;
        }
        let upload = if self.policy().is_some() { Some(self.upload(options).await) } else { None };
        let left = self.inner.queue.snapshot().pending_count;
        if left > 0 && !force {
            return Ok(UnenrollReport { shredded: false, forced: false, unsent_records: left, upload });
        }
        self.close().await?;
        for name in queue::STORE_FILES {
            match std::fs::remove_file(self.inner.dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(UnenrollReport { shredded: true, forced: force && left > 0, unsent_records: left, upload })
    }

    /// Marks a clean shutdown and stops the writer. Later calls fail with `Closed`.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let _ = self.save_evidence(Vec::new()).await;
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.queue.shut_down().await?;
        Ok(())
    }
}

/// Why an attachment is archived as metadata only, or None when it is captured in full.
/// The store's source digest key, from its hex form in `meta`.
fn digest_key(hex_key: &str) -> Result<[u8; 32]> {
    hex::decode(hex_key)
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| Error::new(ErrorKind::Corrupt, "the store's source digest key is malformed; run `verbatim recover`"))
}

fn omission_reason(policy: &Policy, enabled: bool, disabled_reason: &str, path: &Path) -> std::result::Result<u64, String> {
    if !enabled {
        return Err(disabled_reason.to_string());
    }
    let size = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return Err("not a regular file".to_string()),
        Err(e) => return Err(format!("file unreadable: {}", e.kind())),
    };
    let max = policy.max_attachment_mb as u64 * 1024 * 1024;
    if size > max {
        return Err(format!("larger than max_attachment_mb ({size} bytes > {} MB)", policy.max_attachment_mb));
    }
    Ok(size)
}

/// Turns an in-scope, valid event into the records that store it.
fn records_of(policy: &Policy, event: Event, now: i64, omitted: Option<&str>) -> Result<NewRecords> {
    let simple = |body: RecordBody| vec![Pending::new(&Record::new(now, body))];
    Ok(match event {
        Event::Message(m) => NewRecords::Records(simple(RecordBody::Message(m))),
        Event::Edit(e) => NewRecords::Records(simple(RecordBody::Edit(e))),
        Event::Unsend(u) => NewRecords::Records(simple(RecordBody::Unsend(u))),
        Event::Reaction(r) => NewRecords::Records(simple(RecordBody::Reaction(r))),
        Event::Attachment(a) => {
            let mut header = AttachmentHeader {
                meta: a.meta,
                attachment_id: String::new(),
                message_id: a.message_id,
                direction: a.direction,
                sender: a.sender,
                file_name: a.file_name,
                mime_type: a.mime_type,
                size: 0,
            };
            header.attachment_id = header.meta.source_id.clone();
            if let Some(reason) = omitted {
                return Ok(NewRecords::Records(simple(RecordBody::AttachmentOmitted { header, reason: reason.to_string() })));
            }
            match omission_reason(policy, policy.capture_attachments, "attachments disabled by policy", &a.path) {
                Ok(size) => {
                    header.size = size;
                    NewRecords::Attachment { lead: Vec::new(), header: Box::new(header), path: a.path, captured_ms: now }
                }
                Err(reason) if reason.starts_with("file unreadable") || reason == "not a regular file" => {
                    return Err(Error::new(ErrorKind::File, format!("attachment: {reason}")));
                }
                Err(reason) => NewRecords::Records(simple(RecordBody::AttachmentOmitted { header, reason })),
            }
        }
        Event::Call(c) => {
            let recording_id = c.recording_path.as_ref().map(|_| format!("recording:{}", c.meta.source_id));
            let call = CallRecord {
                meta: c.meta.clone(),
                direction: c.direction,
                participants: c.participants.clone(),
                started_ms: c.started_ms,
                ended_ms: c.ended_ms,
                outcome: c.outcome,
                recording_id: recording_id.clone(),
            };
            let lead = simple(RecordBody::Call(call));
            match (c.recording_path, recording_id) {
                (Some(path), Some(id)) => {
                    let mut header = AttachmentHeader {
                        meta: c.meta,
                        attachment_id: id,
                        message_id: None,
                        direction: c.direction,
                        sender: c.participants.first().cloned().unwrap_or_default(),
                        file_name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                        mime_type: c.recording_mime_type.unwrap_or_else(|| "application/octet-stream".into()),
                        size: 0,
                    };
                    match omission_reason(policy, policy.capture_call_recordings, "call recordings disabled by policy", &path) {
                        Ok(size) => {
                            header.size = size;
                            NewRecords::Attachment { lead, header: Box::new(header), path, captured_ms: now }
                        }
                        Err(reason) => {
                            let mut records = lead;
                            records.push(Pending::new(&Record::new(now, RecordBody::AttachmentOmitted { header, reason })));
                            NewRecords::Records(records)
                        }
                    }
                }
                _ => NewRecords::Records(lead),
            }
        }
    })
}
