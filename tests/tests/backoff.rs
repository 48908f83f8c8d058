//! Waiting between attempts: back-off ceilings double, `Retry-After` is a floor, and a session
//! never runs past the time the OS granted. Waits are checked on a manual clock (the uploader's
//! pause advances it and returns at once); only the deadline test measures wall time, because
//! wall time is what it is about.

use std::sync::Arc;
use std::time::{Duration, Instant};

use verbatim_core::AgentOptions;
use verbatim_core::clock::{Clock, ManualClock};
use verbatim_core::upload::retry::{FIRST_DELAY, MAX_DELAY, RetrySchedule};
use verbatim_core::upload::{NetworkState, StopReason, UploadOptions};
use verbatim_tests::*;

/// The schedule's ceilings for the first `n` attempts, checked to start at FIRST_DELAY and
/// double up to MAX_DELAY.
fn ceilings(n: usize) -> Vec<Duration> {
    let mut schedule = RetrySchedule::new(0);
    let out: Vec<Duration> = (0..n)
        .map(|_| {
            schedule.next_delay(None);
            schedule.last_ceiling()
        })
        .collect();
    assert_eq!(out[0], FIRST_DELAY);
    for w in out.windows(2) {
        // backon multiplies in floating point: compare whole milliseconds.
        let doubled = (2 * w[0].as_millis()).min(MAX_DELAY.as_millis());
        assert!(w[1].as_millis().abs_diff(doubled) <= 1, "ceilings double up to the cap: {out:?}");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_grows_respects_retry_after_and_stops_before_the_deadline() {
    let world = World::start().await;
    for _ in 0..3 {
        world.plan().status(503, Some(7));
    }
    for _ in 0..200 {
        world.plan().status(500, None);
    }
    let clock = ManualClock::new(1_767_300_000_000);
    let agent = world.device_with(AgentOptions { clock: Arc::new(clock.clone()), ..Default::default() }, &[]).await;
    let captured = world.capture(&agent, 71, 20).await;
    let last_seq = agent.status().last_seq;

    let deadline = Duration::from_secs(300);
    let pause = RecordingPause::advancing(clock.clone());
    let started_mono = clock.monotonic_ms();
    let report = agent.upload(upload_options(deadline, pause.clone())).await;
    assert_eq!(report.stopped, StopReason::Deadline, "{report:?}");
    let delays = pause.delays();
    assert_eq!(report.retries as usize, delays.len() + 1, "every retry but the last one waited: {report:?}");
    assert!(delays.len() > 5, "{delays:?}");

    // Retry-After is a floor; otherwise each wait stays under its attempt's ceiling.
    let ceilings = ceilings(delays.len());
    for (i, d) in delays.iter().enumerate() {
        if i < 3 {
            assert!(*d >= Duration::from_secs(7), "attempt {i}: Retry-After 7 not honoured: {delays:?}");
            assert!(*d <= ceilings[i].max(Duration::from_secs(7)), "attempt {i}: {delays:?}");
        } else {
            assert!(*d <= ceilings[i] + Duration::from_millis(1), "attempt {i}: {d:?} above its ceiling {:?}", ceilings[i]);
        }
    }
    // The waits grow: later ones go beyond what the first back-off ceilings allowed.
    assert!(delays[3..].iter().any(|d| *d > ceilings[4]), "{delays:?}");

    // Time only moved by the waits, and the session stopped because the next one would pass
    // the deadline (less the uploader's margin of a tenth), telling when to come back.
    // (The pause advances the clock in whole milliseconds.)
    let waited = Duration::from_millis(delays.iter().map(|d| d.as_millis() as u64).sum());
    assert_eq!((clock.monotonic_ms() - started_mono) as u128, waited.as_millis());
    assert_eq!(report.elapsed_ms as u128, waited.as_millis());
    assert!(waited < deadline);
    let status = agent.status();
    let next = status.upload.next_retry_ms.expect("next_retry_ms is set");
    let left = deadline - deadline / 10 - waited;
    assert!(next - clock.now_ms() >= left.as_millis() as i64, "stopped although the next wait fit: {next} vs {left:?}");
    assert!(status.upload.last_error.as_deref().unwrap_or("").contains("500"), "{:?}", status.upload);
    assert_eq!(status.acked_through, 0);
    assert_eq!(status.last_seq, last_seq, "a retry adds nothing to the queue");

    // The next window: the archive is well again.
    world.plan().clear();
    upload_until_done(&agent, 1).await;
    agent.close().await.unwrap();
    world.assert_archive_complete(last_seq);
    world.export().assert_exactly_once(&captured);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_returns_before_its_deadline_when_every_request_is_slow() {
    let world = World::start().await;
    for _ in 0..10 {
        world.plan().delay(Duration::from_secs(10));
    }
    let agent = world.device(&[]).await;
    let captured = world.capture_batches(&agent, 72, 2).await;
    let before = agent.status();

    // Real waits and the system clock: wall time is the behaviour under test.
    let started = Instant::now();
    let report = agent.upload(UploadOptions::new(Duration::from_secs(2), NetworkState::Unmetered)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "the session ran past its deadline: {took:?} {report:?}");
    assert_eq!(report.stopped, StopReason::Deadline, "{report:?}");
    assert!(report.elapsed_ms < 2_000);
    assert_eq!(report.records_sent, 0);
    let after = agent.status();
    assert_eq!(after.acked_through, 0, "nothing deleted");
    assert_eq!(after.queue_records, before.queue_records, "nothing lost");
    assert!(after.upload.next_retry_ms.is_some());

    world.plan().clear();
    upload_until_done(&agent, 2).await;
    let last_seq = agent.status().last_seq;
    agent.close().await.unwrap();
    world.assert_archive_complete(last_seq);
    world.export().assert_exactly_once(&captured);
}
