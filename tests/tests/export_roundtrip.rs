//! Everything captured is exported exactly once, with the content the app gave.

use verbatim_core::record::AgentEvent;
use verbatim_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_captured_is_exported_exactly_once_with_matching_content() {
    let world = World::start().await;
    let agent = world.device(&[]).await;

    // A few hundred events of every kind, some of them not business.
    let captured = world.capture(&agent, 2026, 300).await;
    assert!(captured.count("message") > 50, "the mix has messages");
    for kind in ["edit", "unsend", "reaction", "attachment", "call"] {
        assert!(captured.count(kind) > 0, "the mix has {kind} events");
    }
    assert!(captured.calls_with_recording() > 0, "the mix has recorded calls");
    assert!(captured.out_of_scope().count() > 0, "the mix has out-of-scope events");
    let status = agent.status();
    assert_eq!(status.last_seq, captured.last_seq());
    assert!(status.queue_bytes > 4 * BATCH_KB as u64 * 1024, "the upload spans several batches");

    let reports = upload_until_done(&agent, 2).await;
    assert_eq!(reports.len(), 1, "one session, no failure: {reports:?}");
    let report = &reports[0];
    assert!(report.batches > 4, "{report:?}");
    assert_eq!(report.retries, 0);
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.records_sent, status.last_seq);
    assert_eq!(report.acked_through, status.last_seq);
    agent.close().await.unwrap();

    world.assert_archive_complete(status.last_seq);
    let exported = world.export();
    exported.assert_exactly_once(&captured);
    let stream = exported.only_stream();
    assert_eq!(stream.info.records, status.last_seq);
    assert_eq!(stream.info.messages as usize, captured.count("message"));
    assert_eq!(stream.info.edits as usize, captured.count("edit"));
    assert_eq!(stream.info.unsends as usize, captured.count("unsend"));
    assert_eq!(stream.info.reactions as usize, captured.count("reaction"));
    assert_eq!(stream.info.calls as usize, captured.count("call"));
    assert_eq!(stream.info.attachments as usize, captured.count("attachment") + captured.calls_with_recording());
    assert_eq!(stream.info.attachments_omitted, 0);

    // The agent's own story is in the same chain.
    let events = exported.agent_events();
    assert!(events.iter().any(|e| matches!(e, AgentEvent::Started { after_crash: false, .. })), "{events:?}");
    assert!(
        events.iter().any(|e| matches!(e, AgentEvent::PolicyApplied { policy_version, .. } if policy_version == "2026.11-1")),
        "{events:?}"
    );
    assert!(events.iter().any(|e| matches!(e, AgentEvent::EpochRotated { epoch: 1, .. })), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, AgentEvent::CaptureChannels { .. })), "{events:?}");
}
