//! `verbatim bench`: 8: the iMessage relay over a big `chat.db`: the first scan (every row
//! captured: sealed, chained, durable), then a re-scan when nothing changed against a plain
//! SQLite read of the rows that re-scan looks at; peak RSS of a small and a large scan.

#[allow(unused_imports)]
use super::*;

use verbatim_core::sources::imessage::fixture::World;
use verbatim_core::sources::imessage::{self, RelayOptions};

/// Re-scans (and baseline reads) per run; the median is reported.
const RESCANS: usize = 7;

fn build_world(dir: &Path, messages: u64) -> BenchResult<World> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let world = World::create(dir);
    let conn = world.db.connection();
    conn.execute_batch("BEGIN").map_err(|e| format!("chat.db: {e}"))?;
    // The world holds 13 rows already; the rest are ordinary business messages.
    World::more_messages(&world.db, "B", messages.saturating_sub(13) as usize);
    conn.execute_batch("COMMIT").map_err(|e| format!("chat.db: {e}"))?;
    Ok(world)
}

pub(super) fn bench_imessage(report: &mut Report, plan: &Plan, base: &Path) -> BenchResult<()> {
    let dir = fresh_dir(base, "imessage")?;
    let (_, public) = verbatim_core::seal::generate_archive_keypair();
    let policy_file = dir.join("policy.json");
    let p = policy(NO_ARCHIVE, &public, "bench-token-never-sent", "bench-mac", 1024, None);
    std::fs::write(&policy_file, serde_json::to_vec(&p).map_err(|e| e.to_string())?).map_err(|e| format!("policy: {e}"))?;
    let mut runs = Vec::new();
    for messages in [plan.imessage_small, plan.imessage_large] {
        let mac = dir.join(format!("mac-{messages}"));
        let t = Instant::now();
        let world = build_world(&mac, messages)?;
        eprintln!("[imessage] chat.db with {messages} messages built in {:.1} s", t.elapsed().as_secs_f64());
        let mut cmd = Command::new(exe()?);
        cmd.args(["bench", "imessage-child", "--chat-db"])
            .arg(&world.db.path)
            .arg("--attachments-root")
            .arg(&world.attachments_root)
            .arg("--state")
            .arg(mac.join("relay"))
            .arg("--policy")
            .arg(&policy_file);
        let out = child_json(cmd, Duration::from_secs(4 * 3600))?;
        drop(world);
        remove(&mac);
        runs.push((messages, out));
    }
    remove(&dir);
    let (small_n, small) = &runs[0];
    let (large_n, large) = &runs[1];
    let f = |v: &Json, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let first_secs = f(large, "first_scan_secs");
    let rescan = f(large, "rescan_ms");
    let baseline = f(large, "baseline_ms");
    let ratio = rescan / baseline;
    let (rss_small, rss_large) = (f(small, "peak_rss_kib"), f(large, "peak_rss_kib"));
    let growth = (rss_large / rss_small - 1.0) * 100.0;
    report.rows.push(
        Row::new(
            format!("iMessage relay first scan, {large_n} messages"),
            format!("{first_secs:.1} s, {:.0} messages/s captured", f(large, "captured") / first_secs),
        )
        .baseline(format!("{} events captured", large["captured"])),
    );
    report.rows.push(
        Row::new("iMessage relay re-scan, nothing changed", format!("{rescan:.1} ms (median of {RESCANS}), {ratio:.2}×"))
            .baseline(format!("plain SQLite read of the same rows {baseline:.1} ms"))
            .goal("≤ 1.5×", ratio <= 1.5),
    );
    report.rows.push(
        Row::new(
            "iMessage relay peak RSS",
            format!("{:.1} MiB at {large_n} ({growth:+.1}% vs {small_n})", mib(rss_large as u64)),
        )
        .baseline(format!("{:.1} MiB at {small_n}", mib(rss_small as u64)))
        .goal("flat ≤ 10%", growth <= 10.0),
    );
    report.json.insert(
        "imessage".into(),
        json!({ "small": small, "large": large, "rescan_ratio": round(ratio, 3), "rss_growth_percent": round(growth, 1) }),
    );
    Ok(())
}

