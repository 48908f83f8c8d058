//! Nothing secret or captured reaches the receiver's logs: no token, no plaintext, no
//! ciphertext, no identifier from a batch body. (Its own binary: the subscriber is global.)

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use support::*;
use verbatim_core::model::{Channel, Direction, EventMeta, Message};
use verbatim_core::record::{Record, RecordBody};
use verbatim_core::wire::CONTENT_TYPE;
use verbatim_receiver::add_device;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_hold_sizes_and_sequence_numbers_only() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_ansi(false).with_writer(move || writer.clone()).init();

    let dir = tempfile::tempdir().unwrap();
    let rx = start(config(dir.path())).await;
    let (tenant, device, stream) = ("tenant-NAME-7731", "device-NAME-1187", "stream-NAME-5521");
    let token = add_device(&tokens_path(dir.path()), tenant, device).unwrap();
    let client = client(rx.ca_pem().unwrap());
    let mut dev = Device::new(&archive_keys(), tenant, device, stream);
    let secret_text = "PLAINTEXT-never-logged-4412";
    dev.push(&Record::new(
        1,
        RecordBody::Message(Message {
            meta: EventMeta {
                channel: Channel::Sms,
                line: "+1555".into(),
                conversation_id: "c".into(),
                source_id: "m".into(),
                source_time_ms: 1,
            },
            direction: Direction::Outbound,
            sender: "+1555".into(),
            recipients: vec!["+1666".into()],
            text: secret_text.into(),
            attachment_ids: vec![],
            reply_to: None,
        }),
    ));
    dev.push_n(3);
    post(&client, &rx.url(), token.expose(), &dev.batch(1, 2)).await.ack();
    // A conflict, a gap, a bad token, a malformed body, a cursor query.
    let mut evil = dev.batch(2, 2);
    evil.records[0].ciphertext[3] ^= 0x55;
    assert_eq!(post(&client, &rx.url(), token.expose(), &evil).await.status, 409);
    assert_eq!(post(&client, &rx.url(), token.expose(), &dev.batch(4, 4)).await.status, 409);
    let mut wrong = token.expose().to_string();
    wrong.replace_range(wrong.len() - 3.., "xyz");
    assert_eq!(post(&client, &rx.url(), &wrong, &dev.batch(3, 3)).await.status, 401);
    let r = post_raw(&client, &rx.url(), Some(token.expose()), CONTENT_TYPE, b"VBT1\x00\x05hello".to_vec()).await.unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(cursor(&client, &rx.url(), token.expose(), stream).await.status, 200);
    rx.shutdown().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("batch stored") && logs.contains("stream alert recorded"), "capture works:\n{logs}");
    let token_secret = token.expose().rsplit('.').next().unwrap().to_string();
    let mut forbidden = vec![
        token.expose().to_string(),
        token_secret,
        wrong,
        secret_text.to_string(),
        tenant.into(),
        device.into(),
        stream.into(),
    ];
    for r in &dev.records {
        forbidden.push(hex::encode(&r.ciphertext[..12]));
        forbidden.push(base64::engine::general_purpose::STANDARD.encode(&r.ciphertext[..12]));
        forbidden.push(hex::encode(r.link));
    }
    for f in &forbidden {
        assert!(!logs.contains(f.as_str()), "logs contain {f}:\n{logs}");
    }
}
