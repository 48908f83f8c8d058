//! `verbatim bench`: 8: the Google Messages archival source's reconciliation scan.
//!
//! A Telephony provider stand-in (an SQLite `sms` table with the provider's columns) of N rows
//! is read in pages of 512 by `_id`, as the Android layer reads `content://sms`. Baseline: that
//! plain read alone. Measured: the same read handed to the scanner over a store that has seen
//! every row (an unchanged provider: nothing to capture). Both alternate in one child process;
//! the child also reports its peak RSS, at 100,000 rows and at 1,000,000.

#[allow(unused_imports)]
use super::*;

use rusqlite::{Connection, params};
use verbatim_core::sources::telephony::{ScanOptions, Scanner, SmsRow};

const PAGE: i64 = 512;
const LINE: &str = "+15550100";

pub(super) fn bench_telephony(report: &mut Report, plan: &Plan, base: &Path) -> BenchResult<()> {
    let dir = fresh_dir(base, "telephony")?;
    let mut results = Vec::new();
    for (rows, rounds) in [(plan.telephony_rows, plan.telephony_rounds), (plan.telephony_rows_large, 1)] {
        let mut cmd = Command::new(exe()?);
        cmd.args(["bench", "telephony-child", "--rows", &rows.to_string(), "--rounds", &rounds.to_string(), "--dir"])
            .arg(dir.join(format!("rows-{rows}")));
        results.push(child_json(cmd, Duration::from_secs(3600))?);
    }
    remove(&dir);
    let small = &results[0];
    let (read_ms, scan_ms) =
        (small["plain_read_ms"].as_f64().unwrap_or(f64::NAN), small["rescan_ms"].as_f64().unwrap_or(f64::NAN));
    let ratio = scan_ms / read_ms;
    let rows = small["rows"].as_u64().unwrap_or(0);
    report.rows.push(
        Row::new(format!("telephony re-scan, {rows} unchanged provider rows"), format!("{scan_ms:.0} ms, nothing emitted"))
            .baseline(format!("plain read of the same rows {read_ms:.0} ms: {ratio:.2}x"))
            .goal("<= 1.5x", ratio <= 1.5),
    );
    let peaks: Vec<(u64, f64)> = results
        .iter()
        .map(|r| (r["rows"].as_u64().unwrap_or(0), r["peak_rss_kib"].as_u64().map(mib).unwrap_or(f64::NAN)))
        .collect();
    let flat = peaks.iter().all(|(_, m)| *m < 48.0);
    report.rows.push(
        Row::new(
            "telephony scan peak RSS",
            peaks.iter().map(|(r, m)| format!("{m:.1} MiB at {r} rows")).collect::<Vec<_>>().join(", "),
        )
        .baseline(format!(
            "first scan (baseline) {:.0} ms at {} rows",
            results[1]["first_scan_ms"].as_f64().unwrap_or(f64::NAN),
            results[1]["rows"]
        ))
        .goal("< 48 MiB", flat),
    );
    report.json.insert("telephony".into(), json!({ "runs": results, "rescan_vs_plain_read": round(ratio, 3) }));
    Ok(())
}

/// Builds the provider stand-in, scans it once (the baseline of history), then alternates
/// `rounds` plain reads and re-scans; prints medians and the process's peak RSS as JSON.
pub(super) fn telephony_child(rows: u64, rounds: usize, dir: &Path) -> BenchResult<()> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let provider = provider_db(&dir.join("mmssms.db"), rows)?;
    let rt = runtime()?;
    let agent = capture_agent(&rt, &dir.join("device"))?;
    let options = ScanOptions { line: LINE.into(), backfill_days: 0, now_ms: now_ms() };
    let t = Instant::now();
    let first = rt.block_on(scan_provider(&agent, &provider, &options))?;
    let first_scan_ms = t.elapsed().as_secs_f64() * 1e3;
    if first.0 != rows {
        return Err(format!("the first scan took {} rows as history, expected {rows}", first.0));
    }
    let (mut reads, mut scans) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so the page cache and the machine's load fall on both.
        for plain in if round % 2 == 0 { [true, false] } else { [false, true] } {
            let t = Instant::now();
            if plain {
                let mut n = 0u64;
                read_pages(&provider, |page| {
                    n += page.len() as u64;
                    Ok(())
                })?;
                reads.push(t.elapsed().as_secs_f64() * 1e3);
                if n != rows {
                    return Err(format!("read {n} rows, expected {rows}"));
                }
            } else {
                let (_, emitted) = rt.block_on(scan_provider(&agent, &provider, &options))?;
                scans.push(t.elapsed().as_secs_f64() * 1e3);
                if emitted != 0 {
                    return Err(format!("an unchanged provider emitted {emitted} events"));
                }
            }
        }
    }
    rt.block_on(agent.close()).map_err(|e| format!("close: {e}"))?;
    let peak = proc_status_kib(None, "VmHWM:").unwrap_or(0);
    outln!(
        "{}",
        json!({ "rows": rows, "first_scan_ms": round(first_scan_ms, 1), "plain_read_ms": round(median(&mut reads), 2),
                "rescan_ms": round(median(&mut scans), 2), "rounds": rounds, "peak_rss_kib": peak })
    );
    Ok(())
}

