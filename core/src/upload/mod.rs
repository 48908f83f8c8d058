//! The uploader: drains the sealed queue to the archive in sequence order, one bounded batch at
//! a time, within a deadline the OS granted (seconds to minutes of background time), on networks
//! policy allows. Records are deleted only through what the archive acknowledged, so an
//! interrupted upload loses nothing and never resends what was acknowledged.

mod due;
mod http;
pub mod network;
pub mod retry;
pub mod tls;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use serde::Serialize;

pub use due::APP_UPLOAD_SPACING;
pub use network::NetworkState;
pub use retry::{Pause, tokio_pause};

use crate::clock::Clock;
use crate::error::{Error, ErrorKind};
use crate::policy::Policy;
use crate::queue::Queue;
use crate::record::AgentEvent;
use http::{Answer, Client};

/// Longest single request, whatever the deadline.
const MAX_REQUEST: Duration = Duration::from_secs(30);

/// After the archive refused the key the records are sealed to, sessions within this time
/// stop at once without asking again: a configuration fault is fixed by a person (a corrected
/// policy, or the archive adding the key), not by the next background window, and asking every
/// window would only spend the phone's radio and battery. A new policy ends the wait at once.
pub const ARCHIVE_KEY_REFUSAL_WAIT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Everything queued was acknowledged.
    Done,
    /// The deadline came (or a retry would pass it); the rest waits for the next window.
    Deadline,
    /// No network.
    Offline,
    /// A network policy forbids (metered, roaming).
    NotAllowed,
    /// A failure that needs attention (see `error_kind`, `detail`).
    Error,
    /// [`crate::Agent::cancel_upload`] was called (the OS took the background window back);
    /// the rest waits for the next window.
    Cancelled,
    /// Another upload session of this agent is running; this one did nothing (not an error:
    /// two schedulers, say the app's and the OS's, asked at once).
    AlreadyRunning,
}

/// How an upload session ended. Upload never fails for network or archive trouble: that is a
/// report (`stopped`), because the platform job must reschedule either way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct UploadReport {
    pub stopped: StopReason,
    /// Why it stopped, in words (no secrets, no content).
    pub detail: Option<String>,
    /// Kind of the error when `stopped` is `Error`.
    pub error_kind: Option<ErrorKind>,
    pub records_sent: u64,
    pub bytes_sent: u64,
    pub batches: u64,
    /// Records the archive already held (resent after an interruption); no effect there.
    pub duplicates: u64,
    pub retries: u32,
    pub acked_through: u64,
    pub elapsed_ms: u64,
    /// Records are still queued after this session.
    pub more_pending: bool,
    /// The platform job should run again soon rather than at its next regular interval: the
    /// deadline cut the session short with records still queued. (Offline, forbidden networks
    /// and failures that need a person wait for the regular schedule.)
    pub retry_soon: bool,
}

impl UploadReport {
    /// A session's report before it sent anything.
    fn nothing_yet() -> UploadReport {
        UploadReport {
            stopped: StopReason::Done,
            detail: None,
            error_kind: None,
            records_sent: 0,
            bytes_sent: 0,
            batches: 0,
            duplicates: 0,
            retries: 0,
            acked_through: 0,
            elapsed_ms: 0,
            more_pending: false,
            retry_soon: false,
        }
    }

    /// The report of a session that could not start.
    pub(crate) fn failed(e: &Error) -> UploadReport {
        UploadReport {
            stopped: StopReason::Error,
            detail: Some(e.detail.clone()),
            error_kind: Some(e.kind),
            ..Self::nothing_yet()
        }
    }
}

pub struct UploadOptions {
    /// Time the OS granted; the report comes back before it runs out.
    pub deadline: Duration,
    pub network: NetworkState,
    pub pause: Arc<dyn Pause>,
}

impl UploadOptions {
    pub fn new(deadline: Duration, network: NetworkState) -> Self {
        UploadOptions { deadline, network, pause: tokio_pause() }
    }
}

/// What a session works with, and all the uploader knows of the agent: the queue (batches to
/// read, acknowledgements to make, refusals to record), the policy in force when the session
/// started, the clock.
pub(crate) struct Outbox {
    pub queue: Queue,
    pub policy: Option<Arc<Policy>>,
    pub clock: Arc<dyn Clock>,
}

impl Outbox {
    /// Records agent events (a refusal, damage found) in the chain, so the archive learns of
    /// them once uploads resume.
    async fn record(&self, events: Vec<AgentEvent>) {
        let _ = self.queue.record(events, Vec::new(), self.clock.now_ms()).await;
    }
}

