//! `verbatim bench`: 1 and 2: capture throughput and latency, against raw SQLite and queue-file.

#[allow(unused_imports)]
use super::*;

/// One measurement: events completed, seconds, each capture's latency, average group size.
pub(super) struct Run {
    pub(super) events: u64,
    pub(super) secs: f64,
    pub(super) latencies_ns: Vec<u64>,
    pub(super) avg_group: f64,
}

impl Run {
    pub(super) fn rate(&self) -> f64 {
        self.events as f64 / self.secs.max(1e-9)
    }
}

/// Runs `capturers` threads calling `one` until `duration` has passed; times every call.
pub(super) fn drive(
    capturers: usize,
    duration: Duration,
    one: impl Fn(usize, u64) -> BenchResult<()> + Sync,
) -> BenchResult<(u64, f64, Vec<u64>)> {
    let barrier = Barrier::new(capturers + 1);
    let failed = AtomicBool::new(false);
    let one = &one;
    let (barrier, failed) = (&barrier, &failed);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..capturers)
            .map(|t| {
                s.spawn(move || -> BenchResult<(Vec<u64>, Instant)> {
                    let mut lat = Vec::with_capacity(65536);
                    barrier.wait();
                    let deadline = Instant::now() + duration;
                    let mut i = 0u64;
                    while Instant::now() < deadline && !failed.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        if let Err(e) = one(t, i) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        lat.push(t0.elapsed().as_nanos() as u64);
                        i += 1;
                    }
                    Ok((lat, Instant::now()))
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut all = Vec::new();
        let mut end = start;
        for h in handles {
            let (lat, finished) = h.join().map_err(|_| "capturer thread panicked".to_string())??;
            all.extend(lat);
            end = end.max(finished);
        }
        Ok((all.len() as u64, (end - start).as_secs_f64(), all))
    })
}

/// Our agent, open for the whole comparison at one capturer count.
pub(super) struct Ours<'a> {
    pub(super) rt: &'a tokio::runtime::Runtime,
    pub(super) agent: Agent,
    pub(super) text: Arc<str>,
}

impl Ours<'_> {
    pub(super) fn slice(&self, capturers: usize, duration: Duration, round: usize) -> BenchResult<Run> {
        let before = verbatim_core::queue::commit_stats();
        let (events, secs, latencies_ns) = drive(capturers, duration, |t, i| {
            match self.agent.capture_blocking(message(&self.text, format!("m-{round}-{t}-{i:07}"))) {
                Ok(CaptureOutcome::Captured { .. }) => Ok(()),
                Ok(other) => Err(format!("capture: unexpected {other:?}")),
                Err(e) => Err(format!("capture: {e}")),
            }
        })?;
        let after = verbatim_core::queue::commit_stats();
        let groups = (after.transactions - before.transactions).max(1);
        Ok(Run { events, secs, latencies_ns, avg_group: (after.jobs - before.jobs) as f64 / groups as f64 })
    }

    pub(super) fn close(self) -> BenchResult<()> {
        self.rt.block_on(self.agent.close()).map_err(|e| format!("close: {e}"))
    }
}

/// A row handed to a baseline's single writer, and where to say it is durable.
pub(super) struct Request {
    pub(super) row: Vec<u8>,
    pub(super) captured_ms: i64,
    pub(super) done: mpsc::SyncSender<()>,
}

/// A baseline store behind the same shape as our writer: one thread takes whatever requests are
/// waiting (up to 256, our MAX_GROUP), commits them with `commit`, then answers each.
pub(super) struct Baseline {
    pub(super) tx: Option<mpsc::Sender<Request>>,
    pub(super) writer: Option<std::thread::JoinHandle<BenchResult<()>>>,
    pub(super) groups: Arc<std::sync::atomic::AtomicU64>,
    pub(super) rows: Arc<std::sync::atomic::AtomicU64>,
    pub(super) template: Vec<u8>,
}

impl Baseline {
    pub(super) fn start(row_len: usize, mut commit: impl FnMut(&[Request]) -> BenchResult<()> + Send + 'static) -> Baseline {
        let mut template = vec![0u8; row_len];
        synth::Rng::new(7).fill(&mut template);
        let (tx, rx) = mpsc::channel::<Request>();
        let groups = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let rows = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (g, r) = (groups.clone(), rows.clone());
        let writer = std::thread::spawn(move || -> BenchResult<()> {
            while let Ok(first) = rx.recv() {
                let mut group = vec![first];
                while group.len() < 256 {
                    match rx.try_recv() {
                        Ok(req) => group.push(req),
                        Err(_) => break,
                    }
                }
                commit(&group)?;
                g.fetch_add(1, Ordering::Relaxed);
                r.fetch_add(group.len() as u64, Ordering::Relaxed);
                for req in group {
                    let _ = req.done.send(());
                }
            }
            Ok(())
        });
        Baseline { tx: Some(tx), writer: Some(writer), groups, rows, template }
    }

