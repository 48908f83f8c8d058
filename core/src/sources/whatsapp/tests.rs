use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::*;
use crate::policy::Value;
use crate::record::RecordBody;
use crate::synth::sample_policy;

const LINE: &str = "+15550783881";
const OTHER_NUMBER: &str = "15550009999";
const PEER: &str = "16505551234";
const SECRET: &str = "app-secret-for-tests";

struct Setup {
    w: Webhook,
    secret: crate::seal::ArchiveSecretKey,
}

impl std::ops::Deref for Setup {
    type Target = Webhook;
    fn deref(&self) -> &Webhook {
        &self.w
    }
}

fn webhook(dir: &std::path::Path) -> Setup {
    let (secret, public) = crate::seal::generate_archive_keypair();
    let tree = sample_policy("https://archive.acme.test", &public, "tok", &[("business_lines", Value::String(LINE.into()))]);
    let lines = Arc::new(Lines::new(SOURCE, dir, tree, BTreeMap::new()).unwrap());
    Setup { w: Webhook::new(lines, Secret::new(SECRET), Secret::new("verify-me"), None), secret }
}

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 - 60
}

fn body(display: &str, field: &str, value: Json) -> Vec<u8> {
    let mut value = value;
    value["metadata"] = json!({"display_phone_number": display, "phone_number_id": "1"});
    json!({"object": "whatsapp_business_account", "entry": [{"id": "2", "changes": [{"field": field, "value": value}]}]})
        .to_string()
        .into_bytes()
}

fn text(id: &str, words: &str) -> Json {
    json!({"from": PEER, "id": id, "timestamp": now_s().to_string(), "type": "text", "text": {"body": words}})
}

async fn post(w: &Setup, body: &[u8]) -> Result<Delivery, Refusal> {
    let signature = sign(SECRET.as_bytes(), body);
    w.deliver(body, Some(&signature), &mut |_| {}).await
}

/// Every captured record's kind and source id on the line's stream, in order.
fn captured(w: &Setup) -> Vec<(String, String)> {
    let (_, agent) = w.lines().opened().into_iter().next().unwrap();
    let batch = agent.read_batch(usize::MAX).unwrap().unwrap();
    let mut opener = crate::archive::Opener::new(crate::seal::ArchiveSecretKey::from_bytes(w.secret.as_bytes()).unwrap());
    let records = opener.open_batch(&batch, 0, crate::chain::genesis(&batch.stream)).unwrap();
    let mut out = Vec::new();
    for (_, record) in records {
        match record.body {
            RecordBody::Message(m) => out.push(("message".into(), m.meta.source_id.clone())),
            RecordBody::AttachmentStart(h) => out.push(("attachment".into(), h.attachment_id.clone())),
            RecordBody::AttachmentOmitted { header, .. } => out.push(("omitted".into(), header.attachment_id.clone())),
            _ => {}
        }
    }
    out
}

#[test]
fn signatures_are_hmac_sha256_of_the_raw_body() {
    let s = sign(b"k", b"body");
    assert!(signature_valid(b"k", b"body", Some(&s)));
    assert!(!signature_valid(b"k", b"body ", Some(&s)), "another body");
    assert!(!signature_valid(b"K", b"body", Some(&s)), "another secret");
    assert!(!signature_valid(b"k", b"body", Some(&s.replace("sha256=", "sha1="))));
    assert!(!signature_valid(b"k", b"body", Some("sha256=zz")));
    assert!(!signature_valid(b"k", b"body", None));
}

#[tokio::test]
async fn a_bad_signature_is_refused_counted_and_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let w = webhook(dir.path());
    let b = body(LINE, "messages", json!({"messages": [text("wamid.1", "hello")]}));
    let wrong = sign(b"not the secret", &b);
    for sig in [Some(wrong.as_str()), None] {
        assert!(matches!(w.deliver(&b, sig, &mut |_| {}).await, Err(Refusal::BadSignature)));
    }
    assert_eq!(w.bad_signatures(), 2);
    assert!(w.lines().opened().is_empty(), "no store was even opened");
    // Signed garbage is malformed, by field.
    let Err(Refusal::Malformed(why)) = post(&w, b"[1,2]").await else { panic!() };
    assert!(why.contains("`object`"), "{why}");
}

#[test]
fn the_handshake_echoes_the_challenge_only_for_the_verify_token() {
    let dir = tempfile::tempdir().unwrap();
    let w = webhook(dir.path());
    assert_eq!(w.handshake(Some("subscribe"), Some("verify-me"), Some("1158201444")), Some("1158201444"));
    assert_eq!(w.handshake(Some("subscribe"), Some("verify-mE"), Some("1158201444")), None);
    assert_eq!(w.handshake(Some("unsubscribe"), Some("verify-me"), Some("1")), None);
    assert_eq!(w.handshake(Some("subscribe"), None, Some("1")), None);
}

