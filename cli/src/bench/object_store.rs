//! `verbatim bench`: 3b: upload into the object store (S3 Object Lock on a local SeaweedFS)
//! through one receiver and through two side by side, in the same run as the SQLite receiver
//! (row 3), with the objects and bytes written per 100,000 events.

#[allow(unused_imports)]
use super::*;

use verbatim_receiver::seaweed::Seaweed;

/// A new bucket with Object Lock, written to once: SeaweedFS allocates a bucket's volumes on
/// its first write (seconds), which a long-lived bucket has long done.
fn warm_bucket(weed: &Seaweed, name: &str) -> BenchResult<verbatim_receiver::store::s3::S3StoreConfig> {
    weed.create_bucket(name, true).map_err(|e| e.to_string())?;
    let config = weed.store_config(name, 1);
    runtime()?
        .block_on(async {
            let client = verbatim_receiver::store::s3::S3Client::new(&config.s3)?;
            client.put("warm-up", vec![0; 1024], &verbatim_receiver::store::s3::PutOptions::default()).await
        })
        .map_err(|e| format!("warm up {name}: {e}"))?;
    Ok(config)
}

/// One device filled with `events` and drained through `url`.
struct Drained {
    records: u64,
    batches: u64,
    secs: f64,
}

pub(super) fn bench_object_store(report: &mut Report, plan: &Plan, base: &Path, batch_kb: u32) -> BenchResult<()> {
    if let Err(e) = verbatim_receiver::seaweed::weed_binary() {
        if std::env::var_os("VERBATIM_REQUIRE_WEED").is_some() {
            return Err(format!("no SeaweedFS: {e}"));
        }
        report.rows.push(Row::new("upload into the object store", format!("skipped: {e}")));
        return Ok(());
    }
    let dir = fresh_dir(base, "object-store")?;
    let weed = Seaweed::start().map_err(|e| format!("SeaweedFS: {e}"))?;
    let events = plan.upload_events;

    // One receiver, one device: the same workload as the SQLite row.
    let one_config = warm_bucket(&weed, "bench-one")?;
    let one = upload_through(&dir.join("one"), std::slice::from_ref(&one_config), &[events], batch_kb)?;
    let one_rate = one[0].records as f64 / one[0].secs;
    let rt = runtime()?;
    let (objects, bytes) = rt
        .block_on(async {
            let client = verbatim_receiver::store::s3::S3Client::new(&one_config.s3)?;
            client.usage("archive/v1/t/").await
        })
        .map_err(|e| format!("bucket usage: {e}"))?;
    let per_100k = |n: u64| n as f64 * 100_000.0 / one[0].records.max(1) as f64;

    // Two receivers on one bucket, a device through each, at once.
    let two_config = warm_bucket(&weed, "bench-two")?;
    let two = upload_through(&dir.join("two"), &[two_config.clone(), two_config], &[events / 2, events / 2], batch_kb)?;
    let two_records: u64 = two.iter().map(|d| d.records).sum();
    let two_secs = two.iter().map(|d| d.secs).fold(0.0, f64::max);
    let two_rate = two_records as f64 / two_secs;
    drop(weed);
    remove(&dir);

    let sqlite_rate = report.json.get("upload").and_then(|u| u["events_per_s"].as_f64());
    let ratio = sqlite_rate.map(|s| one_rate / s);
    let vs = match ratio {
        Some(r) => format!("{r:.2}x the SQLite receiver (row above)"),
        None => "SQLite row not run (--only)".into(),
    };
    report.rows.push(
        Row::new(
            format!("upload {events} events into S3 Object Lock, 1 receiver (SeaweedFS, loopback)"),
            format!("{one_rate:.0} events/s ({} batches)", one[0].batches),
        )
        .baseline(vs)
        .goal(">= 0.5x the SQLite receiver", ratio.is_some_and(|r| r >= 0.5)),
    );
    report.rows.push(Row::new(
        format!("upload {two_records} events, 2 receivers on one bucket, a device each"),
        format!("{two_rate:.0} events/s in all"),
    ));
    report.rows.push(Row::new(
        "object store: written per 100,000 events (1 KiB messages)",
        format!("{:.0} objects, {:.1} MB", per_100k(objects), per_100k(bytes) / 1e6),
    ));
    report.json.insert(
        "object_store".into(),
        json!({
            "events": events, "one_receiver_events_per_s": round(one_rate, 0), "one_receiver_batches": one[0].batches,
            "two_receivers_events_per_s": round(two_rate, 0), "ratio_to_sqlite": ratio.map(|r| round(r, 2)),
            "objects_per_100k_events": round(per_100k(objects), 0), "bytes_per_100k_events": round(per_100k(bytes), 0),
            "max_batch_kb": batch_kb,
        }),
    );
    Ok(())
}

/// Starts one receiver per config (all in this process, each on its own runtime thread), a
/// device per receiver with `events[i]` queued, then drains them all at once.
fn upload_through(
    dir: &Path,
    stores: &[verbatim_receiver::store::s3::S3StoreConfig],
    events: &[u64],
    batch_kb: u32,
) -> BenchResult<Vec<Drained>> {
    let rt = runtime()?;
    let text = message_text();
    let (_, public) = verbatim_core::seal::generate_archive_keypair();
    let tokens = dir.join("tokens.jsonl");
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut receivers = Vec::new();
    let mut agents = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        let mut config = verbatim_receiver::ReceiverConfig::local_self_signed(
            dir.join(format!("receiver-{i}")),
            verbatim_receiver::AcceptedKeys::from_public_keys([&public]),
        );
        config.tokens_file = tokens.clone();
        config.object_store = Some(store.clone());
        let receiver = verbatim_receiver::Receiver::start_in_background(config).map_err(|e| format!("receiver: {e}"))?;
        let device = format!("bench-s3-{i}");
        let token = verbatim_receiver::add_device(&tokens, TENANT, &device).map_err(|e| format!("add device: {e}"))?;
        let ca = receiver.ca_pem().ok_or("receiver has no CA")?.to_string();
        let p = policy(&receiver.url(), &public, token.expose(), &device, batch_kb, Some(&ca));
        let agent = Agent::open(&dir.join(&device), AgentOptions::default()).map_err(|e| format!("open agent: {e}"))?;
        rt.block_on(async {
            agent.apply_policy(&p).await.map_err(|e| format!("policy: {e}"))?;
            fill(&agent, events[i], FILL_IN_FLIGHT, &text, &format!("s{i}")).await.map(|_| ())
        })?;
        receivers.push(receiver);
        agents.push(agent);
    }
    // Every device drains at once, each on a thread and runtime of its own.
    let drained: Vec<BenchResult<Drained>> = std::thread::scope(|scope| {
        let runs: Vec<_> = agents
            .iter()
            .map(|agent| {
                scope.spawn(move || {
                    let (records, _, batches, secs) = runtime()?.block_on(drain(agent))?;
                    Ok(Drained { records, batches, secs })
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap_or_else(|_| Err("a drain thread panicked".into()))).collect()
    });
    rt.block_on(async {
        for a in &agents {
            a.close().await.map_err(|e| format!("close: {e}"))?;
        }
        Ok::<_, String>(())
    })?;
    for r in receivers {
        r.shutdown();
    }
    drained.into_iter().collect()
}
