//! The single writer: one thread owns the write connection, seals and chains records in
//! sequence order, and commits whatever captures arrived together in one transaction (group
//! commit), so durability costs one sync per group instead of one per event.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::head::Head;
use super::{OpenInfo, ROW_OVERHEAD, SOURCE_DIGEST_KEY, Snapshot};
use crate::chain::{self, Link, StreamId};
use crate::error::{Error, ErrorKind, Result};
use crate::policy::{Problem, ProblemKind};
use crate::record::{AgentEvent, AttachmentHeader, Record, RecordBody};
use crate::seal::conversation::{ConversationSealer, KeyScope, Sealed};
use crate::seal::{EpochKey, KEY_LEN, Sealing};
use crate::sources::Mark;

/// Most jobs committed in one transaction.
const MAX_GROUP: usize = 256;

/// Transactions committed by every writer in this process, and the jobs they carried: the
/// average group size, which `verbatim bench` reports. Two relaxed adds per commit.
pub(crate) static GROUPS_COMMITTED: AtomicU64 = AtomicU64::new(0);
pub(crate) static JOBS_COMMITTED: AtomicU64 = AtomicU64::new(0);
/// AES-GCM tag length.
const TAG_LEN: u64 = 16;
/// Size of one attachment chunk record's payload.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// A record ready to be sealed: its plaintext, already encoded by the caller's thread.
#[derive(Debug)]
pub struct Pending {
    pub captured_ms: i64,
    pub plaintext: Vec<u8>,
    /// Which content key seals it in a conversation-key epoch.
    pub scope: KeyScope,
}

impl Pending {
    /// A record whose body names its conversation (or an agent event).
    pub fn new(record: &Record) -> Pending {
        Pending::in_scope(record, KeyScope::of(&record.body).unwrap_or(KeyScope::Agent))
    }

    /// A record sealed with `scope`'s key (an attachment's chunks and end, which name only
    /// their attachment).
    pub fn in_scope(record: &Record, scope: KeyScope) -> Pending {
        Pending { captured_ms: record.captured_ms, plaintext: record.encode(), scope }
    }

    fn agent(captured_ms: i64, event: AgentEvent) -> Pending {
        Pending::new(&Record::new(captured_ms, RecordBody::Agent(event)))
    }

    fn queued_size(&self) -> u64 {
        self.plaintext.len() as u64 + TAG_LEN + ROW_OVERHEAD
    }
}

/// Sequence numbers a job was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    pub first_seq: u64,
    pub last_seq: u64,
}

pub type Reply = oneshot::Sender<Result<Outcome>>;

/// What a policy sets in the writer.
#[derive(Debug, Clone)]
pub struct Config {
    pub tenant: String,
    pub device: String,
    pub archive_public_key: [u8; KEY_LEN],
    pub archive_key_id: String,
    pub queue_max_bytes: u64,
    pub alert_percent: u8,
    /// The tree as pushed (JSON) and its fingerprint, persisted as the policy in force.
    pub tree_json: String,
    pub fingerprint: String,
    /// Agent events that describe this change (policy applied, channels), appended after it.
    pub events: Vec<AgentEvent>,
    /// How new epochs seal.
    pub sealing: Sealing,
}

pub enum Job {
    /// Captured records; they count against the queue cap. The source's `marks` commit with
    /// them (see [`crate::sources`]).
    Capture {
        records: Vec<Pending>,
        marks: Vec<Mark>,
        reply: Reply,
    },
    /// Agent events; they bypass the cap (evidence about a full queue must still be written).
    /// Without a policy in force they wait, unsealed but content-free, in `deferred_events`.
    /// `meta` entries (the agent's evidence state) and source `marks` are saved in the same
    /// transaction.
    Agent {
        events: Vec<AgentEvent>,
        meta: Vec<(String, String)>,
        marks: Vec<Mark>,
        now_ms: i64,
        reply: Reply,
    },
    /// An attachment streamed from a file, after `lead` records (e.g. the call it belongs to).
    /// The header is boxed: a capture moves a `Job` through the writer's channel, and an
    /// inline header would make every one of them 280 bytes.
    Attachment {
        lead: Vec<Pending>,
        header: Box<AttachmentHeader>,
        path: PathBuf,
        captured_ms: i64,
        marks: Vec<Mark>,
        reply: Reply,
    },
    Configure {
        config: Box<Config>,
        now_ms: i64,
        reply: Reply,
    },
    /// The archive holds everything through `through`: delete it.
    Ack {
        through: u64,
        reply: Reply,
    },
    /// Record a clean shutdown and stop.
    Shutdown {
        reply: Reply,
    },
}

