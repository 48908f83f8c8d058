//! Tampering: with the device's queue file, and with batches replayed to the receiver.
//!
//! What each party can see: the device checks every link it reads; the receiver checks links
//! and compares what it already holds byte for byte; only export (with the archive key) can
//! see a ciphertext that was altered and re-linked before the archive ever held it.

use verbatim_core::chain;
use verbatim_core::record::{AgentEvent, RecordBody};
use verbatim_core::upload::StopReason;
use verbatim_receiver::Fault;
use verbatim_tests::*;

/// A device that uploaded a first workload and holds a second one, closed. Returns the
/// captures, the acknowledged head, the last sequence number and the sequence chosen for
/// tampering: the first record of an in-scope event in the middle of the pending part.
async fn uploaded_then_pending(world: &World, seed: u64) -> (Captured, Captured, u64, u64, u64) {
    let agent = world.device(&[]).await;
    let sent = world.capture(&agent, seed, 20).await;
    upload_until_done(&agent, 1).await;
    let acked = agent.status().acked_through;
    let pending = world.capture_batches(&agent, seed + 1, 2).await;
    let last = agent.status().last_seq;
    agent.close().await.unwrap();
    assert_eq!(queue_seqs(&world.device_dir()), (acked + 1..=last).collect::<Vec<_>>());
    let starts = pending.event_starts();
    let k = starts[starts.len() / 2];
    assert!(k > acked + 1 && k < last);
    (sent, pending, acked, last, k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_naively_altered_queue_row_is_caught_on_the_device_and_never_sent() {
    let world = World::start().await;
    let (sent, pending, _acked, last, k) = uploaded_then_pending(&world, 61).await;
    tamper_queue_record(&world.device_dir(), k, Tamper::Naive);

    let agent = world.reopen().await;
    let report = upload_once(&agent).await;
    assert_eq!(report.stopped, StopReason::Error, "{report:?}");
    assert_eq!(report.error_kind.map(|k| k.as_str()), Some("corrupt"), "{report:?}");
    assert!(report.detail.as_deref().unwrap().contains(&format!("queue record {k}")), "{report:?}");
    assert_eq!(agent.status().acked_through, k - 1, "what precedes the damage was sent");
    let again = upload_once(&agent).await;
    assert_eq!(again.error_kind.map(|k| k.as_str()), Some("corrupt"));
    assert_eq!(again.records_sent, 0, "the damaged record is held back, never skipped");
    assert!(agent.status().upload.last_error.unwrap().starts_with("corrupt"));
    agent.close().await.unwrap();

    // The archive: complete and verified up to the damage, nothing of it or after it.
    world.assert_archive_complete(k - 1);
    let exported = world.export();
    assert_eq!(exported.max_seq(), k - 1);
    let mut expected = sent;
    expected.extend(pending.before_seq(k));
    exported.assert_exactly_once(&expected);

    // On the device: the damaged record does not open (only it: its successors still chain
    // and open), and the agent recorded what it found, sealed in the queue.
    let queue = open_queue(&world.device_dir(), &world.key);
    assert_eq!(queue.first().map(|(seq, _)| *seq), Some(k));
    let broken: Vec<u64> = queue.iter().filter(|(_, r)| r.is_err()).map(|(seq, _)| *seq).collect();
    assert_eq!(broken, vec![k]);
    let corrupt: Vec<String> = queue
        .iter()
        .filter_map(|(_, r)| match r.as_ref().ok().map(|r| &r.body) {
            Some(RecordBody::Agent(AgentEvent::QueueCorrupt { detail })) => Some(detail.clone()),
            _ => None,
        })
        .collect();
    assert!(!corrupt.is_empty(), "a QueueCorrupt agent event is in the queue");
    assert!(corrupt.iter().all(|d| d.contains(&format!("queue record {k}"))), "{corrupt:?}");
    assert!(queue.iter().any(|(seq, _)| *seq > last), "the evidence follows the damaged record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relinked_alteration_the_archive_never_saw_is_stored_and_shows_at_export() {
    let world = World::start().await;
    let (sent, pending, _acked, last, k) = uploaded_then_pending(&world, 63).await;
    tamper_queue_record(&world.device_dir(), k, Tamper::Relinked);

    // Neither the device nor the receiver can tell: the chain is well formed.
    let agent = world.reopen().await;
    upload_until_done(&agent, 1).await;
    let head = agent.status().last_seq;
    agent.close().await.unwrap();
    let report = world.assert_archive_complete(head);
    assert!(report.streams[0].alerts.is_empty());

    // Export can: the altered record fails its AEAD tag, and so does every record sealed
    // after it before the tampering, because each seal binds its predecessor's link, which
    // the re-linking replaced. Records sealed after the tampering (the agent's restart)
    // bind the new links and open.
    let exported = world.export();
    let seqs: Vec<u64> = exported.lines().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "every sequence is held once");
    assert_eq!(exported.unreadable(), (k..=last).collect::<Vec<_>>());
    assert!(!exported.summary.ok());
    let errors = &exported.only_stream().info.errors;
    assert_eq!(errors.len() as u64, last - k + 1, "{errors:?}");
    assert!(errors.iter().all(|e| e.contains("does not open")), "{errors:?}");
    assert!(head > last, "the restart's own records follow");
    let mut expected = sent;
    expected.extend(pending.before_seq(k));
    exported.assert_content(&expected);
    let names = exported.agent_event_names();
    assert_eq!(names.iter().filter(|n| *n == "started").count(), 2, "the second start opened: {names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relinked_alteration_of_a_record_the_archive_holds_is_a_conflict() {
    // The archive commits the first batch and the answer is lost; while the device waits to
    // resend, someone re-links an altered record of that batch in its queue.
    let world = World::with_faults({
        let plan = verbatim_receiver::FaultPlan::new();
        plan.push(Fault::DropAfterCommit);
        plan
    })
    .await;
    let agent = world.device(&[]).await;
    let captured = world.capture_batches(&agent, 65, 3).await;
    let dir = world.device_dir();
    let pause = RecordingPause::with_hook(move || tamper_queue_record(&dir, 3, Tamper::Relinked));
    let report = agent.upload(upload_options(std::time::Duration::from_secs(30), pause.clone())).await;
    assert_eq!(pause.delays().len(), 1, "the tampering happened between the two attempts");
    assert_eq!(report.stopped, StopReason::Error, "{report:?}");
    assert_eq!(report.error_kind.map(|k| k.as_str()), Some("conflict"), "{report:?}");
    assert_eq!(report.records_sent, 0);
    assert_eq!(agent.status().acked_through, 0, "nothing deleted on a conflict");
    agent.close().await.unwrap();

    let verify = world.verify();
    assert!(!verify.ok(), "{}", verify.to_text());
    let stream = &verify.streams[0];
    assert!(stream.chain_verified && stream.gaps.is_empty(), "what is held stays intact: {}", verify.to_text());
    let held = stream.contiguous_through;
    assert!(held >= 3);
    let kinds: Vec<&str> = stream.alerts.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(kinds, ["equivocation"], "{}", verify.to_text());

    // The archive kept the originals: every held record opens. (The batch may end inside an
    // attachment, so export may report that attachment incomplete; nothing else.)
    let exported = world.export();
    let seqs: Vec<u64> = exported.lines().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=held).collect::<Vec<_>>());
    assert!(exported.unreadable().is_empty(), "{}", exported.summary.to_text());
    let errors = &exported.only_stream().info.errors;
    assert!(errors.iter().all(|e| e.contains("incomplete")), "{errors:?}");
    // Whatever was captured wholly inside the held part is there.
    for e in captured.in_scope() {
        if let verbatim_core::CaptureOutcome::Captured { last_seq, .. } = e.outcome
            && last_seq <= held
        {
            let quoted = format!("\"{}\"", e.event.meta().source_id);
            assert!(exported.only_stream().text.contains(&quoted), "{quoted} is held");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relinked_alteration_of_a_record_the_archive_holds_is_caught_by_the_device_before_it_deletes() {
    // As above, but the device dies before resending, and the queue is altered while it is
    // down. At the next start the cursor says the archive holds the batch; the device compares
    // the archive's link with its own for that sequence, finds them different, and stops
    // without deleting anything or sending a record that could not continue the chain.
    let world = World::with_faults({
        let plan = verbatim_receiver::FaultPlan::new();
        plan.push(Fault::DropAfterCommit);
        plan
    })
    .await;
    let agent = world.device(&[]).await;
    let captured = world.capture_batches(&agent, 66, 3).await;
    let pause = RecordingPause::hanging();
    let session = {
        let agent = agent.clone();
        let pause = pause.clone();
        tokio::spawn(async move { agent.upload(upload_options(std::time::Duration::from_secs(30), pause)).await })
    };
    // The archive committed, dropped the connection, and the device is waiting to resend.
    pause.wait_paused(1).await;
    session.abort();
    let _ = session.await;
    let acked_before = agent.status().acked_through;
    agent.close().await.unwrap();
    let held = world.verify().streams[0].contiguous_through;
    assert!(held >= 3 && held > acked_before);
    tamper_queue_record(&world.device_dir(), 3, Tamper::Relinked);

    let agent = world.reopen().await;
    let report = upload_once(&agent).await;
    assert_eq!(report.stopped, StopReason::Error, "{report:?}");
    assert_eq!(report.error_kind.map(|k| k.as_str()), Some("conflict"), "{report:?}");
    assert!(report.detail.as_deref().unwrap().contains(&format!("holds a different record at sequence {held}")), "{report:?}");
    assert_eq!(report.records_sent, 0, "nothing sent");
    assert_eq!(agent.status().acked_through, acked_before, "nothing deleted on a diverging cursor");
    agent.close().await.unwrap();

    let verify = world.verify();
    let stream = &verify.streams[0];
    assert_eq!(stream.contiguous_through, held, "nothing stored past what was held");
    assert!(stream.chain_verified && stream.alerts.is_empty(), "{}", verify.to_text());
    let exported = world.export();
    assert!(exported.unreadable().is_empty(), "the archive holds the originals: {}", exported.summary.to_text());
    assert_eq!(exported.max_seq(), held);
    assert!(captured.last_seq() > held, "the rest stays on the device");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_batch_is_a_no_op_and_an_altered_replay_is_a_conflict() {
    let world = World::start().await;
    let agent = world.device(&[]).await;
    let mut captured = world.capture_batches(&agent, 67, 3).await;
    // Exactly what the uploader will send first.
    let first = agent.read_batch(BATCH_KB as usize * 1024).unwrap().expect("a batch");
    assert_eq!(first.records[0].seq, 1);
    assert!(first.records.len() >= 3);
    upload_until_done(&agent, 1).await;
    // The device carries on.
    captured.extend(world.capture(&agent, 68, 20).await);
    upload_until_done(&agent, 1).await;
    let held = agent.status().last_seq;
    agent.close().await.unwrap();

    // Replayed as it was: 200, all duplicates, nothing changes.
    let (status, body) = world.post_batch(&first).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stored"], 0);
    assert_eq!(body["duplicates"], first.records.len() as u64);
    assert_eq!(body["acked_through"], held);
    world.assert_archive_complete(held);

    // Replayed with one ciphertext altered (links as they were): 409 conflict, an alert.
    let mut altered = first.clone();
    altered.records[1].ciphertext[0] ^= 0x80;
    for _ in 0..2 {
        let (status, body) = world.post_batch(&altered).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"], "conflict");
        assert_eq!(body["expected_seq"], held + 1);
    }
    // And with the links recomputed over the altered ciphertext: the same.
    let mut relinked = altered.clone();
    let mut prev = chain::genesis(&relinked.stream);
    for r in &mut relinked.records {
        r.link = chain::link(&prev, r.seq, r.epoch, &r.ciphertext);
        prev = r.link;
    }
    let (status, body) = world.post_batch(&relinked).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")), "{body}");

    let verify = world.verify();
    assert!(!verify.ok());
    let stream = &verify.streams[0];
    assert_eq!(stream.contiguous_through, held, "nothing stored from the replays");
    assert!(stream.chain_verified);
    let kinds: Vec<&str> = stream.alerts.iter().map(|a| a.kind.as_str()).collect();
    // Three refused replays of sequence 2, one alert: a repeat of the latest alert is not stored.
    assert_eq!(kinds, ["equivocation"], "{}", verify.to_text());
    assert!(stream.alerts[0].detail.contains("sequence 2"), "{}", verify.to_text());
    world.export().assert_exactly_once(&captured);
}
