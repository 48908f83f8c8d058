//! `verbatim bench`: 5: cold start over a big queue.

#[allow(unused_imports)]
use super::*;

pub(super) fn bench_cold(report: &mut Report, plan: &Plan, base: &Path) -> BenchResult<()> {
    let dir = fresh_dir(base, "cold")?;
    let store = dir.join("device");
    let rt = runtime()?;
    let text = message_text();
    let agent = capture_agent(&rt, &store)?;
    let fill_secs = rt.block_on(fill(&agent, plan.cold_events, FILL_IN_FLIGHT, &text, "c"))?;
    rt.block_on(agent.close()).map_err(|e| format!("close: {e}"))?;
    drop(agent);
    let db_bytes = std::fs::metadata(store.join(verbatim_core::queue::DB_FILE)).map(|m| m.len()).unwrap_or(0);
    let mut in_process = Vec::new();
    let mut whole = Vec::new();
    for _ in 0..plan.cold_runs {
        let mut cmd = Command::new(exe()?);
        cmd.args(["bench", "cold-child", "--dir"]).arg(&store);
        let t = Instant::now();
        let out = child_json(cmd, Duration::from_secs(60))?;
        whole.push(t.elapsed().as_secs_f64() * 1e3);
        if out["queue_records"].as_u64().unwrap_or(0) < plan.cold_events {
            return Err(format!("cold start saw {} records, expected {}", out["queue_records"], plan.cold_events));
        }
        in_process.push(out["open_status_ms"].as_f64().unwrap_or(f64::NAN));
    }
    remove(&dir);
    let runs = in_process.clone();
    let med = median(&mut in_process);
    let med_whole = median(&mut whole);
    report.rows.push(
        Row::new(
            format!("cold start, {} events queued", plan.cold_events),
            format!("{med:.1} ms open + status (median of {}; whole process {med_whole:.0} ms)", plan.cold_runs),
        )
        .baseline(format!("store {:.0} MB, built at {:.0} events/s", db_bytes as f64 / 1e6, plan.cold_events as f64 / fill_secs))
        .goal("< 50 ms", med < 50.0),
    );
    report.json.insert(
        "cold_start".into(),
        json!({ "events": plan.cold_events, "db_bytes": db_bytes, "open_status_ms_median": round(med, 2), "runs_ms": runs,
                "whole_process_ms_median": round(med_whole, 1) }),
    );
    Ok(())
}

pub(super) fn cold_child(dir: &Path) -> BenchResult<()> {
    let started = Instant::now();
    let agent = Agent::open(dir, AgentOptions::default()).map_err(|e| format!("open agent: {e}"))?;
    let status = agent.status();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if !status.configured {
        return Err("the store's policy was not restored".into());
    }
    outln!("{}", json!({ "open_status_ms": round(ms, 3), "queue_records": status.queue_records }));
    Ok(())
}
