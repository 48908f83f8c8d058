//! Shared test helpers: a simulated device that seals and chains records with the core, a
//! receiver on 127.0.0.1 with a self-signed CA, and an HTTPS client trusting only that CA.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use verbatim_core::chain::{self, Link, StreamId};
use verbatim_core::model::{CallOutcome, Channel, Direction, Edit, EventMeta, Message, Reaction, Unsend};
use verbatim_core::record::{AgentEvent, AttachmentHeader, CallRecord, Record, RecordBody};
use verbatim_core::seal::{self, ArchiveSecretKey, EpochKey};
use verbatim_core::wire::{ApiError, Batch, BatchAck, CONTENT_TYPE, EpochInfo, WireRecord};
use verbatim_receiver::{AcceptedKeys, Receiver, ReceiverConfig, RunningReceiver};

pub struct Archive {
    pub secret: ArchiveSecretKey,
    pub public: [u8; 32],
    pub key_id: String,
}

/// The archive key of this test process: made once, and the one [`config`] accepts.
pub fn archive_keys() -> Archive {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let bytes = KEY.get_or_init(|| *seal::generate_archive_keypair().0.as_bytes());
    let secret = ArchiveSecretKey::from_bytes(bytes).unwrap();
    let public = seal::public_key_of(&secret).unwrap();
    Archive { key_id: seal::key_id(&public), secret, public }
}

/// A key pair of another archive: what this receiver does not accept.
pub fn foreign_archive_keys() -> Archive {
    let (secret, public) = seal::generate_archive_keypair();
    Archive { key_id: seal::key_id(&public), secret, public }
}

/// A device stream as the agent would produce it: sealed, chained, contiguous.
pub struct Device {
    pub stream: StreamId,
    key: EpochKey,
    pub epoch: EpochInfo,
    pub prev: Link,
    pub records: Vec<WireRecord>,
}

impl Device {
    pub fn new(archive: &Archive, tenant: &str, device: &str, stream: &str) -> Device {
        let stream = StreamId { tenant: tenant.into(), device: device.into(), stream: stream.into() };
        let (key, encapsulation) = EpochKey::create(&archive.public, &stream, 1).unwrap();
        let epoch = EpochInfo { epoch: 1, archive_key_id: archive.key_id.clone(), encapsulation };
        Device { prev: chain::genesis(&stream), stream, key, epoch, records: Vec::new() }
    }

    /// The same device and epoch key with the same records so far: what a forked (cloned or
    /// tampered) device would continue from.
    pub fn fork(&self, archive: &Archive) -> Device {
        let key = EpochKey::open(&archive.secret, &self.epoch.encapsulation, &self.stream, 1).unwrap();
        Device { stream: self.stream.clone(), key, epoch: self.epoch.clone(), prev: self.prev, records: self.records.clone() }
    }

    pub fn next_seq(&self) -> u64 {
        self.records.len() as u64 + 1
    }

    pub fn push(&mut self, record: &Record) -> WireRecord {
        let seq = self.next_seq();
        let ciphertext = self.key.seal(&self.stream, seq, &self.prev, &record.encode()).unwrap();
        let link = chain::link(&self.prev, seq, 1, &ciphertext);
        self.prev = link;
        let w = WireRecord { seq, epoch: 1, link, ciphertext };
        self.records.push(w.clone());
        w
    }

    /// Pushes `n` small agent records.
    pub fn push_n(&mut self, n: usize) {
        for i in 0..n {
            self.push(&Record::new(
                1_700_000_000_000 + i as i64,
                RecordBody::Agent(AgentEvent::QueueCorrupt { detail: format!("test {i}") }),
            ));
        }
    }

    /// The batch of held records `first..=last`.
    pub fn batch(&self, first: u64, last: u64) -> Batch {
        Batch {
            stream: self.stream.clone(),
            epochs: vec![self.epoch.clone()],
            records: self.records[(first - 1) as usize..last as usize].to_vec(),
        }
    }
}

