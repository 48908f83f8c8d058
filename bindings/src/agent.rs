//! `Agent`: the one object the app holds. Every decision is the core's; this file converts,
//! moves work off the caller's thread, turns panics and foreign exceptions into
//! `VerbatimError`, logs metadata, and tells the app's observer what changed.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use verbatim_core::error::ErrorKind as CoreKind;
use verbatim_core::model::Event;
use verbatim_core::policy::{self, Value};
use verbatim_core::upload::UploadOptions;
use verbatim_core::{Agent as CoreAgent, AgentOptions};

use crate::error::{ErrorKind, PolicyProblem, Result, VerbatimError};
use crate::feedback::{FeedbackItem, feedback_items};
use crate::logging;
use crate::runtime::{self, OnCancel};
use crate::telephony::TelephonyScan;
use crate::types::*;

/// The network the phone is on right now (Android `ConnectivityManager`, iOS `NWPathMonitor`).
/// Asked once at the start of each upload, on an agent thread.
#[uniffi::export(with_foreign)]
pub trait NetworkStateProvider: Send + Sync {
    fn current(&self) -> Result<NetworkState, VerbatimError>;
}

/// Receives what changed (policy applied or rejected, queue alerts, upload failures), so the
/// app need not poll `status()`. Called on an agent thread after the change: return quickly
/// (post to your own executor); an exception is logged and ignored.
#[uniffi::export(with_foreign)]
pub trait AgentObserver: Send + Sync {
    fn on_event(&self, notice: AgentNotice) -> Result<(), VerbatimError>;
}

struct Shared {
    core: CoreAgent,
    network: Arc<dyn NetworkStateProvider>,
    observer: Option<Arc<dyn AgentObserver>>,
    /// Last seen (queue_alert, queue_full), to notify transitions only.
    queue_flags: Mutex<(bool, bool)>,
}

/// The capture agent over one data directory.
#[derive(uniffi::Object)]
pub struct Agent {
    shared: Arc<Shared>,
}

