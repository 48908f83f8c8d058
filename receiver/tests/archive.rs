//! The archive side after upload: verify detects tampering done behind the receiver's back,
//! and export opens every record kind and reassembles attachments exactly.

mod support;

use std::path::Path;

use base64::Engine as _;
use support::*;
use verbatim_core::record::{Record, RecordBody};
use verbatim_receiver::{AcceptedKeys, add_device, export, keygen, load_secret, verify};

/// Uploads `records` as one stream through a real receiver, in batches of `per`.
async fn upload(dir: &Path, archive: &Archive, stream: &str, records: &[Record], per: usize) -> Device {
    let mut cfg = config(dir);
    cfg.archive_keys = AcceptedKeys::from_public_keys([&archive.public]);
    let rx = start(cfg).await;
    let token = add_device(&tokens_path(dir), "acme", &format!("dev-{stream}")).unwrap();
    let client = client(rx.ca_pem().unwrap());
    let mut dev = Device::new(archive, "acme", &format!("dev-{stream}"), stream);
    for r in records {
        dev.push(r);
    }
    let n = dev.records.len() as u64;
    let mut first = 1;
    while first <= n {
        let last = (first + per as u64 - 1).min(n);
        assert_eq!(post(&client, &rx.url(), token.expose(), &dev.batch(first, last)).await.ack().acked_through, last);
        first = last + 1;
    }
    rx.shutdown().await;
    dev
}