/// The uploader's part of the agent's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record), uniffi(name = "UploadState"))]
pub struct UploadStatus {
    pub last_attempt_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    pub last_error: Option<String>,
    pub next_retry_ms: Option<i64>,
    /// The archive refused the archive key the queued records are sealed to (see
    /// [`crate::ErrorKind::UnknownArchiveKey`]): uploads wait, every record is kept.
    pub archive_key_refused: bool,
}

/// What the uploader keeps between sessions.
#[derive(Default)]
pub(crate) struct UploaderState {
    status: Mutex<UploadStatus>,
    client: Mutex<Option<(String, Arc<Client>)>>,
    session: tokio::sync::Mutex<()>,
    cursor_checked: AtomicBool,
    last_refusal: Mutex<Option<String>>,
    last_corrupt: Mutex<Option<String>>,
    /// The archive's refusal of the archive key: when (monotonic ms), under which policy.
    key_refusal: Mutex<Option<KeyRefusal>>,
    /// Bumped by [`UploaderState::cancel`]: a session started before the bump stops at its next
    /// wait; one started after it runs normally.
    cancel_generation: AtomicU64,
    cancelled: tokio::sync::Notify,
    /// How the last session of this process ended (for [`UploaderState::app_upload_due_ms`]).
    last_session: Mutex<Option<due::LastSession>>,
}

struct KeyRefusal {
    error: Error,
    at_ms: i64,
    policy_fingerprint: String,
}

impl UploaderState {
    pub(crate) fn status(&self) -> UploadStatus {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Until an upload succeeds, the last refusal of the archive key stands.
        status.archive_key_refused = self.key_refusal.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        status
    }

    fn update_status(&self, f: impl FnOnce(&mut UploadStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// When the app may start an upload on its own (wall-clock ms), or None when it should
    /// not: see [`due::app_upload_due_ms`]. `policy`: the one uploads run under.
    pub(crate) fn app_upload_due_ms(
        &self,
        policy: Option<&Policy>,
        pending_records: u64,
        now_ms: i64,
        mono_ms: i64,
    ) -> Option<i64> {
        let policy = policy?;
        if pending_records == 0 {
            return None;
        }
        let fingerprint = policy.fingerprint_hex();
        let next_retry_ms = self.status.lock().unwrap_or_else(|p| p.into_inner()).next_retry_ms;
        let refusal =
            self.key_refusal.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|r| (r.at_ms, r.policy_fingerprint.clone()));
        let last_session = self.last_session.lock().unwrap_or_else(|p| p.into_inner()).clone();
        due::app_upload_due_ms(&due::Inputs {
            now_ms,
            mono_ms,
            pending_records,
            policy: Some((Duration::from_secs(u64::from(policy.upload_interval_minutes) * 60), &fingerprint)),
            next_retry_ms,
            key_refusal: refusal.as_ref().map(|(at, f)| (*at, f.as_str())),
            last_session: last_session.as_ref(),
        })
    }

    /// The archive's recent refusal of the archive key, while sessions should not ask again.
    fn key_refusal_in_force(&self, policy: &Policy, now_ms: i64) -> Option<Error> {
        let slot = self.key_refusal.lock().unwrap_or_else(|p| p.into_inner());
        let r = slot.as_ref()?;
        let recent = now_ms - r.at_ms < ARCHIVE_KEY_REFUSAL_WAIT.as_millis() as i64;
        (recent && r.policy_fingerprint == policy.fingerprint_hex()).then(|| r.error.clone())
    }

    /// Stops the session running now, if any, at its next wait (a request, a back-off, the
    /// cursor query). Safe at any of them: nothing is deleted before the archive acknowledged.
    pub(crate) fn cancel(&self) {
        self.cancel_generation.fetch_add(1, Ordering::SeqCst);
        self.cancelled.notify_waiters();
    }

    fn client(&self, policy: &Policy) -> Result<Arc<Client>, Error> {
        let fingerprint = policy.fingerprint_hex();
        let mut slot = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((f, c)) = slot.as_ref()
            && *f == fingerprint
        {
            return Ok(c.clone());
        }
        let client = Arc::new(Client::new(policy)?);
        *slot = Some((fingerprint, client.clone()));
        self.cursor_checked.store(false, Ordering::SeqCst);
        Ok(client)
    }
}

struct Session<'a> {
    outbox: &'a Outbox,
    state: &'a UploaderState,
    /// The cancel generation when this session started.
    generation: u64,
    opts: UploadOptions,
    start_ms: i64,
    margin: Duration,
    report: UploadReport,
}