impl Shared {
    fn network(&self) -> Result<NetworkState> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.network.current())) {
            Ok(Ok(state)) => Ok(state),
            Ok(Err(VerbatimError::Callback { detail })) => {
                tracing::warn!("network state provider threw");
                Err(VerbatimError::Callback { detail: format!("network state provider: {detail}") })
            }
            Ok(Err(e)) => {
                tracing::warn!("network state provider returned an error");
                Err(VerbatimError::Callback { detail: format!("network state provider: {e}") })
            }
            Err(_) => {
                tracing::error!("network state provider panicked");
                Err(VerbatimError::Callback { detail: "network state provider: panicked".into() })
            }
        }
    }

    fn notify(&self, notice: AgentNotice) {
        let Some(observer) = &self.observer else { return };
        match std::panic::catch_unwind(AssertUnwindSafe(|| observer.on_event(notice))) {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::warn!("observer threw; notice dropped"),
            Err(_) => tracing::error!("observer panicked; notice dropped"),
        }
    }

    /// Notices queue transitions since the last look.
    fn check_queue(&self) {
        let s = self.core.status();
        let (alert, full) = {
            let mut flags = self.queue_flags.lock().unwrap_or_else(|p| p.into_inner());
            let before = *flags;
            *flags = (s.queue_alert, s.queue_full);
            (!before.0 && s.queue_alert, (before.1, s.queue_full))
        };
        let (used_bytes, max_bytes) = (s.queue_bytes, s.queue_max_bytes);
        if alert {
            tracing::warn!(used_bytes, max_bytes, "queue alert threshold crossed");
            self.notify(AgentNotice::QueueAlert { used_bytes, max_bytes });
        }
        match full {
            (false, true) => {
                tracing::error!(used_bytes, max_bytes, "queue full: capture refused until upload frees space");
                self.notify(AgentNotice::QueueFull { used_bytes, max_bytes });
            }
            (true, false) => {
                tracing::info!(used_bytes, max_bytes, "queue accepts captures again");
                self.notify(AgentNotice::QueueRecovered { used_bytes, max_bytes });
            }
            _ => {}
        }
    }

    async fn capture(&self, event: Event) -> Result<CaptureOutcome> {
        let kind = event.kind();
        tracing::trace!(kind, "capture requested");
        let result = self.core.capture(event).await;
        match &result {
            Ok(verbatim_core::CaptureOutcome::Captured { first_seq, last_seq }) => {
                tracing::debug!(kind, first_seq, last_seq, "captured");
            }
            Ok(verbatim_core::CaptureOutcome::OutOfScope) => tracing::debug!(kind, "out of scope: dropped"),
            Err(e) => tracing::warn!(kind, error_kind = e.kind.as_str(), "capture refused"),
        }
        if matches!(&result, Ok(verbatim_core::CaptureOutcome::Captured { .. }))
            || matches!(&result, Err(e) if e.kind == CoreKind::QueueFull)
        {
            self.check_queue();
        }
        result.map_err(VerbatimError::from)
    }

    async fn apply_policy(&self, tree: Value) -> Result<Vec<PolicyProblem>> {
        let before = self.core.status().policy_fingerprint;
        match self.core.apply_policy(&tree).await {
            Ok(warnings) => {
                let status = self.core.status();
                if let Some(p) = self.core.policy() {
                    logging::set_level(p.log_level);
                }
                let policy_version = status.policy_version.clone().unwrap_or_default();
                let fingerprint = status.policy_fingerprint.clone().unwrap_or_default();
                if before.as_deref() != Some(fingerprint.as_str()) {
                    tracing::info!(
                        policy_version = policy_version.as_str(),
                        fingerprint = fingerprint.as_str(),
                        warnings = warnings.len(),
                        "policy applied"
                    );
                    self.notify(AgentNotice::PolicyApplied { policy_version, fingerprint, warnings: warnings.clone() });
                } else {
                    tracing::debug!(policy_version = policy_version.as_str(), "policy unchanged");
                }
                Ok(warnings)
            }
            Err(e) if e.kind == CoreKind::PolicyRejected => {
                let problems = e.problems;
                let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
                tracing::warn!(keys = keys.join(",").as_str(), "policy rejected; the policy in force stays");
                self.notify(AgentNotice::PolicyRejected { problems: problems.clone() });
                Err(VerbatimError::PolicyRejected { detail: e.detail, problems })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn upload(&self, deadline: Duration) -> Result<UploadReport> {
        let network = self.network()?;
        #[cfg(target_os = "android")]
        crate::android::check_ready(self.core.policy().as_deref())?;
        tracing::debug!(?network, deadline_ms = deadline.as_millis() as u64, "upload starting");
        let report = self.core.upload(UploadOptions::new(deadline, network)).await;
        tracing::info!(
            stopped = ?report.stopped,
            records = report.records_sent,
            bytes = report.bytes_sent,
            retries = report.retries,
            acked_through = report.acked_through,
            more_pending = report.more_pending,
            "upload finished"
        );
        if report.stopped == StopReason::Error {
            let error_kind = report.error_kind.unwrap_or(ErrorKind::Internal);
            tracing::warn!(error_kind = ?error_kind, "upload failed");
            self.notify(AgentNotice::UploadFailed { error_kind, detail: report.detail.clone().unwrap_or_default() });
        }
        self.check_queue();
        Ok(report)
    }
}

#[uniffi::export]
impl Agent {
    /// Opens (or creates) the agent's store in `data_dir` (an app-private directory) and
    /// re-applies the policy stored by an earlier run, without its device token (never
    /// stored): capture works at once, upload after `apply_policy` with the managed
    /// configuration, which the platform layer does at every start. The disk work runs on the
    /// agent's blocking pool.
    #[uniffi::constructor]
    pub async fn open(
        data_dir: String,
        network: Arc<dyn NetworkStateProvider>,
        observer: Option<Arc<dyn AgentObserver>>,
    ) -> Result<Arc<Agent>> {
        runtime::spawn_blocking("open", move || {
            let core = CoreAgent::open(Path::new(&data_dir), AgentOptions::default())?;
            if let Some(p) = core.policy() {
                logging::set_level(p.log_level);
            }
            let s = core.status();
            tracing::info!(configured = s.configured, queue_records = s.queue_records, last_seq = s.last_seq, "agent opened");
            let shared = Shared { core, network, observer, queue_flags: Mutex::new((s.queue_alert, s.queue_full)) };
            Ok(Arc::new(Agent { shared: Arc::new(shared) }))
        })
        .await
    }

    /// Validates and applies a managed configuration tree. Returns the warnings (unknown keys,
    /// placeholders) of an accepted policy; a bad policy throws `PolicyRejected` with every
    /// problem by key, and the policy in force (if any) stays.
    pub async fn apply_policy(&self, tree: PolicyValue) -> Result<Vec<PolicyProblem>> {
        let shared = self.shared.clone();
        runtime::spawn("apply_policy", OnCancel::Finish, async move { shared.apply_policy(tree.into()).await }).await
    }

    /// The MDM removed the managed configuration: call it when the platform finds none after
    /// a policy was in force. Records a `policy_withdrawn` event; capture then fails closed
    /// with `NotConfigured` (the app blocks business messaging) while what is queued keeps
    /// uploading. Nothing is deleted. `apply_policy` resumes capture. Returns false (nothing
    /// recorded) when no policy is in force or it was already withdrawn.
    pub async fn withdraw_policy(&self) -> Result<bool> {
        let shared = self.shared.clone();
        runtime::spawn("withdraw_policy", OnCancel::Finish, async move { Ok(shared.core.withdraw_policy().await?) }).await
    }

    /// Captures a message. Returns once it is durable (or dropped as out of scope).
    pub async fn capture_message(&self, event: MessageEvent) -> Result<CaptureOutcome> {
        let shared = self.shared.clone();
        runtime::spawn("capture_message", OnCancel::Finish, async move { shared.capture(Event::Message(event)).await }).await
    }

    /// Captures an edit (the new text; the original was captured already).
    pub async fn capture_edit(&self, event: EditEvent) -> Result<CaptureOutcome> {
        let shared = self.shared.clone();
        runtime::spawn("capture_edit", OnCancel::Finish, async move { shared.capture(Event::Edit(event)).await }).await
    }

    /// Captures an unsend / delete (as an event; nothing captured is ever deleted).
    pub async fn capture_unsend(&self, event: UnsendEvent) -> Result<CaptureOutcome> {
        let shared = self.shared.clone();
        runtime::spawn("capture_unsend", OnCancel::Finish, async move { shared.capture(Event::Unsend(event)).await }).await
    }

    /// Captures a reaction (or its removal).
    pub async fn capture_reaction(&self, event: ReactionEvent) -> Result<CaptureOutcome> {
        let shared = self.shared.clone();
        runtime::spawn("capture_reaction", OnCancel::Finish, async move { shared.capture(Event::Reaction(event)).await }).await
    }

    /// Captures an attachment, streaming the file at `event.path`.
    pub async fn capture_attachment(&self, event: AttachmentEvent) -> Result<CaptureOutcome> {
        let shared = self.shared.clone();
        runtime::spawn("capture_attachment", OnCancel::Finish, async move { shared.capture(Event::Attachment(event)).await })
            .await
    }

    /// Captures a call, with its recording file if `recording_path` is set.
    pub async fn capture_call(&self, event: CallEvent) -> Result<CaptureOutcome> {
        let shared = self.shared.clone();
        runtime::spawn("capture_call", OnCancel::Finish, async move { shared.capture(Event::Call(event)).await }).await
    }

    /// Starts a scan of the Android Telephony provider (Google Messages' archival mode): the
    /// phone's own number is the policy's first business line, the first scan's history its
    /// `backfill_days`. Throws `NotConfigured` without a policy in force for capture or without
    /// a business line. Feed the returned scan every page of the provider, then `finish` it.
    pub async fn begin_telephony_scan(&self) -> Result<Arc<TelephonyScan>> {
        TelephonyScan::begin(self.shared.core.clone()).await
    }

    /// Uploads pending records within `deadline_ms` on the network the app's
    /// `NetworkStateProvider` reports. Network and archive trouble is a report (`stopped`), not
    /// an exception; it throws only when the provider fails (`Callback`) or on a bug. Cancelling
    /// the caller stops the upload safely (nothing is deleted before the archive acknowledged).
    pub async fn upload(&self, deadline_ms: u64) -> Result<UploadReport> {
        let shared = self.shared.clone();
        runtime::spawn("upload", OnCancel::Abort, async move { shared.upload(Duration::from_millis(deadline_ms)).await }).await
    }

    /// Stops the upload running now, if any, at its next wait; its `upload` call then returns a
    /// report with `stopped` = `Cancelled`. Call it when the OS takes the background window
    /// back (an iOS BGTask's expiration handler): Swift task cancellation does not reach Rust.
    /// Safe: nothing is deleted before the archive acknowledged. From memory only; safe on the
    /// main thread.
    pub fn cancel_upload(&self) -> Result<()> {
        runtime::guard("cancel_upload", || {
            self.shared.core.cancel_upload();
            Ok(())
        })
    }

    /// Everything about the agent, from memory only: no disk, no lock held across I/O, safe on
    /// the main thread. That is why it is the one synchronous call.
    pub fn status(&self) -> Result<AgentStatus> {
        runtime::guard("status", || Ok(self.shared.core.status()))
    }

    /// The agent's health as MDM feedback entries (Android keyed app states, iOS managed app
    /// feedback), from memory only.
    pub fn feedback(&self) -> Result<Vec<FeedbackItem>> {
        let status = self.status()?;
        let now = self.shared.core.clock().now_ms();
        runtime::guard("feedback", || Ok(feedback_items(&status, now)))
    }

    /// Gives the agent its chance to record what is due (the heartbeat, the stale-pending
    /// alert). Call it from the platform's periodic background task; upload calls it too.
    pub async fn tick(&self) -> Result<()> {
        let shared = self.shared.clone();
        runtime::spawn("tick", OnCancel::Finish, async move { Ok(shared.core.tick().await?) }).await
    }

    /// The app let a communication through while capture was unavailable (only allowed when
    /// the policy's `fail_closed` is false): record it, metadata only, so it is evidenced.
    pub async fn report_uncaptured(&self, meta: EventMeta, direction: Direction, reason: String) -> Result<()> {
        let shared = self.shared.clone();
        runtime::spawn("report_uncaptured", OnCancel::Finish, async move {
            Ok(shared.core.report_uncaptured(&meta, direction, &reason).await?)
        })
        .await
    }

    /// The client notice to show or send in this conversation now, if the policy's
    /// `disclaimer_mode` says it is due. Memory only: safe on the main thread.
    pub fn disclaimer_due(&self, channel: Channel, conversation_id: String) -> Result<Option<String>> {
        runtime::guard("disclaimer_due", || Ok(self.shared.core.disclaimer_due(channel, &conversation_id)))
    }

    /// The app showed or sent the client notice: captured in the conversation.
    pub async fn disclaimer_shown(&self, meta: EventMeta) -> Result<CaptureOutcome> {
        let shared = self.shared.clone();
        runtime::spawn("disclaimer_shown", OnCancel::Finish, async move { Ok(shared.core.disclaimer_shown(meta).await?) }).await
    }

    /// Leaves the device: uploads everything within `deadline_ms`, then destroys the local
    /// store once the archive acknowledged all of it. With `force` (the MDM's selective wipe)
    /// the store is destroyed regardless, after recording that fact. The agent is closed after
    /// a shred.
    pub async fn unenroll(&self, deadline_ms: u64, force: bool) -> Result<UnenrollReport> {
        let shared = self.shared.clone();
        runtime::spawn("unenroll", OnCancel::Finish, async move {
            let network = shared.network()?;
            let options = UploadOptions::new(Duration::from_millis(deadline_ms), network);
            Ok(shared.core.unenroll(options, force).await?)
        })
        .await
    }

    /// Records a clean stop and releases the store; later calls fail with `Closed`. The data
    /// directory can be opened again at once. (Named `shutdown`, not `close`: the generated
    /// Kotlin class already has `close()`, which frees the native object.)
    pub async fn shutdown(&self) -> Result<()> {
        let shared = self.shared.clone();
        let handle = runtime::runtime()?.handle().clone();
        runtime::spawn_blocking("shutdown", move || {
            handle.block_on(shared.core.close())?;
            tracing::info!("agent closed");
            Ok(())
        })
        .await
    }
}

/// Validates a managed configuration tree without applying it (for an app that reports policy
/// problems to the MDM before, or without, applying).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PolicyCheck {
    pub valid: bool,
    pub problems: Vec<PolicyProblem>,
    pub warnings: Vec<PolicyProblem>,
}

/// Checks a policy tree (pure: no agent, no I/O).
#[uniffi::export]
pub fn check_policy(tree: PolicyValue) -> Result<PolicyCheck> {
    runtime::guard("check_policy", || {
        let tree: Value = tree.into();
        Ok(match policy::parse(&tree) {
            Ok(parsed) => PolicyCheck { valid: true, problems: Vec::new(), warnings: parsed.warnings },
            Err(rejected) => PolicyCheck { valid: false, problems: rejected.problems, warnings: rejected.warnings },
        })
    })
}

/// The agent library's version (the workspace version).
#[uniffi::export]
pub fn agent_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