/// The sender side, held by the agent.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Job>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl WriterHandle {
    pub fn submit(&self, job: Job) -> Result<()> {
        self.tx.send(job).map_err(|_| Error::new(ErrorKind::Closed, "the agent is closed"))
    }

    /// Waits for the writer thread to end (after a Shutdown), so that the database and the
    /// directory lock are released when this returns.
    pub fn join(&self) {
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// The current epoch's key and how much it has sealed. In memory only.
struct Sealer {
    key: EpochSeal,
    records: u64,
    started_ms: i64,
}

/// An epoch's keys, by sealing version.
enum EpochSeal {
    /// Version 1: every record under the epoch key.
    Single(Box<EpochKey>),
    /// Version 2: content keys per conversation, announced in key records.
    Conversations(Box<ConversationSealer>),
}

impl EpochSeal {
    fn epoch(&self) -> u64 {
        match self {
            EpochSeal::Single(k) => k.epoch(),
            EpochSeal::Conversations(c) => c.epoch(),
        }
    }

    fn sealed_through(&self) -> u64 {
        match self {
            EpochSeal::Single(k) => k.sealed_through(),
            EpochSeal::Conversations(c) => c.sealed_through(),
        }
    }
}

impl Sealer {
    /// The key sealed sequence numbers past `last_seq`: records that were then rolled back.
    /// Their nonces are used, so this key must not seal again.
    fn sealed_past(&self, last_seq: u64) -> bool {
        self.key.sealed_through() > last_seq
    }
}

/// Why an epoch rotates after sealed records were rolled back (recorded in the chain).
const ROLLED_BACK: &str = "sealed records were rolled back";

/// Rotation bounds: a fresh epoch key after this many records or this much time.
pub const EPOCH_MAX_RECORDS: u64 = 100_000;
pub const EPOCH_MAX_AGE_MS: i64 = 24 * 3600 * 1000;

struct Writer {
    conn: Connection,
    st: WriterState,
    /// The data directory's exclusive lock: one agent per store. Released when the thread ends.
    _lock: std::fs::File,
}

/// Everything the writer knows besides its connection: the chain head, the policy's settings,
/// the epoch key and the queue-cap flags (split from `Writer` so a transaction on the
/// connection and changes to this state can be borrowed at once).
struct WriterState {
    head: Head,
    config: Option<Box<Config>>,
    sealer: Option<Sealer>,
    oldest_pending_ms: Option<i64>,
    alert_raised: bool,
    full_reported: bool,
    deferred: u64,
    snapshot: Arc<Mutex<Snapshot>>,
    /// Why the next epoch starts (set when the key changes).
    rotate_reason: &'static str,
}

pub fn start(mut conn: Connection, lock: std::fs::File, now_ms: i64) -> Result<(WriterHandle, Arc<Mutex<Snapshot>>, OpenInfo)> {
    let (head, info) = load(&mut conn, now_ms)?;
    let deferred: u64 = conn.query_row("SELECT count(*) FROM deferred_events", [], |r| r.get::<_, i64>(0))? as u64;
    let oldest = oldest_pending(&conn)?;
    let snapshot = Arc::new(Mutex::new(Snapshot::default()));
    let st = WriterState {
        head,
        config: None,
        sealer: None,
        oldest_pending_ms: oldest,
        alert_raised: false,
        full_reported: false,
        deferred,
        snapshot: snapshot.clone(),
        rotate_reason: "agent started",
    };
    st.publish();
    let writer = Writer { conn, st, _lock: lock };
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("verbatim-writer".into())
        .stack_size(256 * 1024)
        .spawn(move || writer.run(rx))
        .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot start the queue writer: {e}")))?;
    Ok((WriterHandle { tx, thread: Arc::new(Mutex::new(Some(thread))) }, snapshot, info))
}

fn oldest_pending(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn.query_row("SELECT captured_ms FROM records ORDER BY seq LIMIT 1", [], |r| r.get(0)).optional()?)
}