#[tokio::test]
async fn redeliveries_replays_and_batches_capture_each_wamid_once_and_other_lines_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let w = webhook(dir.path());
    let first = body(LINE, "messages", json!({"messages": [text("wamid.1", "one"), text("wamid.2", "two")]}));
    let d = post(&w, &first).await.unwrap();
    assert_eq!(d.captured, ["wamid.1", "wamid.2"]);
    // Meta delivers the same body again, then a batch repeating one and adding one.
    let again = post(&w, &first).await.unwrap();
    assert_eq!((again.captured.len(), again.duplicates), (0, 2));
    let batch = body(LINE, "messages", json!({"messages": [text("wamid.3", "three"), text("wamid.2", "two")]}));
    let d = post(&w, &batch).await.unwrap();
    assert_eq!((d.captured.as_slice(), d.duplicates), (&["wamid.3".to_string()][..], 1));
    // A number not in business_lines: nothing opened, nothing stored.
    let other = body(OTHER_NUMBER, "messages", json!({"messages": [text("wamid.9", "personal")]}));
    let d = post(&w, &other).await.unwrap();
    assert_eq!((d.captured.len(), d.out_of_scope), (0, 1));
    assert_eq!(w.lines().opened().len(), 1);
    assert!(!dir.path().join(crate::sources::whatsapp::payload::e164(OTHER_NUMBER)).exists());
    // Statuses change nothing.
    let status = body(
        LINE,
        "messages",
        json!({"statuses": [{"id": "wamid.1", "status": "read", "timestamp": "1", "recipient_id": PEER}]}),
    );
    let d = post(&w, &status).await.unwrap();
    assert_eq!((d.captured.len(), d.ignored), (0, 1));
    let kinds = captured(&w);
    let messages: Vec<&str> = kinds.iter().filter(|(k, _)| k == "message").map(|(_, id)| id.as_str()).collect();
    assert_eq!(messages, ["wamid.1", "wamid.2", "wamid.3"]);
    w.lines().close().await;
}

#[tokio::test]
async fn media_that_cannot_be_fetched_is_recorded_omitted_with_its_message_and_kept_for_retry() {
    let dir = tempfile::tempdir().unwrap();
    let w = webhook(dir.path());
    let image = json!({"from": PEER, "id": "wamid.I", "timestamp": now_s().to_string(), "type": "image",
        "image": {"id": "4321", "mime_type": "image/jpeg", "caption": "the plan"}});
    let d = post(&w, &body(LINE, "messages", json!({ "messages": [image] }))).await.unwrap();
    assert_eq!((d.captured.as_slice(), d.media_omitted), (&["wamid.I".to_string()][..], 1));
    assert_eq!(
        captured(&w),
        [("omitted".to_string(), "wamid.I/image".to_string()), ("message".to_string(), "wamid.I".to_string())]
    );
    let (_, agent) = w.lines().opened().into_iter().next().unwrap();
    assert!(agent.source_value(SOURCE, "retry:wamid.I/image").unwrap().is_some());
    // Without Graph access nothing can be retried; the entry stays.
    assert_eq!(w.retry_media(&mut |_| {}).await.unwrap(), 0);
    assert!(agent.source_value(SOURCE, "retry:wamid.I/image").unwrap().is_some());
    w.lines().close().await;
}

#[tokio::test]
async fn an_item_no_event_can_be_made_of_is_evidenced_once() {
    let dir = tempfile::tempdir().unwrap();
    let w = webhook(dir.path());
    // A time two days ahead: the agent refuses it; evidenced, acknowledged, not offered again.
    let ahead = (now_s() + 2 * 86_400).to_string();
    let m = json!({"from": PEER, "id": "wamid.F", "timestamp": ahead, "type": "text", "text": {"body": "x"}});
    let b = body(LINE, "messages", json!({ "messages": [m] }));
    assert_eq!(post(&w, &b).await.unwrap().refused, 1);
    assert_eq!(post(&w, &b).await.unwrap().duplicates, 1);
    w.lines().close().await;
}

#[tokio::test]
async fn a_redelivery_racing_the_first_is_answered_not_durable_and_captures_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let w = webhook(dir.path());
    let b = body(LINE, "messages", json!({"messages": [text("wamid.R", "racing")]}));
    // The first delivery holds the message (it is being captured)...
    w.in_flight.lock().unwrap().insert((LINE.to_string(), "wamid.R".to_string()));
    let Err(Refusal::NotDurable(e)) = post(&w, &b).await else { panic!("the racing delivery must not be acknowledged") };
    assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
    // ...and once it is done, Meta's next delivery is a duplicate or the capture itself.
    w.in_flight.lock().unwrap().clear();
    assert_eq!(post(&w, &b).await.unwrap().captured, ["wamid.R"]);
    assert_eq!(post(&w, &b).await.unwrap().duplicates, 1);
    w.lines().close().await;
}