    /// `capturers` threads each submit one row and wait until it is durable, for `duration`.
    pub(super) fn slice(&self, capturers: usize, duration: Duration) -> BenchResult<Run> {
        let tx = self.tx.as_ref().ok_or("baseline closed")?;
        let waiters: Vec<(mpsc::SyncSender<()>, std::sync::Mutex<mpsc::Receiver<()>>)> =
            (0..capturers).map(|_| mpsc::sync_channel(1)).map(|(a, b)| (a, std::sync::Mutex::new(b))).collect();
        let (g0, r0) = (self.groups.load(Ordering::Relaxed), self.rows.load(Ordering::Relaxed));
        let (events, secs, latencies_ns) = drive(capturers, duration, |t, _| {
            let (done, wait) = &waiters[t];
            let request = Request { row: self.template.clone(), captured_ms: now_ms(), done: done.clone() };
            tx.send(request).map_err(|_| "baseline writer stopped")?;
            wait.lock().map_err(|_| "lock")?.recv().map_err(|_| "baseline writer stopped".to_string())
        })?;
        let groups = (self.groups.load(Ordering::Relaxed) - g0).max(1);
        let rows = self.rows.load(Ordering::Relaxed) - r0;
        Ok(Run { events, secs, latencies_ns, avg_group: rows as f64 / groups as f64 })
    }

    pub(super) fn close(mut self) -> BenchResult<()> {
        drop(self.tx.take());
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err("baseline writer panicked".into()),
            None => Ok(()),
        }
    }
}

/// Raw SQLite: the same table shape as our `records`, WAL, synchronous=FULL, one transaction
/// per group. No sealing, no chain, no head row, no savepoints: just the durable inserts.
pub(super) fn raw_sqlite(dir: &Path, ct_len: usize) -> BenchResult<Baseline> {
    let mut conn = rusqlite::Connection::open(dir.join("raw.sqlite3")).map_err(|e| e.to_string())?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("raw SQLite: journal mode {mode}"));
    }
    conn.pragma_update(None, "synchronous", "FULL").map_err(|e| e.to_string())?;
    conn.execute_batch(
        "CREATE TABLE records (seq INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, captured_ms INTEGER NOT NULL,
                               link BLOB NOT NULL, ciphertext BLOB NOT NULL)",
    )
    .map_err(|e| e.to_string())?;
    let mut seq = 0i64;
    Ok(Baseline::start(ct_len + 32, move |group| {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| e.to_string())?;
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO records (seq, epoch, captured_ms, link, ciphertext) VALUES (?1, ?2, ?3, ?4, ?5)")
                .map_err(|e| e.to_string())?;
            for r in group {
                seq += 1;
                let (link, ct) = r.row.split_at(32);
                insert.execute(rusqlite::params![seq, 1i64, r.captured_ms, link, ct]).map_err(|e| e.to_string())?;
            }
        }
        tx.commit().map_err(|e| e.to_string())
    }))
}

/// queue-file (Square's Tape): `add_n` of each group, syncs on (its default).
pub(super) fn tape(dir: &Path, ct_len: usize) -> BenchResult<Baseline> {
    let mut qf = queue_file::QueueFile::open(dir.join("tape.qf")).map_err(|e| format!("queue-file: {e}"))?;
    qf.set_sync_writes(true);
    // The same bytes as a row of ours: seq, epoch, captured_ms, link and the ciphertext.
    Ok(Baseline::start(24 + 32 + ct_len, move |group| {
        qf.add_n(group.iter().map(|r| r.row.as_slice())).map_err(|e| format!("queue-file: {e}"))
    }))
}

/// Pooled over slices: events per second of all of them together.
pub(super) fn pooled_rate(runs: &[Run]) -> f64 {
    runs.iter().map(|r| r.events).sum::<u64>() as f64 / runs.iter().map(|r| r.secs).sum::<f64>().max(1e-9)
}

pub(super) fn pooled_group(runs: &[Run]) -> f64 {
    let events: f64 = runs.iter().map(|r| r.events as f64).sum();
    events / runs.iter().map(|r| r.events as f64 / r.avg_group.max(1e-9)).sum::<f64>().max(1e-9)
}

pub(super) fn sorted_latencies(runs: &[Run]) -> Vec<u64> {
    let mut lat: Vec<u64> = runs.iter().flat_map(|r| r.latencies_ns.iter().copied()).collect();
    lat.sort_unstable();
    lat
}

