//! When an upload the app starts on its own may begin: soon after a capture, while the app is
//! in the foreground (iOS `ForegroundUpload`), on top of the windows the OS grants. Decided
//! here, once for every platform, from what the uploader knows; the platform only adds its
//! quiet time (a burst of captures becomes one upload) and runs the session.

use std::time::Duration;

use super::StopReason;

/// Shortest time from the end of an upload session to an upload the app starts on its own, so
/// a stream of captures does not become a stream of sessions.
pub const APP_UPLOAD_SPACING: Duration = Duration::from_secs(30);

/// How the last session of this process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LastSession {
    /// Monotonic ms.
    pub ended_ms: i64,
    pub stopped: StopReason,
    /// The fingerprint of the policy it ran under, if any.
    pub policy_fingerprint: Option<String>,
}

/// What the decision reads. Times are the agent clock's: `now_ms` wall-clock, the others as
/// their fields say.
pub(crate) struct Inputs<'a> {
    pub now_ms: i64,
    pub mono_ms: i64,
    /// Records waiting for the archive.
    pub pending_records: u64,
    /// The policy in force: its upload interval and fingerprint. None: no policy.
    pub policy: Option<(Duration, &'a str)>,
    /// Wall-clock ms before which a retry after a passing failure should not start.
    pub next_retry_ms: Option<i64>,
    /// When (monotonic ms) the archive refused the archive key, and under which policy.
    pub key_refusal: Option<(i64, &'a str)>,
    pub last_session: Option<&'a LastSession>,
}

/// The wall-clock ms from which the app may start an upload on its own, or `None` when it
/// should not: no policy (nowhere to upload to) or nothing queued. Otherwise the latest of:
/// now; the back-off after a passing failure (`next_retry_ms`); the end of the archive-key
/// refusal wait under the same policy ([`super::ARCHIVE_KEY_REFUSAL_WAIT`]); after a session
/// under the same policy that ended in an error that needs attention (credentials, pins, a
/// conflict, no device token), the policy's upload interval, as the regular schedule would;
/// after any other session, [`APP_UPLOAD_SPACING`]. A new policy ends the waits tied to the
/// old one at once.
pub(crate) fn app_upload_due_ms(inputs: &Inputs<'_>) -> Option<i64> {
    let (interval, fingerprint) = inputs.policy?;
    if inputs.pending_records == 0 {
        return None;
    }
    let same_policy = |f: Option<&str>| f == Some(fingerprint);
    // Waits measured on the monotonic clock, as ms from now.
    let mut wait_ms = 0_i64;
    if let Some((at_ms, refused_under)) = inputs.key_refusal
        && same_policy(Some(refused_under))
    {
        wait_ms = wait_ms.max(at_ms + ms(super::ARCHIVE_KEY_REFUSAL_WAIT) - inputs.mono_ms);
    }
    if let Some(last) = inputs.last_session {
        let gap = if last.stopped == StopReason::Error && same_policy(last.policy_fingerprint.as_deref()) {
            interval
        } else {
            APP_UPLOAD_SPACING
        };
        wait_ms = wait_ms.max(last.ended_ms + ms(gap) - inputs.mono_ms);
    }
    let due = inputs.now_ms + wait_ms.max(0);
    Some(inputs.next_retry_ms.map_or(due, |retry| due.max(retry)))
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;
    const MONO: i64 = 5_000_000;
    const POLICY: &str = "aaaa";
    const INTERVAL: Duration = Duration::from_secs(15 * 60);

    fn inputs() -> Inputs<'static> {
        Inputs {
            now_ms: NOW,
            mono_ms: MONO,
            pending_records: 3,
            policy: Some((INTERVAL, POLICY)),
            next_retry_ms: None,
            key_refusal: None,
            last_session: None,
        }
    }

    fn ended(ago_ms: i64, stopped: StopReason, policy: &str) -> LastSession {
        LastSession { ended_ms: MONO - ago_ms, stopped, policy_fingerprint: Some(policy.into()) }
    }

    #[test]
    fn nothing_without_a_policy_or_without_records() {
        assert_eq!(app_upload_due_ms(&Inputs { policy: None, ..inputs() }), None);
        assert_eq!(app_upload_due_ms(&Inputs { pending_records: 0, ..inputs() }), None);
    }

    #[test]
    fn at_once_when_nothing_holds_it_back() {
        assert_eq!(app_upload_due_ms(&inputs()), Some(NOW));
    }

    #[test]
    fn sessions_are_spaced() {
        let last = ended(10_000, StopReason::Done, POLICY);
        assert_eq!(app_upload_due_ms(&Inputs { last_session: Some(&last), ..inputs() }), Some(NOW + 20_000));
        for stopped in [StopReason::Offline, StopReason::NotAllowed, StopReason::Deadline, StopReason::Cancelled] {
            let last = ended(10_000, stopped, POLICY);
            assert_eq!(app_upload_due_ms(&Inputs { last_session: Some(&last), ..inputs() }), Some(NOW + 20_000), "{stopped:?}");
        }
        let long_ago = ended(60_000, StopReason::Done, POLICY);
        assert_eq!(app_upload_due_ms(&Inputs { last_session: Some(&long_ago), ..inputs() }), Some(NOW));
    }

    #[test]
    fn after_an_error_the_policy_interval_unless_the_policy_changed() {
        let failed = ended(60_000, StopReason::Error, POLICY);
        assert_eq!(app_upload_due_ms(&Inputs { last_session: Some(&failed), ..inputs() }), Some(NOW + 15 * 60_000 - 60_000));
        // A corrected policy (new credentials, pins) is tried at once, after the spacing.
        let under_old = ended(60_000, StopReason::Error, "bbbb");
        assert_eq!(app_upload_due_ms(&Inputs { last_session: Some(&under_old), ..inputs() }), Some(NOW));
    }

    #[test]
    fn never_before_the_back_off() {
        let retry = NOW + 45_000;
        assert_eq!(app_upload_due_ms(&Inputs { next_retry_ms: Some(retry), ..inputs() }), Some(retry));
        // A back-off already over holds nothing back.
        assert_eq!(app_upload_due_ms(&Inputs { next_retry_ms: Some(NOW - 1), ..inputs() }), Some(NOW));
    }

    #[test]
    fn the_archive_key_refusal_waits_under_the_same_policy_only() {
        let at = MONO - 60_000;
        let wait = ms(super::super::ARCHIVE_KEY_REFUSAL_WAIT);
        assert_eq!(app_upload_due_ms(&Inputs { key_refusal: Some((at, POLICY)), ..inputs() }), Some(NOW + wait - 60_000));
        assert_eq!(app_upload_due_ms(&Inputs { key_refusal: Some((at, "bbbb")), ..inputs() }), Some(NOW));
    }

    #[test]
    fn the_latest_constraint_wins() {
        let last = ended(10_000, StopReason::Done, POLICY);
        let inputs = Inputs { last_session: Some(&last), next_retry_ms: Some(NOW + 5_000), ..inputs() };
        assert_eq!(app_upload_due_ms(&inputs), Some(NOW + 20_000));
    }
}
