//! The device's queue, read and altered behind the agent's back.

#[allow(unused_imports)]
use super::*;

pub(crate) fn queue_db(device_dir: &Path) -> Connection {
    let conn = Connection::open(device_dir.join(verbatim_core::queue::DB_FILE)).expect("queue database");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// Sequence numbers held in the device's queue (pending upload), in order.
pub fn queue_seqs(device_dir: &Path) -> Vec<u64> {
    let conn = queue_db(device_dir);
    let mut stmt = conn.prepare("SELECT seq FROM records ORDER BY seq").unwrap();
    stmt.query_map([], |r| r.get::<_, i64>(0)).unwrap().map(|r| r.unwrap() as u64).collect()
}

/// How a queue row is altered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// One ciphertext bit flipped, nothing else: the stored link no longer matches.
    Naive,
    /// One ciphertext bit flipped, then that link and every later one recomputed (and the
    /// chain head updated), as an attacker who knows the chain rules but not the key would.
    Relinked,
}

/// Alters the ciphertext of queue record `seq` in the device's SQLite file.
pub fn tamper_queue_record(device_dir: &Path, seq: u64, how: Tamper) {
    let mut conn = queue_db(device_dir);
    let tx = conn.transaction().unwrap();
    let mut ct: Vec<u8> = tx
        .query_row("SELECT ciphertext FROM records WHERE seq = ?1", [seq as i64], |r| r.get(0))
        .optional()
        .unwrap()
        .unwrap_or_else(|| panic!("queue record {seq} is not pending"));
    let mid = ct.len() / 2;
    ct[mid] ^= 0x01;
    tx.execute("UPDATE records SET ciphertext = ?1 WHERE seq = ?2", params![ct, seq as i64]).unwrap();
    if how == Tamper::Relinked {
        let before: Option<Vec<u8>> =
            tx.query_row("SELECT link FROM records WHERE seq = ?1", [seq as i64 - 1], |r| r.get(0)).optional().unwrap();
        let mut prev: Link = match before {
            Some(l) => l.try_into().unwrap(),
            None => {
                let (acked, link): (i64, Vec<u8>) = tx
                    .query_row("SELECT acked_through, acked_link FROM chain_state WHERE id = 1", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .unwrap();
                assert_eq!(acked as u64 + 1, seq, "record {seq} follows the acknowledged head");
                link.try_into().unwrap()
            }
        };
        let rows: Vec<(i64, i64, Vec<u8>)> = {
            let mut stmt = tx.prepare("SELECT seq, epoch, ciphertext FROM records WHERE seq >= ?1 ORDER BY seq").unwrap();
            stmt.query_map([seq as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(|r| r.unwrap()).collect()
        };
        for (sq, epoch, ct) in rows {
            let link = chain::link(&prev, sq as u64, epoch as u64, &ct);
            tx.execute("UPDATE records SET link = ?1 WHERE seq = ?2", params![&link[..], sq]).unwrap();
            prev = link;
        }
        tx.execute("UPDATE chain_state SET last_link = ?1 WHERE id = 1", params![&prev[..]]).unwrap();
    }
    tx.commit().unwrap();
}

/// Opens every record still in the device's queue with the archive key (what only the archive
/// could do): (seq, the record or why it does not open). Key records (no content) are left out.
pub fn open_queue(device_dir: &Path, key: &ArchiveKey) -> Vec<(u64, Result<Record, String>)> {
    let conn = queue_db(device_dir);
    let (tenant, device, stream, acked_link): (String, String, String, Vec<u8>) = conn
        .query_row("SELECT tenant, device, stream, acked_link FROM chain_state WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    let id = StreamId { tenant, device, stream };
    let epochs: HashMap<u64, EpochInfo> = {
        let mut stmt = conn.prepare("SELECT epoch, archive_key_id, encapsulation FROM epochs").unwrap();
        stmt.query_map([], |r| {
            let epoch = r.get::<_, i64>(0)? as u64;
            Ok((epoch, EpochInfo { epoch, archive_key_id: r.get(1)?, encapsulation: r.get(2)? }))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
    };
    let mut stmt = conn.prepare("SELECT seq, epoch, link, ciphertext FROM records ORDER BY seq").unwrap();
    let rows: Vec<WireRecord> = stmt
        .query_map([], |r| {
            let link: Vec<u8> = r.get(2)?;
            Ok(WireRecord {
                seq: r.get::<_, i64>(0)? as u64,
                epoch: r.get::<_, i64>(1)? as u64,
                link: link.try_into().unwrap(),
                ciphertext: r.get(3)?,
            })
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut opener = Opener::new(key.secret_copy());
    let mut prev: Link = acked_link.try_into().unwrap();
    let mut out = Vec::new();
    for r in rows {
        let opened = match epochs.get(&r.epoch) {
            Some(e) => opener.open_any(&id, e, &r, &prev).map_err(|e| e.to_string()),
            None => Err(format!("epoch {} not in the queue", r.epoch)),
        };
        prev = r.link;
        match opened {
            Ok(verbatim_core::archive::OpenedRecord::KeyRecord { .. }) => {}
            Ok(verbatim_core::archive::OpenedRecord::Record { record, .. }) => out.push((r.seq, Ok(*record))),
            Err(e) => out.push((r.seq, Err(e))),
        }
    }
    out
}