pub(super) fn bench_capture(report: &mut Report, plan: &Plan, base: &Path) -> BenchResult<()> {
    let rt = runtime()?;
    let text = message_text();
    let ct_len = ciphertext_len(&text);
    let slice = Duration::from_secs_f64(plan.capture_secs);
    let mut json_rows = Vec::new();
    let mut latency_rows = Vec::new();
    for &n in &plan.capturers {
        // The three stores stay open; they take turns in short slices, in alternating order, so
        // that the machine's drifting load (others share its two cores and its disk) falls on
        // all three alike. Rates are pooled over all slices.
        let dir = fresh_dir(base, &format!("capture-{n}"))?;
        let ours = Ours { rt: &rt, agent: capture_agent(&rt, &dir.join("ours"))?, text: text.clone() };
        std::fs::create_dir_all(dir.join("sqlite")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(dir.join("tape")).map_err(|e| e.to_string())?;
        let sqlite = raw_sqlite(&dir.join("sqlite"), ct_len)?;
        let queue_file = tape(&dir.join("tape"), ct_len)?;
        let (mut o, mut s, mut q) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..plan.rounds {
            let order: [u8; 3] = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
            for system in order {
                match system {
                    0 => o.push(ours.slice(n, slice, round)?),
                    1 => s.push(sqlite.slice(n, slice)?),
                    _ => q.push(queue_file.slice(n, slice)?),
                }
            }
        }
        ours.close()?;
        sqlite.close()?;
        queue_file.close()?;
        remove(&dir);
        let (rate, srate, qrate) = (pooled_rate(&o), pooled_rate(&s), pooled_rate(&q));
        let (vs_sqlite, vs_tape) = (rate / srate, rate / qrate);
        let per_round = |other: &[Run]| o.iter().zip(other).map(|(a, b)| round(a.rate() / b.rate(), 3)).collect::<Vec<_>>();
        let (group, sgroup, qgroup) = (pooled_group(&o), pooled_group(&s), pooled_group(&q));
        let (lat, slat, qlat) = (sorted_latencies(&o), sorted_latencies(&s), sorted_latencies(&q));
        let (p50, p99, p999) = (percentile_ms(&lat, 50.0), percentile_ms(&lat, 99.0), percentile_ms(&lat, 99.9));
        eprintln!(
            "  {n:>2} capturers: ours {rate:>6.0}/s (group {group:.1})  SQLite {srate:>6.0}/s (group {sgroup:.1})  queue-file {qrate:>6.0}/s (group {qgroup:.1})"
        );
        let plural = if n == 1 { "" } else { "s" };
        report.rows.push(
            Row::new(format!("capture 1 KiB, {n} capturer{plural}"), format!("{rate:.0} events/s (avg group {group:.1})"))
                .baseline(format!(
                    "SQLite {srate:.0}/s (group {sgroup:.1}): {vs_sqlite:.2}x; queue-file {qrate:.0}/s: {vs_tape:.2}x"
                ))
                .goal(">= 0.5x SQLite, >= 1.0x queue-file", vs_sqlite >= 0.5 && vs_tape >= 1.0),
        );
        latency_rows.push(
            Row::new(
                format!("capture latency, {n} capturer{plural}"),
                format!("p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms"),
            )
            .baseline(format!(
                "SQLite p50 {:.2}, p99 {:.2} ms; queue-file p50 {:.2}, p99 {:.2} ms",
                percentile_ms(&slat, 50.0),
                percentile_ms(&slat, 99.0),
                percentile_ms(&qlat, 50.0),
                percentile_ms(&qlat, 99.0)
            ))
            .goal("p99 < 2 ms", p99 < 2.0),
        );
        let lat_json = |l: &[u64]| {
            json!({ "p50": round(percentile_ms(l, 50.0), 3), "p99": round(percentile_ms(l, 99.0), 3),
                    "p99_9": round(percentile_ms(l, 99.9), 3), "samples": l.len() })
        };
        json_rows.push(json!({
            "capturers": n,
            "events_per_s": round(rate, 0),
            "avg_group": round(group, 2),
            "sqlite_events_per_s": round(srate, 0),
            "sqlite_avg_group": round(sgroup, 2),
            "queue_file_events_per_s": round(qrate, 0),
            "queue_file_avg_group": round(qgroup, 2),
            "ratio_vs_sqlite": round(vs_sqlite, 3),
            "ratio_vs_queue_file": round(vs_tape, 3),
            "slices_ratio_vs_sqlite": per_round(&s),
            "slices_ratio_vs_queue_file": per_round(&q),
            "latency_ms": lat_json(&lat),
            "sqlite_latency_ms": lat_json(&slat),
            "queue_file_latency_ms": lat_json(&qlat),
        }));
    }
    report.rows.extend(latency_rows);
    report.json.insert(
        "capture".into(),
        json!({ "ciphertext_bytes": ct_len, "seconds_per_slice": plan.capture_secs, "slices": plan.rounds, "by_capturers": json_rows }),
    );
    Ok(())
}