impl Session<'_> {
    fn elapsed(&self) -> Duration {
        Duration::from_millis((self.outbox.clock.monotonic_ms() - self.start_ms).max(0) as u64)
    }

    /// Time left for work, keeping a margin so the report is back well before the deadline.
    fn remaining(&self) -> Duration {
        self.opts.deadline.saturating_sub(self.elapsed()).saturating_sub(self.margin)
    }

    /// Resolves once [`UploaderState::cancel`] was called after this session started.
    async fn cancelled(&self) {
        loop {
            // Registered before the check, so a cancel between the two is not missed.
            let mut notified = pin!(self.state.cancelled.notified());
            notified.as_mut().enable();
            if self.state.cancel_generation.load(Ordering::SeqCst) != self.generation {
                return;
            }
            notified.await;
        }
    }

    /// `work`'s output, or `None` when the session is cancelled first (`work` is dropped).
    async fn unless_cancelled<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        let mut work = pin!(work);
        let mut cancelled = pin!(self.cancelled());
        std::future::poll_fn(|cx| {
            if cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            work.as_mut().poll(cx).map(Some)
        })
        .await
    }

    fn cancel(self) -> UploadReport {
        self.finish(StopReason::Cancelled, Some("cancelled by the app".into()), None)
    }

    fn finish(mut self, stopped: StopReason, detail: Option<String>, error: Option<&Error>) -> UploadReport {
        tracing::debug!(
            stopped = ?stopped,
            error = error.map(|e| e.kind.as_str()),
            batches = self.report.batches,
            records = self.report.records_sent,
            bytes = self.report.bytes_sent,
            retries = self.report.retries,
            "upload: session ended"
        );
        if stopped != StopReason::AlreadyRunning {
            let last = due::LastSession {
                ended_ms: self.outbox.clock.monotonic_ms(),
                stopped,
                policy_fingerprint: self.outbox.policy.as_ref().map(|p| p.fingerprint_hex()),
            };
            *self.state.last_session.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
        }
        self.report.stopped = stopped;
        self.report.detail = detail;
        self.report.error_kind = error.map(|e| e.kind);
        let queue = self.outbox.queue.snapshot();
        self.report.acked_through = queue.acked_through;
        self.report.more_pending = queue.pending_count > 0;
        self.report.retry_soon = retry_soon(stopped, self.report.more_pending);
        self.report.elapsed_ms = self.elapsed().as_millis() as u64;
        if let Some(e) = error {
            let text = e.to_string();
            self.state.update_status(|s| s.last_error = Some(text));
        }
        self.report
    }
}

/// The platform job should run again soon, not at its regular interval: only when the
/// deadline cut a session short with records still queued. Offline, a forbidden network and
/// failures that need a person are not helped by asking sooner.
fn retry_soon(stopped: StopReason, more_pending: bool) -> bool {
    more_pending && stopped == StopReason::Deadline
}

