//! One fault, start to finish.

#[allow(unused_imports)]
use super::*;

/// What [`round_trip_through`] saw.
pub struct RoundTrip {
    pub world: World,
    pub captured: Captured,
    pub reports: Vec<UploadReport>,
    /// Every wait the uploader asked for, across sessions.
    pub pause: Arc<RecordingPause>,
    pub exported: Exported,
    /// The device's last sequence number (everything through it is in the archive).
    pub last_seq: u64,
}

/// Captures a multi-batch workload, queues `faults` at the receiver, uploads (waits recorded,
/// not slept) until a session reports `Done`, then checks the archive: every fault was met,
/// the device's queue is empty, verify is clean, and the export holds every captured event
/// exactly once.
pub async fn round_trip_through(faults: &[verbatim_receiver::Fault], seed: u64) -> RoundTrip {
    let world = World::start().await;
    for f in faults {
        world.plan().push(f.clone());
    }
    let agent = world.device(&[]).await;
    let captured = world.capture_batches(&agent, seed, 4).await;
    let pause = RecordingPause::instant();
    let mut reports = Vec::new();
    for _ in 0..4 {
        let r = agent.upload(upload_options(Duration::from_secs(30), pause.clone())).await;
        assert_ne!(r.stopped, StopReason::Error, "the fault was taken for a refusal: {r:?}");
        let done = r.stopped == StopReason::Done;
        reports.push(r);
        if done {
            break;
        }
    }
    assert_eq!(reports.last().unwrap().stopped, StopReason::Done, "{reports:#?}");
    assert_eq!(world.plan().pending(), 0, "every fault was met");
    let status = agent.status();
    assert_eq!(status.queue_records, 0);
    assert_eq!(status.acked_through, status.last_seq);
    assert!(status.upload.last_error.is_none(), "a success clears the error: {:?}", status.upload);
    agent.close().await.unwrap();
    world.assert_archive_complete(status.last_seq);
    let exported = world.export();
    exported.assert_exactly_once(&captured);
    RoundTrip { world, captured, reports, pause, exported, last_seq: status.last_seq }
}