/// Loads the head, creating it on first open, and marks the store as running.
fn load(conn: &mut Connection, _now_ms: i64) -> Result<(Head, OpenInfo)> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let meta = |tx: &Connection, key: &str| -> Result<Option<String>> {
        Ok(tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    };
    let generated_device_id = match meta(&tx, "generated_device_id")? {
        Some(id) => id,
        None => {
            let id = format!("dev-{}", random_hex(8)?);
            tx.execute("INSERT INTO meta (key, value) VALUES ('generated_device_id', ?1)", [&id])?;
            id
        }
    };
    let source_digest_key = match meta(&tx, SOURCE_DIGEST_KEY)? {
        Some(key) => key,
        None => {
            let key = random_hex(32)?;
            tx.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", params![SOURCE_DIGEST_KEY, &key])?;
            key
        }
    };
    let after_crash = meta(&tx, "running")?.as_deref() == Some("1");
    tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('running', '1')", [])?;
    let with_remedy = |e: Error| Error::new(e.kind, format!("{}; run `verbatim recover`", e.detail));
    let state = match Head::read(&tx).map_err(with_remedy)? {
        Some(head) => head,
        None => {
            let head = Head::empty();
            head.save(&tx)?;
            head
        }
    };
    state.check().map_err(with_remedy)?;
    let stored_policy = super::stored_policy(&tx)?;
    let evidence_json = meta(&tx, super::EVIDENCE_META_KEY)?;
    tx.commit()?;
    let info = OpenInfo {
        after_crash,
        generated_device_id,
        last_captured_ms: state.last_captured_ms,
        stored_policy,
        evidence_json,
        source_digest_key,
    };
    Ok((state, info))
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Error::new(ErrorKind::Crypto, format!("no randomness: {e}")))?;
    Ok(hex::encode(buf))
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            if self.commit_group(jobs) {
                return;
            }
        }
        // Every handle is gone without a Shutdown: still record that we stopped cleanly.
        let _ = self.conn.execute("UPDATE meta SET value = '0' WHERE key = 'running'", []);
    }

    /// Applies every job in one transaction, each inside its own savepoint so that one failing
    /// job leaves the others (and the head) intact. Returns true when the writer must stop.
    fn commit_group(&mut self, jobs: Vec<Job>) -> bool {
        let Writer { conn, st, .. } = self;
        let before = st.saved();
        let mut replies: Vec<(Reply, Result<Outcome>)> = Vec::with_capacity(jobs.len());
        let mut stop = false;
        let result = (|| -> Result<()> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for job in jobs {
                let (reply, work) = match job {
                    Job::Shutdown { reply } => {
                        stop = true;
                        tx.execute("UPDATE meta SET value = '0' WHERE key = 'running'", [])?;
                        replies.push((reply, Ok(Outcome::default())));
                        continue;
                    }
                    Job::Capture { records, marks, reply } => (reply, Work::Capture(records, marks)),
                    Job::Agent { events, meta, marks, now_ms, reply } => (reply, Work::Agent(events, meta, marks, now_ms)),
                    Job::Attachment { lead, header, path, captured_ms, marks, reply } => {
                        (reply, Work::Attachment(lead, header, path, captured_ms, marks))
                    }
                    Job::Configure { config, now_ms, reply } => (reply, Work::Configure(config, now_ms)),
                    Job::Ack { through, reply } => (reply, Work::Ack(through)),
                };
                // The cap is checked outside the job's savepoint, so that the evidence of a full
                // queue is kept although the capture itself is refused.
                if let Some((incoming, now_ms)) = work.incoming_bytes()
                    && let Err(e) = st.admit(&tx, incoming, now_ms)
                {
                    // Recording that evidence can itself fail so badly that SQLite rolls back
                    // the whole transaction: then the group failed, for this reason.
                    if tx.is_autocommit() {
                        replies.push((reply, Err(e.clone())));
                        return Err(e);
                    }
                    replies.push((reply, Err(e)));
                    continue;
                }
                let saved = st.saved_for(Some(&work));
                job_savepoint(&tx, SAVEPOINT)?;
                // A panic inside a job (a bug) fails that job like any error: its records are
                // rolled back and, above all, their epoch is retired (see `restore`).
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| st.perform(&tx, work))).unwrap_or_else(|_| {
                        Err(Error::new(
                            ErrorKind::Internal,
                            "the queue writer failed inside a job; nothing of the job was stored",
                        ))
                    });
                match &outcome {
                    Ok(_) => release_job(&tx)?,
                    Err(e) => {
                        roll_back_job(&tx);
                        st.restore(saved);
                        // Some errors (SQLITE_FULL above all) make SQLite roll back the whole
                        // transaction: then the group as a whole failed, for this reason.
                        if tx.is_autocommit() {
                            let e = e.clone();
                            replies.push((reply, outcome));
                            return Err(e);
                        }
                    }
                }
                replies.push((reply, outcome));
            }
            st.head.save(&tx)?;
            tx.commit()?;
            tracing::trace!(jobs = replies.len(), last_seq = st.head.last_seq, "queue: group committed");
            GROUPS_COMMITTED.fetch_add(1, Ordering::Relaxed);
            JOBS_COMMITTED.fetch_add(replies.len() as u64, Ordering::Relaxed);
            Ok(())
        })();
        if let Err(e) = &result {
            tracing::debug!(jobs = replies.len(), error = e.kind.as_str(), "queue: group failed, nothing of it stored");
            // Nothing of this group is durable: restore the head and fail every job.
            st.restore(before);
            for (_, outcome) in replies.iter_mut() {
                *outcome = Err(e.clone());
            }
        }
        // Publish before answering, so a caller that reads status right after sees its change.
        st.publish();
        for (reply, outcome) in replies {
            let _ = reply.send(outcome);
        }
        stop
    }
}