/// Runs one upload session. Never panics, never returns early without a report.
pub(crate) async fn run(outbox: &Outbox, state: &UploaderState, opts: UploadOptions) -> UploadReport {
    let margin = (opts.deadline / 10).max(Duration::from_millis(100));
    let mut session = Session {
        outbox,
        state,
        generation: state.cancel_generation.load(Ordering::SeqCst),
        start_ms: outbox.clock.monotonic_ms(),
        margin,
        opts,
        report: UploadReport::nothing_yet(),
    };
    let Ok(_guard) = state.session.try_lock() else {
        return session.finish(StopReason::AlreadyRunning, Some("another upload session is running".into()), None);
    };
    let Some(policy) = outbox.policy.clone() else {
        let e = Error::new(ErrorKind::NotConfigured, "no policy in force");
        return session.finish(StopReason::Error, Some(e.detail.clone()), Some(&e));
    };
    if let Some(e) = state.key_refusal_in_force(&policy, outbox.clock.monotonic_ms()) {
        tracing::debug!("upload: waiting, the archive refused the archive key recently");
        return session.finish(StopReason::Error, Some(e.detail.clone()), Some(&e));
    }
    if policy.device_token.is_empty() {
        let e = Error::new(
            ErrorKind::NotConfigured,
            "no device token since the agent started: the token is never stored on the device; apply the managed configuration first",
        );
        return session.finish(StopReason::Error, Some(e.detail.clone()), Some(&e));
    }
    if let Some(why) = network::refusal(&policy, session.opts.network) {
        let stop = if session.opts.network == NetworkState::Offline { StopReason::Offline } else { StopReason::NotAllowed };
        return session.finish(stop, Some(why.to_string()), None);
    }
    let now = outbox.clock.now_ms();
    state.update_status(|s| s.last_attempt_ms = Some(now));
    let client = match state.client(&policy) {
        Ok(c) => c,
        Err(e) => return refused(session, state, &policy, e).await,
    };
    if !state.cursor_checked.load(Ordering::SeqCst) {
        match session.unless_cancelled(catch_up_with_archive(&session, &client)).await {
            None => return session.cancel(),
            Some(Err(e)) => return refused(session, state, &policy, e).await,
            Some(Ok(())) => state.cursor_checked.store(true, Ordering::SeqCst),
        }
    }

    let mut max_bytes = policy.max_batch_kb as usize * 1024;
    let mut schedule = retry::RetrySchedule::new(random_seed());
    loop {
        let remaining = session.remaining();
        if remaining.is_zero() {
            return session.finish(StopReason::Deadline, Some("deadline reached".into()), None);
        }
        let queue = outbox.queue.clone();
        let batch = match tokio::task::spawn_blocking(move || queue.read_batch(max_bytes).map(|b| b.map(Encoded::from))).await {
            Ok(Ok(Some(b))) => b,
            Ok(Ok(None)) => return session.finish(StopReason::Done, None, None),
            Ok(Err(e)) if e.kind == ErrorKind::Corrupt => {
                // Recorded once per distinct damage, not at every session it blocks.
                let new = {
                    let mut last = state.last_corrupt.lock().unwrap_or_else(|p| p.into_inner());
                    let new = last.as_deref() != Some(e.detail.as_str());
                    *last = Some(e.detail.clone());
                    new
                };
                if new {
                    outbox.record(vec![AgentEvent::QueueCorrupt { detail: e.detail.clone() }]).await;
                }
                return session.finish(StopReason::Error, Some(e.detail.clone()), Some(&e));
            }
            Ok(Err(e)) => return session.finish(StopReason::Error, Some(e.detail.clone()), Some(&e)),
            Err(join) => {
                let e = Error::new(ErrorKind::Internal, format!("queue read task failed: {join}"));
                return session.finish(StopReason::Error, Some(e.detail.clone()), Some(&e));
            }
        };
        let Encoded { first, last, records, body } = batch;
        let body_len = body.len();
        tracing::trace!(first, last, bytes = body_len, "upload: sending batch");
        let Some(answer) = session.unless_cancelled(client.post_batch(body, remaining.min(MAX_REQUEST))).await else {
            return session.cancel();
        };
        match answer {
            Answer::Ok(ack) => {
                if ack.acked_through + 1 < first {
                    // The archive says it holds less than what we just continued from: it lost
                    // data it had acknowledged. Never delete on such an answer.
                    let e = Error::new(
                        ErrorKind::Conflict,
                        format!("archive acknowledged through {} but the batch continued from {}", ack.acked_through, first - 1),
                    );
                    return refused(session, state, &policy, e).await;
                }
                let through = ack.acked_through.min(last);
                if let Err(e) = outbox.queue.acknowledge(through).await {
                    return session.finish(StopReason::Error, Some(e.detail.clone()), Some(&e));
                }
                session.report.batches += 1;
                session.report.records_sent += records;
                session.report.bytes_sent += body_len as u64;
                session.report.duplicates += ack.duplicates;
                schedule = retry::RetrySchedule::new(random_seed());
                let now = outbox.clock.now_ms();
                state.update_status(|s| {
                    s.last_success_ms = Some(now);
                    s.last_error = None;
                    s.next_retry_ms = None;
                });
                *state.last_refusal.lock().unwrap_or_else(|p| p.into_inner()) = None;
                *state.key_refusal.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            Answer::Gap { expected_seq } => {
                tracing::debug!(expected_seq, "upload: the archive holds more than the device knew");
                let held = expected_seq.saturating_sub(1);
                let snap = outbox.queue.snapshot();
                if held < snap.acked_through {
                    let e = Error::new(
                        ErrorKind::Conflict,
                        format!("archive expects sequence {expected_seq} but acknowledged through {} before", snap.acked_through),
                    );
                    return refused(session, state, &policy, e).await;
                }
                // The archive already holds more than we knew: skip what it has.
                if let Err(e) = outbox.queue.acknowledge(held.min(snap.last_seq)).await {
                    return session.finish(StopReason::Error, Some(e.detail.clone()), Some(&e));
                }
            }
            Answer::TooLarge => {
                tracing::debug!(first, bytes = body_len, "upload: batch too large for the archive, halving");
                if records == 1 {
                    let e = Error::new(ErrorKind::Rejected, format!("archive refuses record {first} as too large"));
                    return refused(session, state, &policy, e).await;
                }
                max_bytes = (body_len / 2).max(1);
            }
            Answer::Retry { reason, retry_after } => {
                session.report.retries += 1;
                let delay = schedule.next_delay(retry_after);
                tracing::debug!(first, delay_ms = delay.as_millis() as u64, "upload: retry after a passing failure");
                let now = outbox.clock.now_ms();
                let next = now + delay.as_millis() as i64;
                state.update_status(|s| {
                    s.last_error = Some(reason.clone());
                    s.next_retry_ms = Some(next);
                });
                if delay >= session.remaining() {
                    return session.finish(StopReason::Deadline, Some(format!("{reason}; next try after the deadline")), None);
                }
                if session.unless_cancelled(session.opts.pause.pause(delay)).await.is_none() {
                    return session.cancel();
                }
            }
            Answer::Permanent(e) => return refused(session, state, &policy, e).await,
        }
    }
}

/// A batch as sent: its body and what the session needs to know of it.
struct Encoded {
    first: u64,
    last: u64,
    records: u64,
    body: Vec<u8>,
}

impl From<crate::wire::Batch> for Encoded {
    /// Encoded on the thread that read the batch, which frees the records there: the large
    /// transient buffers of upload then come from one thread's allocator arena, not from every
    /// thread the session's task visits (with glibc that kept peak memory growing with the
    /// length of a long upload).
    fn from(batch: crate::wire::Batch) -> Encoded {
        Encoded {
            first: batch.records.first().map_or(0, |r| r.seq),
            last: batch.records.last().map_or(0, |r| r.seq),
            records: batch.records.len() as u64,
            body: batch.encode(),
        }
    }
}

/// Learns where the archive stands for this stream (once per process and policy), so that a
/// device that crashed between the archive's commit and its own delete does not resend.
async fn catch_up_with_archive(session: &Session<'_>, client: &Client) -> Result<(), Error> {
    let queue = &session.outbox.queue;
    let Some(stream) = queue.stream() else { return Ok(()) };
    match client.cursor(&stream.stream, session.remaining().min(MAX_REQUEST)).await {
        Answer::Ok(cursor) => {
            let snap = queue.snapshot();
            if cursor.acked_through > snap.last_seq {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "archive holds {} records of this stream but the device wrote {}: was the app data restored from an old copy?",
                        cursor.acked_through, snap.last_seq
                    ),
                ));
            }
            // The archive's link must be ours for the same sequence number: otherwise it holds a
            // different record there (this store was tampered with or restored), and deleting
            // through it would destroy the only copy of what we captured.
            if cursor.acked_through >= snap.acked_through && cursor.acked_through > 0 {
                let ours = queue.link_of(cursor.acked_through)?;
                if ours.map(hex::encode).as_deref() != Some(cursor.last_link.as_str()) {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!("the archive holds a different record at sequence {} than this device", cursor.acked_through),
                    ));
                }
            }
            if cursor.acked_through > snap.acked_through {
                queue.acknowledge(cursor.acked_through).await?;
            }
            Ok(())
        }
        Answer::Permanent(e) => Err(e),
        // A passing failure: the batches themselves will be resent and answered as duplicates.
        _ => Ok(()),
    }
}