/// The stand-in: `content://sms`'s columns, one thread per ten rows, received and sent.
fn provider_db(path: &Path, rows: u64) -> BenchResult<Connection> {
    let e = |e: rusqlite::Error| format!("provider stand-in: {e}");
    let conn = Connection::open(path).map_err(e)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE sms (_id INTEGER PRIMARY KEY, thread_id INTEGER, address TEXT, person INTEGER, date INTEGER,
           date_sent INTEGER, protocol INTEGER, read INTEGER, status INTEGER, type INTEGER, body TEXT, seen INTEGER);",
    )
    .map_err(e)?;
    let start = now_ms() - rows as i64 * 1000 - 86_400_000;
    let mut conn = conn;
    let tx = conn.transaction().map_err(e)?;
    {
        let mut insert = tx
            .prepare("INSERT INTO sms (_id, thread_id, address, date, date_sent, read, status, type, body, seen) VALUES (?1, ?2, ?3, ?4, ?4, 1, -1, ?5, ?6, 1)")
            .map_err(e)?;
        for i in 1..=rows as i64 {
            let body = format!("Message {i} about the quarterly numbers and the call tomorrow at ten");
            insert.execute(params![i, i / 10, format!("+1555{:07}", i / 10), start + i * 1000, 1 + i % 2, body]).map_err(e)?;
        }
    }
    tx.commit().map_err(e)?;
    Ok(conn)
}

/// One page of `content://sms` after `_id` `after`, as the Android layer reads it.
fn read_page(conn: &Connection, after: i64) -> BenchResult<Vec<SmsRow>> {
    let e = |e: rusqlite::Error| format!("provider read: {e}");
    let mut stmt = conn
        .prepare_cached("SELECT _id, thread_id, address, date, type, body FROM sms WHERE _id > ?1 ORDER BY _id LIMIT ?2")
        .map_err(e)?;
    let rows: Vec<SmsRow> = stmt
        .query_map(params![after, PAGE], |r| {
            Ok(SmsRow {
                id: r.get(0)?,
                thread_id: r.get(1)?,
                address: r.get(2)?,
                date: r.get(3)?,
                kind: r.get(4)?,
                body: r.get(5)?,
            })
        })
        .map_err(e)?
        .collect::<rusqlite::Result<_>>()
        .map_err(e)?;
    Ok(rows)
}

/// Reads the whole table page by page.
fn read_pages(conn: &Connection, mut each: impl FnMut(Vec<SmsRow>) -> BenchResult<()>) -> BenchResult<()> {
    let mut after = 0i64;
    loop {
        let page = read_page(conn, after)?;
        let Some(last) = page.last() else { return Ok(()) };
        after = last.id;
        each(page)?;
    }
}

/// One scan of the stand-in, a page read then scanned at a time: (rows taken as history,
/// events emitted).
async fn scan_provider(agent: &Agent, provider: &Connection, options: &ScanOptions) -> BenchResult<(u64, usize)> {
    let fail = |e: verbatim_core::Error| format!("scan: {e}");
    let mut scanner = Scanner::begin(agent, options.clone()).await.map_err(fail)?;
    let mut after = 0i64;
    loop {
        let page = read_page(provider, after)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        scanner.sms(&page).await.map_err(fail)?;
    }
    let report = scanner.finish().await.map_err(fail)?;
    Ok((report.baseline, report.events.len()))
}
