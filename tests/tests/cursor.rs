//! The cursor: a device that died after the archive committed a batch but before it deleted
//! the batch learns, at its next start, what the archive holds, and does not send it again.

use verbatim_core::upload::StopReason;
use verbatim_receiver::FaultPlan;
use verbatim_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_died_before_deleting_does_not_resend_after_restart() {
    let plan = FaultPlan::new();
    plan.drop_after_commit();
    let world = World::with_faults(plan).await;
    let agent = world.device(&[]).await;
    let captured = world.capture_batches(&agent, 91, 3).await;

    // The archive commits the first batch and the answer is lost; the device is about to
    // resend when the process dies.
    let pause = RecordingPause::hanging();
    let session = {
        let agent = agent.clone();
        let pause = pause.clone();
        tokio::spawn(async move { agent.upload(upload_options(std::time::Duration::from_secs(30), pause)).await })
    };
    pause.wait_paused(1).await;
    session.abort();
    assert!(session.await.unwrap_err().is_cancelled());
    assert_eq!(agent.status().acked_through, 0, "the device deleted nothing");
    agent.close().await.unwrap();
    let held = world.verify().streams[0].contiguous_through;
    assert!(held > 0, "the archive holds the first batch");

    // Next start: the queue still holds everything from sequence 1.
    let agent = world.reopen().await;
    assert_eq!(agent.status().acked_through, 0);
    assert_eq!(queue_seqs(&world.device_dir()).first(), Some(&1));
    let report = upload_once(&agent).await;
    assert_eq!(report.stopped, StopReason::Done, "{report:?}");
    assert_eq!(report.duplicates, 0, "nothing the archive held was sent again: {report:?}");
    let last_seq = agent.status().last_seq;
    assert_eq!(report.records_sent, last_seq - held, "{report:?}");
    assert_eq!(report.retries, 0);
    assert_eq!(agent.status().queue_records, 0, "the queue emptied");
    agent.close().await.unwrap();

    world.assert_archive_complete(last_seq);
    world.export().assert_exactly_once(&captured);
}
