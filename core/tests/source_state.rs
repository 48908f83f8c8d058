//! What a capture source remembers commits with what it captured: both or neither, across
//! failures, restarts and recovery; refused captures remember nothing; content is remembered
//! by keyed digest only.

mod support;

use support::*;
use verbatim_core::model::*;
use verbatim_core::queue::recover::{RecoverOptions, recover_with};
use verbatim_core::sources::Mark;
use verbatim_core::synth::BUSINESS_LINE;
use verbatim_core::{CaptureOutcome, ErrorKind};

const SOURCE: &str = "test-source";

fn message(id: &str, line: &str) -> Event {
    Event::Message(Message {
        meta: EventMeta {
            channel: Channel::Sms,
            line: line.into(),
            conversation_id: "thread-1".into(),
            source_id: id.into(),
            source_time_ms: 1_767_225_600_000,
        },
        direction: Direction::Inbound,
        sender: "+15555550111".into(),
        recipients: vec![line.into()],
        text: "the text the source never writes down".into(),
        attachment_ids: vec![],
        reply_to: None,
    })
}

fn seen(id: &str) -> Vec<Mark> {
    vec![Mark::set(SOURCE, format!("row:{id}"), b"1".to_vec())]
}

fn keys(agent: &verbatim_core::Agent) -> Vec<String> {
    agent.source_state(SOURCE).unwrap().into_keys().collect()
}

#[tokio::test]
async fn marks_commit_with_their_capture_and_out_of_scope_rows_are_remembered_too() {
    let s = Setup::new();
    let agent = s.open();
    // Not configured: the capture is refused and nothing is remembered, so the source offers
    // the row again once a policy is in force.
    let e = agent.capture_marked(message("1", BUSINESS_LINE), seen("1")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotConfigured);
    assert!(keys(&agent).is_empty());

    agent.apply_policy(&s.policy(&[])).await.unwrap();
    let before = agent.status().last_seq;
    assert!(matches!(
        agent.capture_marked(message("1", BUSINESS_LINE), seen("1")).await.unwrap(),
        CaptureOutcome::Captured { .. }
    ));
    assert_eq!(keys(&agent), ["row:1"]);
    assert!(agent.status().last_seq > before);

    // A personal line: nothing stored but the mark, so the next scan skips the row.
    let before = agent.status().last_seq;
    assert_eq!(agent.capture_marked(message("2", "+15555550999"), seen("2")).await.unwrap(), CaptureOutcome::OutOfScope);
    assert_eq!(keys(&agent), ["row:1", "row:2"]);
    assert_eq!(agent.status().last_seq, before);

    // Marks without a capture, and forgetting.
    agent.save_marks(vec![Mark::set(SOURCE, "baseline", b"42".to_vec()), Mark::forget(SOURCE, "row:2")]).await.unwrap();
    assert_eq!(keys(&agent), ["baseline", "row:1"]);
    assert!(agent.source_state("another-source").unwrap().is_empty(), "each source sees its own keys");
}

#[tokio::test]
async fn a_capture_that_fails_in_the_store_leaves_no_mark_and_a_mark_that_fails_leaves_no_record() {
    let s = Setup::new();
    let agent = s.open();
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    let db = s.db();

    // The records fail: the mark goes with them.
    let next = agent.status().last_seq + 1;
    db.execute_batch(&format!(
        "CREATE TRIGGER injected BEFORE INSERT ON records WHEN NEW.seq = {next} BEGIN SELECT RAISE(ABORT, 'injected'); END;"
    ))
    .unwrap();
    assert_eq!(agent.capture_marked(message("1", BUSINESS_LINE), seen("1")).await.unwrap_err().kind, ErrorKind::Storage);
    db.execute_batch("DROP TRIGGER injected;").unwrap();
    assert!(keys(&agent).is_empty());

    // The mark fails: the records go with it.
    let before = agent.status().last_seq;
    db.execute_batch("CREATE TRIGGER injected BEFORE INSERT ON source_state BEGIN SELECT RAISE(ABORT, 'injected'); END;")
        .unwrap();
    assert_eq!(agent.capture_marked(message("1", BUSINESS_LINE), seen("1")).await.unwrap_err().kind, ErrorKind::Storage);
    db.execute_batch("DROP TRIGGER injected;").unwrap();
    assert_eq!(agent.status().last_seq, before, "no record of the failed capture was kept");
    let captured = open_all(&s).iter().filter(|(_, r)| matches!(r.body, verbatim_core::record::RecordBody::Message(_))).count();
    assert_eq!(captured, 0);

    // Offered again, it is captured once, with its mark.
    agent.capture_marked(message("1", BUSINESS_LINE), seen("1")).await.unwrap();
    assert_eq!(keys(&agent), ["row:1"]);
    let captured = open_all(&s).iter().filter(|(_, r)| matches!(r.body, verbatim_core::record::RecordBody::Message(_))).count();
    assert_eq!(captured, 1);
}

#[tokio::test]
async fn marks_and_the_digest_key_survive_restart_and_recovery_and_no_text_reaches_the_disk() {
    let s = Setup::new();
    let agent = s.open();
    agent.apply_policy(&s.policy(&[])).await.unwrap();
    let text = "the text the source never writes down";
    let digest = agent.content_digest(SOURCE, text.as_bytes());
    let mut marks = seen("1");
    marks.push(Mark::set(SOURCE, "body:1", digest.to_vec()));
    agent.capture_marked(message("1", BUSINESS_LINE), marks).await.unwrap();
    agent.close().await.unwrap();
    drop(agent);

    let agent = s.open();
    assert_eq!(agent.content_digest(SOURCE, text.as_bytes()), digest, "the digest key is the store's, kept across runs");
    assert_eq!(agent.source_state(SOURCE).unwrap()["body:1"], digest.to_vec());
    agent.close().await.unwrap();
    drop(agent);

    let report = recover_with(s.dir.path(), RecoverOptions { force: true, ..Default::default() }).unwrap();
    assert!(report.rebuilt, "{report:?}");
    let agent = s.open();
    assert_eq!(keys(&agent), ["body:1", "row:1"], "recovery carries the sources' memory over");
    assert_eq!(agent.content_digest(SOURCE, text.as_bytes()), digest);
    agent.close().await.unwrap();
    drop(agent);

    // Another store digests the same text differently.
    let other = Setup::new();
    assert_ne!(other.open().content_digest(SOURCE, text.as_bytes()), digest);

    for (path, bytes) in all_files(s.dir.path()) {
        assert!(!contains(&bytes, text.as_bytes()), "captured text in {}", path.display());
    }
}
