//! `verbatim bench`: 10: erasure by keys. Capture sealed with conversation keys against the
//! original single epoch key (two stores taking turns in slices, messages spread over 50
//! conversations); the key vault's ingest of an archive against an export of the same archive
//! (both open every record with the archive key); one erasure request's latency.

#[allow(unused_imports)]
use super::*;

use verbatim_core::seal::Sealing;
use verbatim_receiver::store::{Mode, Outcome, SqliteStore, StoreRules};
use verbatim_receiver::vault::{self, Vault};

const CONVERSATIONS: u64 = 50;

fn conversation_message(text: &str, n: u64, tag: &str) -> Event {
    let mut event = message(text, format!("{tag}-{n}"));
    if let Event::Message(m) = &mut event {
        m.meta.conversation_id = format!("conv-{}", n % CONVERSATIONS);
    }
    event
}

fn sealing_agent(rt: &tokio::runtime::Runtime, dir: &Path, public: &[u8; 32], sealing: Sealing) -> BenchResult<Agent> {
    let agent = Agent::open(dir, AgentOptions { sealing, ..AgentOptions::default() }).map_err(|e| format!("open agent: {e}"))?;
    let p = policy(NO_ARCHIVE, public, "bench-token-never-sent", "bench-device", 1024, None);
    rt.block_on(agent.apply_policy(&p)).map_err(|e| format!("policy: {e}"))?;
    Ok(agent)
}

async fn capture_n(agent: &Agent, from: u64, n: u64, text: &Arc<str>, tag: &str) -> BenchResult<f64> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let workers = 64.min(n.max(1));
    for w in 0..workers {
        let (agent, text, tag) = (agent.clone(), text.clone(), tag.to_string());
        tasks.spawn(async move {
            let mut i = from + w;
            while i < from + n {
                agent.capture(conversation_message(&text, i, &tag)).await.map_err(|e| format!("capture: {e}"))?;
                i += workers;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| format!("capture task: {e}"))??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Moves everything `agent` queued into `store`, as an upload would (without HTTP).
async fn archive_all(agent: &Agent, store: &SqliteStore) -> BenchResult<u64> {
    let mut records = 0;
    while let Some(batch) = agent.read_batch(4 << 20).map_err(|e| e.to_string())? {
        let last = batch.records.last().map(|r| r.seq).unwrap_or(0);
        records += batch.records.len() as u64;
        match store.submit(batch, Mode::Commit).await.map_err(|e| e.to_string())? {
            Outcome::Stored(_) => agent.acknowledge(last).await.map_err(|e| e.to_string())?,
            other => return Err(format!("archive refused a batch: {other:?}")),
        }
    }
    Ok(records)
}

pub(super) fn bench_erasure(report: &mut Report, plan: &Plan, base: &Path) -> BenchResult<()> {
    let dir = fresh_dir(base, "erasure")?;
    let rt = runtime()?;
    let (secret, public) = verbatim_core::seal::generate_archive_keypair();
    let text = message_text();
    let per_slice: u64 = if plan.quick { 300 } else { 3_000 };
    let rounds = if plan.quick { 2 } else { 8 };

    // Capture: the two sealings take turns, so the machine's load falls on both alike.
    let v2 = sealing_agent(&rt, &dir.join("v2"), &public, Sealing::ConversationKeys)?;
    let v1 = sealing_agent(&rt, &dir.join("v1"), &public, Sealing::EpochKey)?;
    let (mut secs_v1, mut secs_v2) = (0.0, 0.0);
    for round in 0..rounds {
        let from = round * per_slice;
        let order: [(&Agent, bool); 2] = if round % 2 == 0 { [(&v1, false), (&v2, true)] } else { [(&v2, true), (&v1, false)] };
        for (agent, conversation_keys) in order {
            let secs = rt.block_on(capture_n(agent, from, per_slice, &text, "e"))?;
            if conversation_keys { secs_v2 += secs } else { secs_v1 += secs }
        }
    }
    let events = (rounds * per_slice) as f64;
    let (rate_v1, rate_v2) = (events / secs_v1, events / secs_v2);
    report.rows.push(
        Row::new("capture, conversation keys", format!("{rate_v2:.0} events/s ({:.2}x the single epoch key)", rate_v2 / rate_v1))
            .baseline(format!("single epoch key: {rate_v1:.0} events/s; {CONVERSATIONS} conversations, 1 KiB messages")),
    );

    // The archive of the conversation-key device, then ingest against export.
    let archive_dir = dir.join("archive");
    let rules = StoreRules::new(verbatim_receiver::AcceptedKeys::from_public_keys([&public]));
    let store = SqliteStore::open(&archive_dir, rules).map_err(|e| e.to_string())?;
    let records = rt.block_on(archive_all(&v2, &store))?;
    store.close();
    drop((v1, v2));
    let keys = verbatim_receiver::KeyRing::new(std::slice::from_ref(&secret)).map_err(|e| e.to_string())?;
    let mut vault = Vault::create(&dir.join("vault"), vault::Settings::default(), "bench").map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut reader = verbatim_receiver::store::sqlite::SqliteReader::open(&archive_dir).map_err(|e| e.to_string())?;
    let filed = vault::ingest::ingest(&mut vault, &mut reader, &keys, "bench").map_err(|e| e.to_string())?;
    let ingest_secs = t.elapsed().as_secs_f64();
    if !filed.stopped.is_empty() {
        return Err(format!("ingest stopped: {:?}", filed.stopped));
    }
    let t = Instant::now();
    let summary = verbatim_receiver::export::export_with_keys(&archive_dir, std::slice::from_ref(&secret), &dir.join("export"))
        .map_err(|e| e.to_string())?;
    let export_secs = t.elapsed().as_secs_f64();
    if summary.records != records {
        return Err(format!("export read {} of {records} records", summary.records));
    }
    let (ingest_rate, export_rate) = (records as f64 / ingest_secs, records as f64 / export_secs);
    report.rows.push(
        Row::new("vault ingest", format!("{ingest_rate:.0} records/s ({:.2}x export)", ingest_rate / export_rate))
            .baseline(format!("export of the same {records} records: {export_rate:.0} records/s")),
    );

    // One erasure request: a conversation's keys deleted, tombstoned, audited, log truncated.
    let t = Instant::now();
    let erased = vault::erase::erase(
        &mut vault,
        &vault::erase::Selector::Conversation { device: "bench-device".into(), conversation_id: "conv-7".into() },
        "bench",
        "bench",
        now_ms(),
    )
    .map_err(|e| e.to_string())?;
    let erase_ms = t.elapsed().as_secs_f64() * 1000.0;
    report.rows.push(
        Row::new("erase one conversation", format!("{erase_ms:.1} ms ({} keys, {} records)", erased.keys, erased.records))
            .baseline(format!("vault of {} content keys", filed.content_keys_filed)),
    );
    report.json.insert(
        "erasure".into(),
        json!({
            "capture_events_per_s": {"conversation_keys": rate_v2.round(), "epoch_key": rate_v1.round(), "ratio": round(rate_v2 / rate_v1, 3)},
            "ingest_records_per_s": ingest_rate.round(), "export_records_per_s": export_rate.round(),
            "ingest_vs_export": round(ingest_rate / export_rate, 3), "records": records,
            "erase_ms": round(erase_ms, 2), "erased_keys": erased.keys,
        }),
    );
    remove(&dir);
    Ok(())
}