impl WriterState {
    fn saved(&self) -> Saved {
        self.saved_for(None)
    }

    /// What `work` (any work when `None`) may change, to put back if it fails. Only `configure`
    /// replaces the policy's config, so only then is it cloned (policy tree and all: for every
    /// capture, that clone and its drop were a measurable share of the writer's work).
    fn saved_for(&self, work: Option<&Work>) -> Saved {
        let config_may_change = work.is_none_or(|w| matches!(w, Work::Configure(..)));
        Saved {
            head: self.head.clone(),
            alert_raised: self.alert_raised,
            full_reported: self.full_reported,
            deferred: self.deferred,
            oldest_pending_ms: self.oldest_pending_ms,
            config: config_may_change.then(|| self.config.clone()),
        }
    }

    fn restore(&mut self, saved: Saved) {
        self.head = saved.head;
        self.alert_raised = saved.alert_raised;
        self.full_reported = saved.full_reported;
        self.deferred = saved.deferred;
        self.oldest_pending_ms = saved.oldest_pending_ms;
        if let Some(config) = saved.config {
            self.config = config;
        }
        self.retire_epoch_if_rolled_back();
    }

    fn perform(&mut self, conn: &Connection, work: Work) -> Result<Outcome> {
        match work {
            Work::Capture(records, marks) => {
                let outcome = self.capture(conn, records)?;
                save_marks(conn, &marks)?;
                Ok(outcome)
            }
            Work::Agent(events, meta, marks, now_ms) => {
                for (key, value) in meta {
                    conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
                        .execute(params![key, value])?;
                }
                save_marks(conn, &marks)?;
                self.agent_events(conn, events, now_ms)
            }
            Work::Attachment(lead, header, path, captured_ms, marks) => {
                let outcome = self.attachment(conn, lead, *header, path, captured_ms)?;
                save_marks(conn, &marks)?;
                Ok(outcome)
            }
            Work::Configure(config, now_ms) => self.configure(conn, config, now_ms),
            Work::Ack(through) => self.ack(conn, through),
        }
    }

    /// After a rollback, the epoch key must not seal again when it sealed records that were
    /// rolled back: their nonces (sequence numbers) are used, and their ciphertexts may already
    /// be on disk (a large transaction spills pages into the write-ahead log before it commits).
    /// Sealing those sequence numbers again with other content under the same key would let
    /// anyone with both ciphertexts recover the plaintexts. Nor can an epoch created in the
    /// rolled-back transaction continue: its encapsulation was not stored. Either way the key is
    /// dropped and the next record opens a new epoch with a fresh key, numbered above every
    /// epoch this process created (the head keeps that number from the next commit on), and
    /// the rotation event tells the archive why an epoch number was skipped.
    fn retire_epoch_if_rolled_back(&mut self) {
        let Some(sealer) = &self.sealer else { return };
        let epoch = sealer.key.epoch();
        let sealed_rolled_back = sealer.sealed_past(self.head.last_seq);
        if sealed_rolled_back || epoch > self.head.last_epoch {
            self.head.last_epoch = self.head.last_epoch.max(epoch);
            self.sealer = None;
            if sealed_rolled_back {
                self.rotate_reason = ROLLED_BACK;
            }
            tracing::debug!(epoch, sealed_rolled_back, "queue: epoch retired after a rollback");
        }
    }

    fn publish(&self) {
        let mut snap = match self.snapshot.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        *snap = Snapshot {
            stream: self.head.stream.clone(),
            last_seq: self.head.last_seq,
            acked_through: self.head.acked_through,
            acked_link: self.head.acked_link,
            pending_count: self.head.pending_count,
            pending_bytes: self.head.pending_bytes,
            oldest_pending_ms: self.oldest_pending_ms,
            epoch: self.sealer.as_ref().map(|s| s.key.epoch()),
            queue_max_bytes: self.config.as_ref().map_or(0, |c| c.queue_max_bytes),
            alert_raised: self.alert_raised,
            full: self.full_reported,
            policy_fingerprint: self.config.as_ref().map(|c| c.fingerprint.clone()),
            deferred_events: self.deferred,
        };
    }

    fn stream(&self) -> Result<StreamId> {
        self.head.stream.clone().ok_or_else(|| Error::new(ErrorKind::NotConfigured, "no policy in force"))
    }