fn tamper(dir: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(dir.join("archive.db")).unwrap();
    conn.execute_batch(sql).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_detects_records_altered_or_removed_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_keys();
    let mut records = Vec::new();
    for i in 0..8 {
        records.push(Record::new(
            i,
            RecordBody::Agent(verbatim_core::record::AgentEvent::QueueCorrupt { detail: format!("test {i}") }),
        ));
    }
    upload(dir.path(), &archive, "s-1", &records, 3).await;
    assert!(verify(dir.path()).unwrap().ok());

    // The schema itself refuses rewriting history...
    let conn = rusqlite::Connection::open(dir.path().join("archive.db")).unwrap();
    assert!(conn.execute("UPDATE records SET ciphertext = x'00' WHERE seq = 3", []).is_err());
    assert!(conn.execute("DELETE FROM records WHERE seq = 5", []).is_err());
    drop(conn);
    // ...so an attacker with the file drops the triggers first.
    tamper(
        dir.path(),
        "DROP TRIGGER records_append_only_u; DROP TRIGGER records_append_only_d;
         UPDATE records SET ciphertext = substr(ciphertext, 1, 10) || x'ff' || substr(ciphertext, 12) WHERE seq = 3;
         DELETE FROM records WHERE seq = 6;",
    );
    let report = verify(dir.path()).unwrap();
    assert!(!report.ok());
    let s = &report.streams[0];
    assert_eq!((s.records, s.first_seq, s.last_seq, s.contiguous_through), (7, Some(1), Some(8), 5));
    assert_eq!(s.gaps, [verbatim_receiver::verify::SeqRange { first: 6, last: 6 }]);
    assert_eq!(s.chain_breaks, [3]);
    assert!(!s.chain_verified);
    let text = report.to_text();
    assert!(text.contains("sequences 6..6 missing") && text.contains("at 3"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["totals"]["ok"], false);

    // An altered link breaks its own record and the next one.
    tamper(dir.path(), "UPDATE records SET link = zeroblob(32) WHERE seq = 7;");
    assert_eq!(verify(dir.path()).unwrap().streams[0].chain_breaks, [3, 8]);
}

/// The body of a MIME part or message: (unfolded headers, body).
fn split(msg: &str) -> (String, String) {
    let (h, b) = msg.split_once("\r\n\r\n").unwrap();
    (h.replace("\r\n ", " "), b.to_string())
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.split("\r\n").find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

fn qp_decode(s: &str) -> String {
    let s = s.replace("=\r\n", "");
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn parts(body: &str, boundary: &str) -> Vec<String> {
    body.split(&format!("--{boundary}"))
        .skip(1)
        .filter(|p| !p.starts_with("--"))
        .map(|p| p.trim_start_matches("\r\n").to_string())
        .collect()
}

fn boundary(headers: &str) -> String {
    let ct = header(headers, "Content-Type").unwrap();
    ct.split("boundary=\"").nth(1).unwrap().trim_end_matches('"').to_string()
}

fn eml(stream_dir: &Path, rel: &str) -> String {
    let bytes = std::fs::read(stream_dir.join(rel)).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.is_ascii(), "{rel}: 8-bit content in a message");
    assert!(!text.replace("\r\n", "").contains(['\n', '\r']), "{rel}: bare line break");
    assert!(text.split("\r\n").all(|l| l.len() <= 998), "{rel}: line too long");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_round_trips_every_record_kind() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let info = keygen(&keys_dir).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&info.private_path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let secret = load_secret(&info.private_path).unwrap();
    let public: [u8; 32] = base64::engine::general_purpose::STANDARD.decode(&info.public_b64).unwrap().try_into().unwrap();
    let archive = Archive { secret: load_secret(&info.private_path).unwrap(), public, key_id: info.key_id.clone() };
    let data = dir.path().join("data");
    let records = every_kind();
    upload(&data, &archive, "s-1", &records, 4).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = data.join(verbatim_receiver::tls::SERVER_KEY_FILE);
        assert_eq!(std::fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600);
    }

    let out = dir.path().join("out");
    let summary = export(&data, &secret, &out).unwrap();
    assert!(summary.ok(), "{}", summary.to_text());
    let s = &summary.streams[0];
    assert_eq!(s.records as usize, records.len());
    assert_eq!((s.messages, s.edits, s.unsends, s.reactions, s.calls), (2, 1, 1, 1, 1));
    assert_eq!((s.attachments, s.attachments_omitted, s.agent_events), (2, 1, 4));
    // One .eml per message, edit, unsend, reaction, call, attachment, omission, agent event.
    assert_eq!(s.eml_files, 2 + 1 + 1 + 1 + 1 + 1 + 1 + 4);
    assert_eq!(s.jsonl, "acme/dev-s-1/s-1.jsonl");

    // JSON Lines: one object per record, carrying the record's own fields exactly.
    let jsonl = std::fs::read_to_string(out.join(&s.jsonl)).unwrap();
    let lines: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), records.len());
    for (i, (line, rec)) in lines.iter().zip(&records).enumerate() {
        assert_eq!(line["seq"], i as u64 + 1);
        assert_eq!(line["captured"], verbatim_receiver::time::rfc3339(rec.captured_ms));
        let body: RecordBody = serde_json::from_value(line.clone()).unwrap();
        assert_eq!(body, rec.body, "line {i}");
        if let RecordBody::AttachmentChunk { .. } = rec.body {
            assert_eq!(line["payload_bytes"], rec.payload.len());
        }
    }

    // Attachments reassembled byte for byte, SHA-256 checked.
    let stream_dir = out.join("acme/dev-s-1/s-1");
    let ends: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "attachment_end").collect();
    assert_eq!(ends.len(), 2);
    for (end, want) in ends.iter().zip([pdf_bytes(), recording_bytes()]) {
        assert_eq!(end["sha256_verified"], true);
        let file = end["file"].as_str().unwrap();
        assert!(!file.contains("att/1"), "ids are sanitised: {file}");
        assert_eq!(std::fs::read(stream_dir.join(file)).unwrap(), want);
    }

    // The first message: addresses, ids, custom headers, the text.
    let msg_line = lines.iter().find(|l| l["source_id"].is_null() && l["meta"]["source_id"] == "msg-1").unwrap();
    let text = eml(&stream_dir, msg_line["eml"].as_str().unwrap());
    let (h, body) = split(&text);
    assert_eq!(header(&h, "From"), Some("\"+15550100\" <+15550100@whatsapp.verbatim.invalid>"));
    let to = header(&h, "To").unwrap();
    assert!(to.contains("=?UTF-8?B?") && to.contains("<Zo=C3=AB=20M=C3=BCller@whatsapp.verbatim.invalid>"), "{to}");
    assert_eq!(header(&h, "Date"), Some("Tue, 01 Jul 2025 10:00:00 +0000"));
    assert_eq!(header(&h, "Message-ID"), Some("<msg-1@whatsapp.verbatim.invalid>"));
    assert_eq!(header(&h, "X-Verbatim-Channel"), Some("whatsapp"));
    assert_eq!(header(&h, "X-Verbatim-Direction"), Some("outbound"));
    assert_eq!(header(&h, "X-Verbatim-Seq"), Some("3"));
    assert_eq!(header(&h, "X-Verbatim-Device"), Some("dev-s-1"));
    assert_eq!(header(&h, "X-Verbatim-Captured"), Some("2025-07-01T10:00:00.002Z"));
    assert!(header(&h, "X-Verbatim-Conversation").unwrap().starts_with("=?UTF-8?B?"));
    assert_eq!(qp_decode(&body), "Bonjour Zoë — the price is €1,000.\r\nSecond line = fine.\r\n\r\n");

    // The reply points at its parent.
    let reply = lines.iter().find(|l| l["meta"]["source_id"] == "msg-2").unwrap();
    let (h, _) = split(&eml(&stream_dir, reply["eml"].as_str().unwrap()));
    assert_eq!(header(&h, "In-Reply-To"), Some("<msg-1@whatsapp.verbatim.invalid>"));

    // The attachment's own message carries the file and replies to its message.
    let (h, body) = split(&eml(&stream_dir, ends[0]["eml"].as_str().unwrap()));
    assert_eq!(header(&h, "In-Reply-To"), Some("<msg-1@whatsapp.verbatim.invalid>"));
    let ps = parts(&body, &boundary(&h));
    assert_eq!(ps.len(), 2);
    let (ph, pb) = split(&ps[1]);
    assert!(header(&ph, "Content-Type").unwrap().starts_with("application/pdf; name*=UTF-8''term%20sheet%20%C3%A9.pdf"));
    let decoded = base64::engine::general_purpose::STANDARD.decode(pb.replace("\r\n", "")).unwrap();
    assert_eq!(decoded, pdf_bytes());

    // The call carries its recording.
    let call = lines.iter().find(|l| l["type"] == "call").unwrap();
    let (h, body) = split(&eml(&stream_dir, call["eml"].as_str().unwrap()));
    assert_eq!(header(&h, "From"), Some("\"+15550111\" <+15550111@voice.verbatim.invalid>"));
    assert!(header(&h, "Subject").unwrap().contains("answered, inbound, 5 min 12 s"));
    let ps = parts(&body, &boundary(&h));
    assert!(qp_decode(&split(&ps[0]).1).contains("Recording: attached (call-1.m4a"));
    let decoded = base64::engine::general_purpose::STANDARD.decode(split(&ps[1]).1.replace("\r\n", "")).unwrap();
    assert_eq!(decoded, recording_bytes());

    // Edits, unsends, reactions, omissions and agent events say what they are.
    for (ty, subject_part) in [
        ("edit", "Edit of message msg-2"),
        ("unsend", "Message msg-2 unsent"),
        ("attachment_omitted", "Attachment not captured: huge.mov"),
    ] {
        let l = lines.iter().find(|l| l["type"] == ty).unwrap();
        let (h, _) = split(&eml(&stream_dir, l["eml"].as_str().unwrap()));
        assert!(header(&h, "Subject").unwrap().contains(subject_part), "{ty}");
    }
    let reaction = lines.iter().find(|l| l["type"] == "reaction").unwrap();
    let (h, _) = split(&eml(&stream_dir, reaction["eml"].as_str().unwrap()));
    assert!(header(&h, "Subject").unwrap().starts_with("=?UTF-8?B?"), "emoji subject is encoded");
    let agent = lines.iter().find(|l| l["type"] == "agent" && l["event"] == "clock_jumped").unwrap();
    let (h, body) = split(&eml(&stream_dir, agent["eml"].as_str().unwrap()));
    assert_eq!(header(&h, "Subject"), Some("Verbatim agent event: clock_jumped"));
    assert!(qp_decode(&body).contains("delta_ms: 3600000"));

    // Exporting again overwrites cleanly and gives the same result.
    assert_eq!(export(&data, &secret, &out).unwrap(), summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_reports_a_wrong_sha256_and_records_that_do_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_keys();
    let data = dir.path().join("data");
    let header = verbatim_core::record::AttachmentHeader {
        meta: verbatim_core::model::EventMeta {
            channel: verbatim_core::Channel::Sms,
            line: "+1".into(),
            conversation_id: "c".into(),
            source_id: "a".into(),
            source_time_ms: 0,
        },
        attachment_id: "a".into(),
        message_id: None,
        direction: verbatim_core::Direction::Inbound,
        sender: "+2".into(),
        file_name: "f.bin".into(),
        mime_type: "application/octet-stream".into(),
        size: 5,
    };
    let mut recs = attachment_records(header, b"hello", 2, 0);
    if let RecordBody::AttachmentEnd { sha256, .. } = &mut recs.last_mut().unwrap().body {
        *sha256 = "00".repeat(32);
    }
    upload(&data, &archive, "s-1", &recs, 10).await;
    let out = dir.path().join("out");
    let summary = export(&data, &archive.secret, &out).unwrap();
    assert!(!summary.ok());
    assert_eq!(summary.errors, 1);
    assert!(summary.streams[0].errors[0].contains("does not match"), "{:?}", summary.streams[0].errors);

    // Another archive's key opens nothing: one error for the epoch (not one per record), every
    // record counted unreadable and still a line, none written as content.
    let (other, _) = verbatim_core::seal::generate_archive_keypair();
    let summary = export(&data, &other, &dir.path().join("out2")).unwrap();
    assert_eq!(summary.errors, 1);
    assert_eq!(summary.unreadable as usize, recs.len());
    assert_eq!(
        summary.streams[0].errors,
        [format!("epoch 1: no private key for archive key id {} ({} records unreadable)", archive.key_id, recs.len())]
    );
    let jsonl = std::fs::read_to_string(dir.path().join("out2").join(&summary.streams[0].jsonl)).unwrap();
    assert!(jsonl.lines().all(|l| l.contains("\"type\":\"unreadable\"")));
}