pub fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder().tls_backend_preconfigured(verbatim_receiver::tls::client_config(ca_pem).unwrap()).build().unwrap()
}

/// A receiver on 127.0.0.1 accepting [`archive_keys`].
pub fn config(dir: &Path) -> ReceiverConfig {
    ReceiverConfig::local_self_signed(dir, AcceptedKeys::from_public_keys([&archive_keys().public]))
}

pub async fn start(config: ReceiverConfig) -> RunningReceiver {
    Receiver::start(config).await.unwrap()
}

pub fn tokens_path(dir: &Path) -> PathBuf {
    dir.join("tokens.jsonl")
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: String,
}

impl Reply {
    pub fn ack(&self) -> BatchAck {
        assert_eq!(self.status, 200, "{}", self.body);
        serde_json::from_str(&self.body).unwrap()
    }

    pub fn error(&self) -> ApiError {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not an ApiError ({e}): {}", self.body))
    }
}

pub async fn post_raw(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Result<Reply> {
    let mut req = client.post(format!("{url}/v1/batches")).header("content-type", content_type).body(body);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let body = resp.text().await?;
    Ok(Reply { status, retry_after, body })
}

pub async fn post(client: &reqwest::Client, url: &str, token: &str, batch: &Batch) -> Reply {
    post_raw(client, url, Some(token), CONTENT_TYPE, batch.encode()).await.unwrap()
}

pub async fn cursor(client: &reqwest::Client, url: &str, token: &str, stream: &str) -> Reply {
    let resp = client.get(format!("{url}/v1/streams/{stream}/cursor")).bearer_auth(token).send().await.unwrap();
    let status = resp.status().as_u16();
    Reply { status, retry_after: None, body: resp.text().await.unwrap() }
}

fn meta(channel: Channel, source_id: &str, t: i64) -> EventMeta {
    EventMeta {
        channel,
        line: "+15550100".into(),
        conversation_id: "conv-ü-1".into(),
        source_id: source_id.into(),
        source_time_ms: t,
    }
}

/// A chunked attachment: start, chunks of `chunk` bytes, end with the right SHA-256.
pub fn attachment_records(header: AttachmentHeader, data: &[u8], chunk: usize, t: i64) -> Vec<Record> {
    use sha2::{Digest, Sha256};
    let id = header.attachment_id.clone();
    let mut out = vec![Record::new(t, RecordBody::AttachmentStart(header))];
    let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
    for (i, c) in chunks.iter().enumerate() {
        let mut r = Record::new(t, RecordBody::AttachmentChunk { attachment_id: id.clone(), index: i as u32 });
        r.payload = c.to_vec();
        out.push(r);
    }
    out.push(Record::new(
        t,
        RecordBody::AttachmentEnd {
            attachment_id: id,
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
            chunks: chunks.len() as u32,
        },
    ));
    out
}

pub fn pdf_bytes() -> Vec<u8> {
    (0..150_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

pub fn recording_bytes() -> Vec<u8> {
    (0..70_000u32).map(|i| (i % 251) as u8).collect()
}

/// One record of every kind, as a device would capture a busy conversation.
pub fn every_kind() -> Vec<Record> {
    let t = 1_751_364_000_000; // 2025-07-01T10:00:00Z
    let mut out = vec![
        Record::new(t, RecordBody::Agent(AgentEvent::Started { agent_version: "1.0.0".into(), after_crash: false })),
        Record::new(
            t + 1,
            RecordBody::Agent(AgentEvent::PolicyApplied {
                policy_version: "7".into(),
                fingerprint: "ab12".into(),
                archive_key_id: "k1".into(),
            }),
        ),
        Record::new(
            t + 2,
            RecordBody::Message(Message {
                meta: meta(Channel::Whatsapp, "msg-1", t),
                direction: Direction::Outbound,
                sender: "+15550100".into(),
                recipients: vec!["+15550111".into(), "Zoë Müller".into()],
                text: "Bonjour Zoë — the price is €1,000.\nSecond line = fine.\r\n".into(),
                attachment_ids: vec!["att/1".into()],
                reply_to: None,
            }),
        ),
    ];
    let header = AttachmentHeader {
        meta: meta(Channel::Whatsapp, "att/1", t + 3),
        attachment_id: "att/1".into(),
        message_id: Some("msg-1".into()),
        direction: Direction::Outbound,
        sender: "+15550100".into(),
        file_name: "term sheet é.pdf".into(),
        mime_type: "application/pdf".into(),
        size: pdf_bytes().len() as u64,
    };
    out.extend(attachment_records(header, &pdf_bytes(), 64 * 1024, t + 3));
    out.push(Record::new(
        t + 4,
        RecordBody::Message(Message {
            meta: meta(Channel::Whatsapp, "msg-2", t + 4),
            direction: Direction::Inbound,
            sender: "+15550111".into(),
            recipients: vec!["+15550100".into()],
            text: "ok".into(),
            attachment_ids: vec![],
            reply_to: Some("msg-1".into()),
        }),
    ));
    out.push(Record::new(
        t + 5,
        RecordBody::Edit(Edit {
            meta: meta(Channel::Whatsapp, "edit-1", t + 5),
            target_message_id: "msg-2".into(),
            editor: "+15550111".into(),
            new_text: "ok, agreed".into(),
        }),
    ));
    out.push(Record::new(
        t + 6,
        RecordBody::Reaction(Reaction {
            meta: meta(Channel::Whatsapp, "react-1", t + 6),
            target_message_id: "msg-1".into(),
            actor: "+15550111".into(),
            reaction: "👍".into(),
            removed: false,
        }),
    ));
    out.push(Record::new(
        t + 7,
        RecordBody::Unsend(Unsend {
            meta: meta(Channel::Whatsapp, "unsend-1", t + 7),
            target_message_id: "msg-2".into(),
            actor: "+15550111".into(),
        }),
    ));
    out.push(Record::new(
        t + 8,
        RecordBody::Call(CallRecord {
            meta: meta(Channel::Voice, "call-1", t + 8),
            direction: Direction::Inbound,
            participants: vec!["+15550111".into(), "+15550100".into()],
            started_ms: t + 8,
            ended_ms: Some(t + 8 + 312_000),
            outcome: CallOutcome::Answered,
            recording_id: Some("recording:call-1".into()),
        }),
    ));
    let rec_header = AttachmentHeader {
        meta: meta(Channel::Voice, "call-1", t + 8),
        attachment_id: "recording:call-1".into(),
        message_id: None,
        direction: Direction::Inbound,
        sender: "+15550111".into(),
        file_name: "call-1.m4a".into(),
        mime_type: "audio/mp4".into(),
        size: recording_bytes().len() as u64,
    };
    out.extend(attachment_records(rec_header, &recording_bytes(), 64 * 1024, t + 9));
    out.push(Record::new(
        t + 10,
        RecordBody::AttachmentOmitted {
            header: AttachmentHeader {
                meta: meta(Channel::Sms, "att-2", t + 10),
                attachment_id: "att-2".into(),
                message_id: Some("msg-1".into()),
                direction: Direction::Inbound,
                sender: "+15550111".into(),
                file_name: "huge.mov".into(),
                mime_type: "video/quicktime".into(),
                size: 900_000_000,
            },
            reason: "larger than attachment_max_mb".into(),
        },
    ));
    out.push(Record::new(
        t + 11,
        RecordBody::Agent(AgentEvent::CaptureChannels { enabled: vec![Channel::Sms], disabled: vec![Channel::Wechat] }),
    ));
    out.push(Record::new(
        t + 12,
        RecordBody::Agent(AgentEvent::ClockJumped { expected_ms: t, observed_ms: t + 3_600_000, delta_ms: 3_600_000 }),
    ));
    out
}