    /// Starts a new epoch when none is open in this process, the archive key changed, or the
    /// current one reached its bounds. The rotation is itself recorded, in the new epoch.
    fn ensure_epoch(&mut self, tx: &Connection, now_ms: i64) -> Result<()> {
        let config = self.config.as_ref().ok_or_else(|| Error::new(ErrorKind::NotConfigured, "no policy in force"))?;
        let reason = match &self.sealer {
            None => self.rotate_reason,
            // Sealed records were lost without a rollback reaching `restore` (a failed insert
            // outside a job's savepoint): retire the key all the same.
            Some(s) if s.sealed_past(self.head.last_seq) => ROLLED_BACK,
            Some(s) if s.records >= EPOCH_MAX_RECORDS => "record limit reached",
            Some(s) if now_ms - s.started_ms >= EPOCH_MAX_AGE_MS => "age limit reached",
            Some(_) => return Ok(()),
        };
        let stream = self.stream()?;
        let current = self.sealer.as_ref().map_or(0, |s| s.key.epoch());
        let epoch = self.head.last_epoch.max(current) + 1;
        let (key, encapsulation) = match config.sealing {
            Sealing::EpochKey => {
                let (k, enc) = EpochKey::create(&config.archive_public_key, &stream, epoch)?;
                (EpochSeal::Single(Box::new(k)), enc)
            }
            Sealing::ConversationKeys => {
                let (c, enc) = ConversationSealer::create(&config.archive_public_key, &stream, epoch)?;
                (EpochSeal::Conversations(Box::new(c)), enc)
            }
        };
        tx.prepare_cached(
            "INSERT INTO epochs (epoch, archive_key_id, encapsulation, created_ms, first_seq) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            epoch as i64,
            config.archive_key_id,
            encapsulation,
            now_ms,
            self.head.last_seq.saturating_add(1) as i64
        ])?;
        let key_id = config.archive_key_id.clone();
        tracing::debug!(epoch, reason, first_seq = self.head.last_seq + 1, "queue: epoch opened");
        self.head.last_epoch = epoch;
        self.sealer = Some(Sealer { key, records: 0, started_ms: now_ms });
        self.rotate_reason = "agent started";
        let event =
            Pending::agent(now_ms, AgentEvent::EpochRotated { epoch, reason: reason.to_string(), archive_key_id: key_id });
        self.append_sealed(tx, &event)
    }

    /// Seals one record at the next sequence number and appends it to the chain.
    fn append(&mut self, tx: &Connection, pending: &Pending) -> Result<u64> {
        self.ensure_epoch(tx, pending.captured_ms)?;
        self.append_sealed(tx, pending)?;
        Ok(self.head.last_seq)
    }

    fn append_sealed(&mut self, tx: &Connection, pending: &Pending) -> Result<()> {
        let stream = self.stream()?;
        let sealer = self.sealer.as_mut().ok_or_else(|| Error::new(ErrorKind::Internal, "no epoch key"))?;
        let epoch = sealer.key.epoch();
        let (last_seq, last_link) = (self.head.last_seq, self.head.last_link);
        let sealed = match &mut sealer.key {
            EpochSeal::Single(key) => {
                let seq = last_seq
                    .checked_add(1)
                    .filter(|s| *s <= i64::MAX as u64)
                    .ok_or_else(|| Error::new(ErrorKind::Corrupt, "queue head: the last sequence number is out of range"))?;
                let ciphertext = key.seal(&stream, seq, &last_link, &pending.plaintext)?;
                let link = chain::link(&last_link, seq, epoch, &ciphertext);
                vec![Sealed { seq, ciphertext, link, key_record: false }]
            }
            EpochSeal::Conversations(c) => {
                c.seal(&stream, last_seq, &last_link, &pending.scope, pending.captured_ms, &pending.plaintext)?
            }
        };
        for s in sealed {
            #[cfg(feature = "testing")]
            crate::testing::faults::after_seal(&stream.device, s.seq);
            tx.prepare_cached("INSERT INTO records (seq, epoch, captured_ms, link, ciphertext) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![s.seq as i64, epoch as i64, pending.captured_ms, &s.link[..], &s.ciphertext])?;
            sealer.records += 1;
            self.head.last_seq = s.seq;
            self.head.last_link = s.link;
            self.head.pending_count += 1;
            self.head.pending_bytes += s.ciphertext.len() as u64 + ROW_OVERHEAD;
        }
        self.head.last_captured_ms = self.head.last_captured_ms.max(pending.captured_ms);
        if self.oldest_pending_ms.is_none() {
            self.oldest_pending_ms = Some(pending.captured_ms);
        }
        Ok(())
    }

    fn max_bytes(&self) -> u64 {
        self.config.as_ref().map_or(u64::MAX, |c| c.queue_max_bytes)
    }

    /// Refuses `incoming` bytes when the queue would pass its cap, recording the first refusal.
    fn admit(&mut self, tx: &Connection, incoming: u64, now_ms: i64) -> Result<()> {
        let max = self.max_bytes();
        if self.head.pending_bytes + incoming <= max {
            return Ok(());
        }
        if !self.full_reported && self.config.is_some() {
            let used = self.head.pending_bytes;
            self.agent_events(tx, vec![AgentEvent::QueueFull { used_bytes: used, max_bytes: max }], now_ms)?;
            self.full_reported = true;
        }
        Err(Error::new(
            ErrorKind::QueueFull,
            format!(
                "queue full: {} of {} bytes used; capture resumes once the archive acknowledges uploads",
                self.head.pending_bytes, max
            ),
        ))
    }

    /// Records the crossing of the alert threshold once per crossing.
    fn check_alert(&mut self, tx: &Connection, now_ms: i64) -> Result<()> {
        let Some(config) = &self.config else { return Ok(()) };
        let (max, percent) = (config.queue_max_bytes, config.alert_percent);
        let over = self.head.pending_bytes.saturating_mul(100) >= max.saturating_mul(percent as u64);
        if over && !self.alert_raised {
            self.alert_raised = true;
            let used = self.head.pending_bytes;
            self.agent_events(tx, vec![AgentEvent::QueueAlert { used_bytes: used, max_bytes: max, percent }], now_ms)?;
        }
        Ok(())
    }

    fn capture(&mut self, tx: &Connection, records: Vec<Pending>) -> Result<Outcome> {
        let mut outcome = Outcome::default();
        for p in &records {
            let seq = self.append(tx, p)?;
            if outcome.first_seq == 0 {
                outcome.first_seq = seq;
            }
            outcome.last_seq = seq;
        }
        if let Some(p) = records.first() {
            self.check_alert(tx, p.captured_ms)?;
        }
        Ok(outcome)
    }

    fn agent_events(&mut self, tx: &Connection, events: Vec<AgentEvent>, now_ms: i64) -> Result<Outcome> {
        if self.config.is_none() {
            for event in events {
                let p = Pending::agent(now_ms, event);
                tx.prepare_cached("INSERT INTO deferred_events (captured_ms, plaintext) VALUES (?1, ?2)")?
                    .execute(params![p.captured_ms, p.plaintext])?;
                self.deferred += 1;
            }
            return Ok(Outcome::default());
        }
        let mut outcome = Outcome::default();
        for event in events {
            let seq = self.append(tx, &Pending::agent(now_ms, event))?;
            if outcome.first_seq == 0 {
                outcome.first_seq = seq;
            }
            outcome.last_seq = seq;
        }
        Ok(outcome)
    }

    fn attachment(
        &mut self,
        tx: &Connection,
        lead: Vec<Pending>,
        header: AttachmentHeader,
        path: PathBuf,
        captured_ms: i64,
    ) -> Result<Outcome> {
        let sp = tx;
        let r = (|| -> Result<Outcome> {
            let mut first = 0;
            for p in &lead {
                let seq = self.append(sp, p)?;
                if first == 0 {
                    first = seq;
                }
            }
            let id = header.attachment_id.clone();
            let scope = KeyScope::of_meta(&header.meta);
            let mut file = std::fs::File::open(&path)
                .map_err(|e| Error::new(ErrorKind::File, format!("attachment {id}: cannot open its file: {}", e.kind())))?;
            let start = Pending::new(&Record::new(captured_ms, RecordBody::AttachmentStart(header)));
            let seq = self.append(sp, &start)?;
            if first == 0 {
                first = seq;
            }
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut index = 0u32;
            let mut buf = vec![0u8; CHUNK_SIZE];
            loop {
                let n = read_full(&mut file, &mut buf)
                    .map_err(|e| Error::new(ErrorKind::File, format!("attachment {id}: read failed: {}", e.kind())))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
                let mut chunk = Record::new(captured_ms, RecordBody::AttachmentChunk { attachment_id: id.clone(), index });
                chunk.payload = buf[..n].to_vec();
                self.append(sp, &Pending::in_scope(&chunk, scope.clone()))?;
                index += 1;
            }
            let end =
                RecordBody::AttachmentEnd { attachment_id: id, size, sha256: hex::encode(hasher.finalize()), chunks: index };
            let last = self.append(sp, &Pending::in_scope(&Record::new(captured_ms, end), scope))?;
            Ok(Outcome { first_seq: first, last_seq: last })
        })();
        let o = r?;
        self.check_alert(tx, captured_ms)?;
        Ok(o)
    }

    fn configure(&mut self, tx: &Connection, config: Box<Config>, now_ms: i64) -> Result<Outcome> {
        let same_stream = self.head.stream.as_ref().is_some_and(|s| s.tenant == config.tenant && s.device == config.device);
        if !same_stream {
            if self.head.pending_count > 0 {
                let Some(old) = self.head.stream.as_ref() else {
                    return Err(Error::new(
                        ErrorKind::Corrupt,
                        "queue head: records are pending but the stream identity is missing",
                    ));
                };
                return Err(Error::policy_rejected(vec![Problem {
                    key: "tenant_id/device_id".into(),
                    kind: ProblemKind::InvalidValue,
                    detail: format!(
                        "the queue still holds {} records for tenant {} device {}; they must be uploaded before the identity changes",
                        self.head.pending_count, old.tenant, old.device
                    ),
                }]));
            }
            // A new identity starts a new stream with its own chain.
            let stream = StreamId { tenant: config.tenant.clone(), device: config.device.clone(), stream: random_hex(16)? };
            let genesis = chain::genesis(&stream);
            self.head.stream = Some(stream);
            self.head.last_seq = 0;
            self.head.last_link = genesis;
            self.head.acked_through = 0;
            self.head.acked_link = genesis;
            self.sealer = None;
            self.rotate_reason = "new device stream";
        }
        let key_changed = self.config.as_ref().is_some_and(|c| c.archive_public_key != config.archive_public_key);
        if key_changed {
            self.sealer = None;
            self.rotate_reason = "archive key changed";
        }
        tx.prepare_cached("INSERT OR REPLACE INTO policy (id, tree, fingerprint, applied_ms) VALUES (1, ?1, ?2, ?3)")?
            .execute(params![config.tree_json, config.fingerprint, now_ms])?;
        let events = config.events.clone();
        self.config = Some(config);
        // Evidence from before any policy joins the chain first, in the order it happened.
        let deferred: Vec<(i64, i64, Vec<u8>)> = {
            let mut stmt = tx.prepare_cached("SELECT id, captured_ms, plaintext FROM deferred_events ORDER BY id")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        let mut outcome = Outcome::default();
        for (_, captured_ms, plaintext) in deferred {
            let seq = self.append(tx, &Pending { captured_ms, plaintext, scope: KeyScope::Agent })?;
            outcome.first_seq = if outcome.first_seq == 0 { seq } else { outcome.first_seq };
            outcome.last_seq = seq;
        }
        tx.execute("DELETE FROM deferred_events", [])?;
        self.deferred = 0;
        let o = self.agent_events(tx, events, now_ms)?;
        if o.first_seq != 0 {
            outcome.first_seq = if outcome.first_seq == 0 { o.first_seq } else { outcome.first_seq };
            outcome.last_seq = o.last_seq;
        }
        // Open the epoch now, so that sealing works (and the key is checked) before any capture.
        self.ensure_epoch(tx, now_ms)?;
        self.check_alert(tx, now_ms)?;
        Ok(outcome)
    }

    fn ack(&mut self, tx: &Connection, through: u64) -> Result<Outcome> {
        if through > self.head.last_seq {
            return Err(Error::new(
                ErrorKind::Rejected,
                format!("acknowledgement through {through} is beyond the last sequence number {}", self.head.last_seq),
            ));
        }
        if through <= self.head.acked_through {
            return Ok(Outcome::default()); // already acknowledged: idempotent
        }
        let (count, bytes, link): (i64, i64, Option<Vec<u8>>) = tx.query_row(
            "SELECT count(*), coalesce(sum(length(ciphertext)), 0), (SELECT link FROM records WHERE seq = ?2)
             FROM records WHERE seq > ?1 AND seq <= ?2",
            params![self.head.acked_through as i64, through as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let link = link.ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("queue record {through} is missing")))?;
        tx.prepare_cached("DELETE FROM records WHERE seq <= ?1")?.execute(params![through as i64])?;
        let current = self.sealer.as_ref().map_or(self.head.last_epoch, |s| s.key.epoch());
        forget_acknowledged_epochs(tx, current)?;
        tracing::debug!(through, deleted = count, "queue: acknowledged records deleted");
        self.head.acked_through = through;
        self.head.acked_link = Link::try_from(link.as_slice())
            .map_err(|_| Error::new(ErrorKind::Corrupt, format!("queue record {through}: link is not 32 bytes")))?;
        self.head.pending_count -= count as u64;
        self.head.pending_bytes -= bytes as u64 + count as u64 * ROW_OVERHEAD;
        self.oldest_pending_ms = oldest_pending(tx)?;
        let max = self.max_bytes();
        let percent = self.config.as_ref().map_or(100, |c| c.alert_percent) as u64;
        if self.head.pending_bytes.saturating_mul(100) < max.saturating_mul(percent) {
            self.alert_raised = false;
        }
        if self.head.pending_bytes < max {
            self.full_reported = false;
        }
        Ok(Outcome { first_seq: 0, last_seq: through })
    }
}

/// Deletes every epoch before `current` that no record uses any more (nor is its encapsulation
/// needed). `records` has no index on `epoch`, so asking "does any record use epoch E?" scans the
/// table up to the first match: for an epoch still in use far down a large queue, that is most
/// of the table, on every acknowledgement (a million queued records made each ack take seconds).
/// Records are appended in epoch order from the epoch's `first_seq`, so the first record at or
/// after it answers at once in that common case; only an epoch about to be deleted is checked
/// against the whole table, exactly as before, so the result is the same whatever the table holds.
fn forget_acknowledged_epochs(tx: &Connection, current: u64) -> Result<()> {
    let candidates: Vec<(i64, i64)> = {
        let mut stmt = tx.prepare_cached("SELECT epoch, first_seq FROM epochs WHERE epoch < ?1")?;
        let rows = stmt.query_map(params![current as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<std::result::Result<_, _>>()?
    };
    for (epoch, first_seq) in candidates {
        let next: Option<i64> = tx
            .prepare_cached("SELECT epoch FROM records WHERE seq >= ?1 ORDER BY seq LIMIT 1")?
            .query_row(params![first_seq], |r| r.get(0))
            .optional()?;
        if next == Some(epoch) {
            continue; // still in use
        }
        let in_use: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM records WHERE epoch = ?1)")?
            .query_row(params![epoch], |r| r.get(0))?;
        if !in_use {
            tx.prepare_cached("DELETE FROM epochs WHERE epoch = ?1")?.execute(params![epoch])?;
        }
    }
    Ok(())
}

/// Each job runs inside its own savepoint. The three statements are prepared once and cached:
/// rusqlite's `Savepoint` formats and parses its SQL anew for every job, which cost a capture
/// alone in a transaction about as much as its SQLite insert.
const SAVEPOINT: &str = "SAVEPOINT _rusqlite_sp";
const RELEASE: &str = "RELEASE _rusqlite_sp";
const ROLLBACK_TO: &str = "ROLLBACK TO _rusqlite_sp";

fn job_savepoint(tx: &Connection, sql: &str) -> Result<()> {
    tx.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Keeps the job's changes; when that fails the job is rolled back (as rusqlite's savepoint
/// does when dropped uncommitted) and the error fails the group.
fn release_job(tx: &Connection) -> Result<()> {
    job_savepoint(tx, RELEASE).inspect_err(|_| roll_back_job(tx))
}

/// Undoes the job's changes. Errors are ignored, as in rusqlite's savepoint drop: after SQLITE_FULL
/// SQLite may already have rolled back the whole transaction (the caller checks for that).
fn roll_back_job(tx: &Connection) {
    if job_savepoint(tx, ROLLBACK_TO).is_ok() {
        let _ = job_savepoint(tx, RELEASE);
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Applies a source's marks (inside the job's savepoint: they stand or fall with its records).
fn save_marks(conn: &Connection, marks: &[Mark]) -> Result<()> {
    for mark in marks {
        match &mark.value {
            Some(value) => conn
                .prepare_cached("INSERT OR REPLACE INTO source_state (source, key, value) VALUES (?1, ?2, ?3)")?
                .execute(params![mark.source, mark.key, value])?,
            None => conn
                .prepare_cached("DELETE FROM source_state WHERE source = ?1 AND key = ?2")?
                .execute(params![mark.source, mark.key])?,
        };
    }
    Ok(())
}

/// A job's work, once its reply channel is set aside.
enum Work {
    Capture(Vec<Pending>, Vec<Mark>),
    Agent(Vec<AgentEvent>, Vec<(String, String)>, Vec<Mark>, i64),
    Attachment(Vec<Pending>, Box<AttachmentHeader>, PathBuf, i64, Vec<Mark>),
    Configure(Box<Config>, i64),
    Ack(u64),
}

impl Work {
    /// Bytes this work adds to the queue, and when, for work that counts against the cap.
    fn incoming_bytes(&self) -> Option<(u64, i64)> {
        match self {
            Work::Capture(records, _) => {
                let now = records.first().map_or(0, |p| p.captured_ms);
                Some((records.iter().map(Pending::queued_size).sum(), now))
            }
            Work::Attachment(lead, header, _, captured_ms, _) => {
                let chunks = header.size / CHUNK_SIZE as u64 + 3;
                let lead: u64 = lead.iter().map(Pending::queued_size).sum();
                Some((lead + header.size + chunks * (TAG_LEN + ROW_OVERHEAD + 256), *captured_ms))
            }
            _ => None,
        }
    }
}

/// What a failed job or group must put back.
struct Saved {
    head: Head,
    alert_raised: bool,
    full_reported: bool,
    deferred: u64,
    oldest_pending_ms: Option<i64>,
    /// `None` when the work could not change it.
    config: Option<Option<Box<Config>>>,
}
