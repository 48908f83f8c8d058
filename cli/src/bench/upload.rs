//! `verbatim bench`: 3: upload to the real receiver over TLS.

#[allow(unused_imports)]
use super::*;

pub(super) fn bench_upload(report: &mut Report, plan: &Plan, base: &Path, batch_kb: u32) -> BenchResult<()> {
    let dir = fresh_dir(base, "upload")?;
    let rt = runtime()?;
    let text = message_text();
    let (_, public) = verbatim_core::seal::generate_archive_keypair();
    let archive_dir = dir.join("archive");
    let config = verbatim_receiver::ReceiverConfig::local_self_signed(
        &archive_dir,
        verbatim_receiver::AcceptedKeys::from_public_keys([&public]),
    );
    let tokens = config.tokens_file.clone();
    // The receiver runs on its own thread and runtime, as a separate server would.
    let receiver = verbatim_receiver::Receiver::start_in_background(config).map_err(|e| format!("receiver: {e}"))?;
    let token = verbatim_receiver::add_device(&tokens, TENANT, "bench-upload").map_err(|e| format!("add device: {e}"))?;
    let ca = receiver.ca_pem().ok_or("receiver has no CA")?.to_string();
    let p = policy(&receiver.url(), &public, token.expose(), "bench-upload", batch_kb, Some(&ca));
    let agent = Agent::open(&dir.join("device"), AgentOptions::default()).map_err(|e| format!("open agent: {e}"))?;
    let result = rt.block_on(async {
        agent.apply_policy(&p).await.map_err(|e| format!("policy: {e}"))?;
        let fill_secs = fill(&agent, plan.upload_events, FILL_IN_FLIGHT, &text, "u").await?;
        let queued = agent.snapshot().pending_count;
        let (records, bytes, batches, secs) = drain(&agent).await?;
        agent.close().await.map_err(|e| format!("close: {e}"))?;
        Ok::<_, String>((fill_secs, queued, records, bytes, batches, secs))
    });
    receiver.shutdown();
    let (fill_secs, queued, records, bytes, batches, secs) = result?;
    let verified = verbatim_receiver::verify(&archive_dir).map_err(|e| format!("verify: {e}"))?;
    if !verified.totals.ok || verified.totals.records < queued {
        return Err(format!("the archive holds {} of {queued} records (ok: {})", verified.totals.records, verified.totals.ok));
    }
    remove(&dir);
    let rate = records as f64 / secs;
    let mbps = bytes as f64 / 1e6 / secs;
    report.rows.push(
        Row::new(
            format!("upload {} queued events (TLS, loopback, receiver fsync)", plan.upload_events),
            format!("{rate:.0} events/s, {mbps:.1} MB/s ({batches} batches of <= {batch_kb} KiB)"),
        )
        .baseline(format!("archive verified: {} records, chain intact", verified.totals.records))
        .goal(">= 50,000 events/s", rate >= 50_000.0),
    );
    report.rows.push(Row::new(
        format!("fill: {} captures, {FILL_IN_FLIGHT} in flight", plan.upload_events),
        format!("{:.0} events/s (sealed, chained, durable; large groups)", plan.upload_events as f64 / fill_secs),
    ));
    report.json.insert(
        "upload".into(),
        json!({
            "events": plan.upload_events, "records_sent": records, "bytes_sent": bytes, "batches": batches,
            "max_batch_kb": batch_kb, "seconds": round(secs, 3), "events_per_s": round(rate, 0), "mb_per_s": round(mbps, 2),
            "fill_events_per_s": round(plan.upload_events as f64 / fill_secs, 0),
        }),
    );
    Ok(())
}