#[derive(clap::Args)]
pub(super) struct ImessageChildArgs {
    #[arg(long)]
    chat_db: PathBuf,
    #[arg(long)]
    attachments_root: PathBuf,
    #[arg(long)]
    state: PathBuf,
    #[arg(long)]
    policy: PathBuf,
}

/// What the re-scan reads, as a plain SQLite client would: the rows after the last one seen,
/// and the rows ever edited or retracted, with the columns compared.
fn plain_read(chat_db: &Path, after: i64) -> BenchResult<u64> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(chat_db, flags).map_err(|e| e.to_string())?;
    let mut rows = 0;
    let mut st = conn.prepare("SELECT ROWID, guid FROM message WHERE ROWID > ?1 ORDER BY ROWID").map_err(|e| e.to_string())?;
    let mut q = st.query([after]).map_err(|e| e.to_string())?;
    while q.next().map_err(|e| e.to_string())?.is_some() {
        rows += 1;
    }
    let mut st = conn
        .prepare("SELECT ROWID, guid, date_edited, date_retracted, message_summary_info FROM message WHERE ROWID <= ?1 AND (date_edited > 0 OR date_retracted > 0)")
        .map_err(|e| e.to_string())?;
    let mut q = st.query([after]).map_err(|e| e.to_string())?;
    while q.next().map_err(|e| e.to_string())?.is_some() {
        rows += 1;
    }
    Ok(rows)
}

pub(super) fn imessage_child(a: ImessageChildArgs) -> BenchResult<()> {
    let rt = runtime()?;
    let agent = Agent::open(&a.state, AgentOptions::default()).map_err(|e| format!("open agent: {e}"))?;
    let tree = verbatim_core::policy::file::load(&a.policy).map_err(|e| format!("policy: {e}"))?;
    rt.block_on(agent.apply_policy(&tree)).map_err(|e| format!("policy: {e}"))?;
    let options = RelayOptions { chat_db: a.chat_db.clone(), attachments_root: Some(a.attachments_root) };
    let t = Instant::now();
    let first = rt.block_on(imessage::scan(&agent, &options)).map_err(|e| format!("first scan: {e}"))?;
    let first_secs = t.elapsed().as_secs_f64();
    let last_rowid: i64 = rusqlite::Connection::open(&a.chat_db)
        .and_then(|c| c.query_row("SELECT max(ROWID) FROM message", [], |r| r.get(0)))
        .map_err(|e| e.to_string())?;
    // Alternate the two so the machine's load falls on both alike.
    let (mut ours, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..RESCANS {
        let t = Instant::now();
        let again = rt.block_on(imessage::scan(&agent, &options)).map_err(|e| format!("re-scan: {e}"))?;
        ours.push(t.elapsed().as_secs_f64() * 1e3);
        if again.captured != 0 || again.rows_read != 0 {
            return Err(format!(
                "a re-scan with nothing changed captured {} and read {} new rows",
                again.captured, again.rows_read
            ));
        }
        let t = Instant::now();
        plain_read(&a.chat_db, last_rowid)?;
        plain.push(t.elapsed().as_secs_f64() * 1e3);
    }
    rt.block_on(agent.close()).map_err(|e| format!("close: {e}"))?;
    let peak = proc_status_kib(None, "VmHWM:").unwrap_or(0);
    outln!(
        "{}",
        json!({ "first_scan_secs": round(first_secs, 2), "captured": first.captured, "rows_read": first.rows_read,
                "rescan_ms": round(median(&mut ours), 2), "baseline_ms": round(median(&mut plain), 2), "peak_rss_kib": peak })
    );
    Ok(())
}
