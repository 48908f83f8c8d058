//! Each injected fault ends with nothing lost and nothing duplicated in the archive: every
//! captured event exported exactly once, verify clean.
//!
//! Faults are queued after two pass-through entries (`Delay(0)`), so they hit the third batch
//! of a multi-batch upload, where something is already acknowledged.

use std::time::{Duration, Instant};

use verbatim_core::upload::{NetworkState, StopReason, UploadOptions};
use verbatim_receiver::Fault;
use verbatim_tests::*;

/// `fault` on the third batch request.
fn third(fault: Fault) -> Vec<Fault> {
    vec![Fault::Delay(Duration::ZERO), Fault::Delay(Duration::ZERO), fault]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_mid_body_is_resent_and_stored_once() {
    let t = round_trip_through(&third(Fault::DropConnection), 21).await;
    assert_eq!(total_retries(&t.reports), 1, "{:?}", t.reports);
    assert_eq!(total_duplicates(&t.reports), 0, "nothing was stored from the cut body");
    assert_eq!(t.pause.delays().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_500_is_retried_with_backoff() {
    let t = round_trip_through(&third(Fault::Status { code: 500, retry_after_secs: None }), 22).await;
    assert_eq!(total_retries(&t.reports), 1);
    assert_eq!(total_duplicates(&t.reports), 0);
    let delays = t.pause.delays();
    assert_eq!(delays.len(), 1);
    assert!(delays[0] <= verbatim_core::upload::retry::FIRST_DELAY, "first back-off is within the first ceiling: {delays:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_503_waits_at_least_retry_after() {
    let t = round_trip_through(&third(Fault::Status { code: 503, retry_after_secs: Some(2) }), 23).await;
    assert_eq!(total_retries(&t.reports), 1);
    let delays = t.pause.delays();
    assert_eq!(delays.len(), 1);
    assert!(delays[0] >= Duration::from_secs(2), "Retry-After is a floor: {delays:?}");
    assert_eq!(total_duplicates(&t.reports), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_429_waits_at_least_retry_after() {
    let t = round_trip_through(&third(Fault::Status { code: 429, retry_after_secs: Some(3) }), 24).await;
    assert_eq!(total_retries(&t.reports), 1);
    let delays = t.pause.delays();
    assert_eq!(delays.len(), 1);
    assert!(delays[0] >= Duration::from_secs(3), "Retry-After is a floor: {delays:?}");
    assert_eq!(total_duplicates(&t.reports), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_answer_is_not_an_acknowledgement() {
    let t = round_trip_through(&third(Fault::GarbageBody), 25).await;
    assert_eq!(total_retries(&t.reports), 1);
    // The archive stored the batch before answering garbage: the resend is all duplicates.
    assert!(total_duplicates(&t.reports) > 0, "{:?}", t.reports);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_crash_before_commit_keeps_nothing_and_loses_nothing() {
    let t = round_trip_through(&third(Fault::CrashBeforeCommit), 26).await;
    assert_eq!(total_retries(&t.reports), 1);
    assert_eq!(total_duplicates(&t.reports), 0, "the rolled-back batch was not held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_then_drop_is_resent_as_duplicates_not_lost() {
    let t = round_trip_through(&third(Fault::DropAfterCommit), 27).await;
    assert_eq!(total_retries(&t.reports), 1);
    assert!(total_duplicates(&t.reports) > 0, "the committed batch came back as duplicates: {:?}", t.reports);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_in_one_upload() {
    let faults = vec![
        Fault::Delay(Duration::ZERO),
        Fault::DropConnection,
        Fault::Status { code: 500, retry_after_secs: None },
        Fault::Delay(Duration::ZERO),
        Fault::Status { code: 503, retry_after_secs: Some(1) },
        Fault::GarbageBody,
        Fault::CrashBeforeCommit,
        Fault::Status { code: 429, retry_after_secs: Some(1) },
        Fault::DropAfterCommit,
        Fault::Status { code: 502, retry_after_secs: None },
    ];
    let t = round_trip_through(&faults, 28).await;
    assert_eq!(total_retries(&t.reports), 8, "{:?}", t.reports);
    assert!(total_duplicates(&t.reports) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_ends_the_session_then_the_next_one_succeeds() {
    let world = World::start().await;
    // The archive takes 5 s over the first batch; the OS granted 3 s.
    world.plan().delay(Duration::from_secs(5));
    let agent = world.device(&[]).await;
    let captured = world.capture_batches(&agent, 29, 3).await;
    let last_seq = agent.status().last_seq;

    let started = Instant::now();
    let report = agent.upload(upload_options(Duration::from_secs(3), RecordingPause::instant())).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "the request timeout keeps the session inside its deadline: {took:?}");
    assert_eq!(report.stopped, StopReason::Deadline, "{report:?}");
    assert!(report.retries >= 1);
    assert_eq!(report.records_sent, 0);
    let status = agent.status();
    assert_eq!(status.acked_through, 0, "nothing deleted without an answer");
    assert_eq!(status.last_seq, last_seq);
    assert!(status.upload.last_error.is_some() && status.upload.next_retry_ms.is_some(), "{:?}", status.upload);

    upload_until_done(&agent, 2).await;
    assert_eq!(world.plan().pending(), 0);
    agent.close().await.unwrap();
    world.assert_archive_complete(last_seq);
    world.export().assert_exactly_once(&captured);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_and_restarted_on_the_same_address() {
    let mut world = World::start().await;
    let agent = world.device(&[]).await;
    let mut captured = world.capture(&agent, 30, 30).await;
    upload_until_done(&agent, 1).await;

    // The receiver goes away; the device keeps capturing and tries while it is down.
    world.receiver.stop().await;
    captured.extend(world.capture(&agent, 31, 30).await);
    let pending = agent.status().queue_records;
    let report = agent.upload(UploadOptions::new(Duration::from_secs(1), NetworkState::Unmetered)).await;
    assert_eq!(report.stopped, StopReason::Deadline, "{report:?}");
    assert!(report.retries >= 1);
    assert_eq!(agent.status().queue_records, pending, "nothing deleted while the archive was away");
    assert!(agent.status().upload.last_error.unwrap().contains("connection failed"));

    // Back on the same address, data directory, CA and token file.
    world.receiver.start_again().await;
    captured.extend(world.capture(&agent, 32, 10).await);
    upload_until_done(&agent, 2).await;
    let last_seq = agent.status().last_seq;
    agent.close().await.unwrap();

    // And once more between two uploads, with nothing in flight.
    world.receiver.restart().await;
    let agent = world.reopen().await;
    captured.extend(world.capture(&agent, 33, 10).await);
    upload_until_done(&agent, 2).await;
    let last_seq = last_seq.max(agent.status().last_seq);
    agent.close().await.unwrap();

    world.assert_archive_complete(last_seq);
    world.export().assert_exactly_once(&captured);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_restart_mid_upload_resumes_without_loss_or_duplicates() {
    let world = World::start().await;
    // Two batches go through; the archive sits on the third until the device is gone.
    world.plan().delay(Duration::ZERO).delay(Duration::ZERO).delay(Duration::from_secs(60));
    let agent = world.device(&[]).await;
    let captured = world.capture_batches(&agent, 34, 5).await;

    let uploading = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.upload(upload_options(Duration::from_secs(120), RecordingPause::instant())).await })
    };
    world.plan().wait_applied(3).await;
    // The third batch is in flight: the process dies (the session is dropped), then the app
    // closes its store.
    uploading.abort();
    assert!(uploading.await.unwrap_err().is_cancelled());
    let acked = agent.status().acked_through;
    assert!(acked > 0, "the first batches were acknowledged and deleted");
    agent.close().await.unwrap();

    let agent = world.reopen().await;
    assert_eq!(agent.status().acked_through, acked);
    let reports = upload_until_done(&agent, 2).await;
    assert_eq!(total_duplicates(&reports), 0, "nothing acknowledged is sent again");
    let last_seq = agent.status().last_seq;
    assert_eq!(reports.iter().map(|r| r.records_sent).sum::<u64>(), last_seq - acked);
    agent.close().await.unwrap();

    world.assert_archive_complete(last_seq);
    let exported = world.export();
    exported.assert_exactly_once(&captured);
    assert_eq!(exported.agent_event_names().iter().filter(|n| *n == "started").count(), 2, "both runs are on record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_restart_while_a_batch_is_in_flight() {
    let mut world = World::start().await;
    // The archive sits on the second batch; it restarts meanwhile, dropping the request
    // unanswered after its shutdown grace.
    world.plan().delay(Duration::ZERO).delay(Duration::from_secs(60));
    let agent = world.device(&[]).await;
    let captured = world.capture_batches(&agent, 35, 4).await;

    // Real waits here: with instant retries the device would hammer the closed port.
    let uploading = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.upload(UploadOptions::new(Duration::from_secs(60), NetworkState::Unmetered)).await })
    };
    world.plan().wait_applied(2).await;
    world.receiver.restart().await;
    let report = uploading.await.unwrap();
    assert_eq!(report.stopped, StopReason::Done, "{report:?}");
    assert!(report.retries >= 1, "the dropped request was retried: {report:?}");
    assert_eq!(report.duplicates, 0, "the dropped request stored nothing");
    let last_seq = agent.status().last_seq;
    agent.close().await.unwrap();
    world.assert_archive_complete(last_seq);
    world.export().assert_exactly_once(&captured);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_upload_stops_it_at_once_in_a_request_or_a_back_off_and_loses_nothing() {
    let world = World::start().await;
    // First session: the archive sits on the first batch (a request in flight). Second: the
    // archive is overloaded and asks for a long wait (a back-off in progress).
    world.plan().delay(Duration::from_secs(5)).status(503, Some(60));
    let agent = world.device(&[]).await;
    let captured = world.capture_batches(&agent, 36, 2).await;
    let pending = agent.status().queue_records;
    let long = || UploadOptions::new(Duration::from_secs(120), NetworkState::Unmetered);

    for applied in [1, 2] {
        let started = Instant::now();
        let uploading = {
            let agent = agent.clone();
            tokio::spawn(async move { agent.upload(long()).await })
        };
        world.plan().wait_applied(applied).await;
        agent.cancel_upload();
        let report = uploading.await.unwrap();
        assert_eq!(report.stopped, StopReason::Cancelled, "{report:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "stopped at once, not after the archive's answer or the back-off");
        assert_eq!(agent.status().queue_records, pending, "nothing deleted without an acknowledgement");
    }

    // A cancel with nothing running does not touch the next session.
    agent.cancel_upload();
    let report = agent.upload(long()).await;
    assert_eq!(report.stopped, StopReason::Done, "{report:?}");
    let last_seq = agent.status().last_seq;
    agent.close().await.unwrap();
    world.assert_archive_complete(last_seq);
    world.export().assert_exactly_once(&captured);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_upload_while_one_runs_does_nothing_and_is_no_error() {
    let world = World::start().await;
    // The archive sits on the first batch, so the first session is surely still running.
    world.plan().delay(Duration::from_secs(5));
    let agent = world.device(&[]).await;
    world.capture(&agent, 37, 20).await;
    let long = || UploadOptions::new(Duration::from_secs(120), NetworkState::Unmetered);
    let first = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.upload(long()).await })
    };
    world.plan().wait_applied(1).await;
    let second = agent.upload(long()).await;
    assert_eq!(second.stopped, StopReason::AlreadyRunning, "{second:?}");
    assert_eq!((second.error_kind.map(|k| k.as_str()), second.records_sent), (None, 0), "{second:?}");
    assert_eq!(agent.status().upload.last_error, None, "not an error");
    agent.cancel_upload();
    assert_eq!(first.await.unwrap().stopped, StopReason::Cancelled);
    agent.close().await.unwrap();
}