/// Stops on a failure that needs a person, recording it once as an agent event.
async fn refused(session: Session<'_>, state: &UploaderState, policy: &Policy, e: Error) -> UploadReport {
    let outbox = session.outbox;
    let first_time = {
        let mut last = state.last_refusal.lock().unwrap_or_else(|p| p.into_inner());
        let new = last.as_deref() != Some(e.detail.as_str());
        *last = Some(e.detail.clone());
        new
    };
    if e.kind == ErrorKind::UnknownArchiveKey {
        let refusal =
            KeyRefusal { error: e.clone(), at_ms: outbox.clock.monotonic_ms(), policy_fingerprint: policy.fingerprint_hex() };
        *state.key_refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(refusal);
    }
    if first_time {
        let event = match e.kind {
            ErrorKind::PinMismatch => {
                AgentEvent::TlsPinMismatch { host: policy.archive_url.host_str().map(str::to_string).unwrap_or_default() }
            }
            _ => AgentEvent::UploadRefused { reason: e.to_string() },
        };
        outbox.record(vec![event]).await;
    }
    let detail = e.detail.clone();
    session.finish(StopReason::Error, Some(detail), Some(&e))
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_soon_only_when_the_deadline_cut_a_session_short() {
        assert!(retry_soon(StopReason::Deadline, true));
        assert!(!retry_soon(StopReason::Deadline, false));
        for stopped in [StopReason::Offline, StopReason::NotAllowed, StopReason::Error, StopReason::Cancelled, StopReason::Done] {
            assert!(!retry_soon(stopped, true), "{stopped:?}");
        }
    }
}
