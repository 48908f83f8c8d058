//! Building the new store from what was salvaged (see the module docs of `recover`).

use std::fs::{self, File};
use std::path::Path;

use rusqlite::params;

use super::container::write_container;
use super::salvage::Salvage;
use super::*;
use crate::block_on::block_on;
use crate::chain::StreamId;
use crate::model::{Channel, Direction, EventMeta};
use crate::queue::head::Head;
use crate::queue::{Config, NewRecords, ROW_OVERHEAD};
use crate::record::AttachmentHeader;

/// Moves the damaged store aside and builds the new one.
pub(super) fn build(
    db: &Path,
    aside: &Path,
    lock: File,
    s: Salvage,
    options: &RecoverOptions,
    now: i64,
) -> Result<RecoveryReport> {
    // The policy for the new store, its tree to persist (no secrets) and its fingerprint: the
    // operator's, or the one the damaged store kept (without a device token, as always).
    let (policy, tree_json, fingerprint) = match (&options.policy, &s.policy) {
        (Some(tree), _) => {
            let p = crate::policy::parse(tree).map_err(|r| Error::policy_rejected(r.problems))?.policy;
            let fingerprint = p.fingerprint_hex();
            (Some(p), Some(crate::policy::stored::persistable_json(tree)), fingerprint)
        }
        (None, Some((tree, fingerprint))) => {
            let (p, kept) = crate::policy::stored::parse_stored(tree)
                .ok_or_else(|| Error::new(ErrorKind::PolicyRejected, "the stored policy is unreadable or no longer validates"))?;
            (Some(p), Some(kept), fingerprint.clone())
        }
        (None, None) => (None, None, String::new()),
    };
    let head = s.head.as_ref();
    let old_stream = head.and_then(|h| h.stream.clone());
    let pending_any = head.is_some_and(|h| h.last_seq > h.acked_through) || !s.kept.is_empty() || !s.lost.is_empty();
    let lost_anything = !s.lost.is_empty() || !s.unopenable.is_empty() || s.maybe_lost_after.is_some();
    let device_of = |p: &crate::policy::Policy| p.device_id.clone().or_else(|| s.generated_device_id.clone());
    let same_identity = match (&old_stream, &policy) {
        (Some(old), Some(p)) => old.tenant == p.tenant_id && Some(old.device.clone()) == device_of(p),
        (None, _) => !pending_any,
        (Some(_), None) => true,
    };
    // The head must end where the kept records end, or records after them are unaccounted for.
    let head_matches = head.is_some_and(|h| match s.kept.last() {
        Some((r, _)) => r.seq == h.last_seq && r.link == h.last_link && s.kept.len() as u64 == h.last_seq - h.acked_through,
        None => h.last_seq == h.acked_through,
    });
    let native = !lost_anything && same_identity && (head_matches || (head.is_none() && !pending_any));
    let mut report = RecoveryReport {
        rebuilt: false,
        damaged_store: None,
        damage: s.damage.clone(),
        old_stream: old_stream.clone(),
        new_stream: !native,
        acked_through: head.map(|h| h.acked_through),
        last_seq: head.map(|h| h.last_seq),
        recovered: ranges(&s.kept.iter().map(|(r, _)| r.seq).collect::<Vec<_>>()),
        unopenable: ranges(&s.unopenable),
        lost: ranges(&s.lost),
        maybe_lost_after: s.maybe_lost_after,
        salvage_attachment: None,
        salvage_bytes: 0,
        epochs_recovered: s.epochs.len() as u64,
        policy_recovered: s.policy.is_some(),
        deferred_events_recovered: s.deferred.len() as u64,
    };
    if s.damage.is_empty() && !options.force {
        return Ok(report); // nothing to recover
    }
    if !native && !s.kept.is_empty() && policy.is_none() {
        return Err(Error::new(
            ErrorKind::NotConfigured,
            "the damaged store's policy is unreadable: give the policy (verbatim recover --policy FILE) so that its intact \
             records can be carried into the rebuilt store; nothing was changed",
        ));
    }

    // Move the damaged files aside; from here on the directory holds no store.
    crate::queue::private_files::dir(aside)?;
    for from in [db.to_path_buf(), wal_path(db), shm_path(db)] {
        if from.exists() {
            let name = from.file_name().expect("store files have names");
            fs::rename(&from, aside.join(name))?;
        }
    }
    report.rebuilt = true;
    report.damaged_store = Some(aside.to_path_buf());
    let aside_name = aside.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();

    crate::queue::make_store_files_private(db)?;
    let mut conn = crate::queue::open_connection(db, false)?;
    crate::queue::schema::migrate(&mut conn)?;
    {
        let tx = conn.transaction()?;
        if let Some(id) = &s.generated_device_id {
            tx.execute("INSERT INTO meta (key, value) VALUES ('generated_device_id', ?1)", [id])?;
        }
        if let Some(ev) = &s.evidence {
            tx.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", params![crate::queue::EVIDENCE_META_KEY, ev])?;
        }
        if let Some(key) = &s.source_digest_key {
            tx.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", params![crate::queue::SOURCE_DIGEST_KEY, key])?;
        }
        for (source, key, value) in &s.source_state {
            tx.execute("INSERT INTO source_state (source, key, value) VALUES (?1, ?2, ?3)", params![source, key, value])?;
        }
        if let (Some(json), Some(_)) = (&tree_json, &policy) {
            tx.execute(
                "INSERT INTO policy (id, tree, fingerprint, applied_ms) VALUES (1, ?1, ?2, ?3)",
                params![json, fingerprint, now],
            )?;
        }
        for (t, plaintext) in &s.deferred {
            tx.execute("INSERT INTO deferred_events (captured_ms, plaintext) VALUES (?1, ?2)", params![t, plaintext])?;
        }
        if native && let (Some(h), Some(stream)) = (head, &old_stream) {
            let mut bytes = 0u64;
            for (r, _) in &s.kept {
                tx.execute(
                    "INSERT INTO records (seq, epoch, captured_ms, link, ciphertext) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![r.seq as i64, r.epoch as i64, r.captured_ms, &r.link[..], &r.ciphertext],
                )?;
                bytes += r.ciphertext.len() as u64 + ROW_OVERHEAD;
            }
            for (e, created, first) in &s.epochs {
                tx.execute(
                    "INSERT INTO epochs (epoch, archive_key_id, encapsulation, created_ms, first_seq) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![e.epoch as i64, e.archive_key_id, e.encapsulation, created, first],
                )?;
            }
            let last_epoch = s.epochs.iter().map(|(e, _, _)| e.epoch).max().unwrap_or(0).max(h.last_epoch);
            let rebuilt = Head {
                stream: Some(stream.clone()),
                pending_count: s.kept.len() as u64,
                pending_bytes: bytes,
                last_epoch,
                ..h.clone()
            };
            rebuilt.save(&tx)?;
        }
        tx.commit()?;
    }

    // The salvage container: every kept record, byte for byte, in runs.
    let salvage_path = aside.join("salvage.vsalvage");
    let mut salvage_id = None;
    if !native && !s.kept.is_empty() {
        let old = old_stream.clone().unwrap_or_else(|| StreamId {
            tenant: policy.as_ref().map(|p| p.tenant_id.clone()).unwrap_or_default(),
            device: policy.as_ref().and_then(device_of).unwrap_or_default(),
            stream: "unknown".into(),
        });
        report.salvage_bytes = write_container(&salvage_path, &old, &s)?;
        let first = s.kept.first().map_or(0, |(r, _)| r.seq);
        let last = s.kept.last().map_or(0, |(r, _)| r.seq);
        salvage_id = Some(format!("recovered-{}-{first}-{last}", old.stream));
    }
    report.salvage_attachment = salvage_id.clone();

    // The recovery event, then (new stream) the salvage container, through the writer so that
    // they are sealed and chained like everything else.
    let detail = serde_json::json!({
        "kind": "queue_recovered",
        "old_stream": old_stream,
        "new_stream": report.new_stream,
        "acked_through": report.acked_through,
        "last_seq": report.last_seq,
        "recovered": report.recovered,
        "unopenable": report.unopenable,
        "lost": report.lost,
        "maybe_lost_after": report.maybe_lost_after,
        "salvage_attachment": salvage_id,
        "damaged_store": aside_name,
        "damage": report.damage.iter().take(10).collect::<Vec<_>>(),
    })
    .to_string();
    let events = vec![AgentEvent::QueueCorrupt { detail }];
    let (queue, info) = crate::queue::start(conn, lock, db, now)?;
    let configured = match &policy {
        Some(p) => {
            let salvage_bytes = report.salvage_bytes;
            let config = Config {
                tenant: p.tenant_id.clone(),
                device: p.device_id.clone().unwrap_or_else(|| info.generated_device_id.clone()),
                archive_public_key: p.archive_public_key,
                archive_key_id: p.archive_key_id.clone(),
                // Room for the container whatever the cap; the next open restores the policy's.
                queue_max_bytes: (p.queue_max_mb as u64 * 1024 * 1024).max(salvage_bytes * 2 + (8 << 20)),
                alert_percent: 100,
                tree_json: tree_json.clone().unwrap_or_default(),
                fingerprint: fingerprint.clone(),
                events,
                sealing: crate::seal::Sealing::ConversationKeys,
            };
            block_on(queue.configure(config, now))
        }
        None => block_on(queue.record(events, Vec::new(), now)),
    };
    let attached = match (&configured, &salvage_id, &policy) {
        (Ok(_), Some(id), Some(p)) => {
            let size = fs::metadata(&salvage_path)?.len();
            let header = AttachmentHeader {
                meta: EventMeta {
                    channel: p.capture_channels.iter().next().copied().unwrap_or(Channel::Sms),
                    line: p.business_lines.iter().next().cloned().unwrap_or_else(|| "verbatim-agent".into()),
                    conversation_id: RECOVERY_CONVERSATION.into(),
                    source_id: id.clone(),
                    source_time_ms: now,
                },
                attachment_id: id.clone(),
                message_id: None,
                direction: Direction::Outbound,
                sender: "verbatim-agent".into(),
                file_name: format!("{id}.vsalvage"),
                mime_type: SALVAGE_MIME.into(),
                size,
            };
            let salvage = NewRecords::Attachment {
                lead: Vec::new(),
                header: Box::new(header),
                path: salvage_path.clone(),
                captured_ms: now,
            };
            block_on(queue.append(salvage)).map(|_| ())
        }
        (Ok(_), _, _) => Ok(()),
        (Err(e), _, _) => Err(e.clone()),
    };
    queue.shut_down_blocking();
    attached?;
    configured?;
    Ok(report)
}
