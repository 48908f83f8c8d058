//! `verbatim bench`: 6: instructions per captured event (callgrind).

#[allow(unused_imports)]
use super::*;

pub(super) fn capture_child(events: u64, dir: &Path, capturers: usize) -> BenchResult<()> {
    let rt = runtime()?;
    let text = message_text();
    let agent = capture_agent(&rt, dir)?;
    let capturers = capturers.max(1) as u64;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..capturers)
            .map(|t| {
                let (agent, text) = (&agent, &text);
                s.spawn(move || -> BenchResult<()> {
                    let n = events / capturers + u64::from(t < events % capturers);
                    for i in 0..n {
                        agent.capture_blocking(message(text, format!("m-{t}-{i:07}"))).map_err(|e| format!("capture: {e}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().map_err(|_| "capturer panicked".to_string())?)
    })?;
    rt.block_on(agent.close()).map_err(|e| format!("close: {e}"))?;
    outln!("{}", json!({ "captured": events }));
    Ok(())
}

pub(super) fn callgrind_total(file: &Path) -> BenchResult<u64> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{}: no totals", file.display()))
}

/// Frames that are only plumbing (thread start, runtime, main): never the "top cost".
pub(super) fn plumbing(name: &str) -> bool {
    const SKIP: &[&str] = &[
        "???",
        "0x",
        "_start",
        "__libc_start",
        "start_thread",
        "clone",
        "main",
        "std::rt::",
        "std::sys::",
        "core::ops::function",
        "std::thread::",
        "__rust_begin_short_backtrace",
        "std::panicking",
        "std::panic",
        "verbatim::main",
        "verbatim::bench::",
        "<alloc::boxed::Box<F,A> as core::ops::function",
        "tokio::runtime",
        "_dl_",
        "verbatim_core::block_on",
        "core::panic",
        "std::sys_common",
        "verbatim::",
        // The writer's own scaffolding: the work it does is named below it.
        "verbatim_core::queue::writer::Writer::",
        "verbatim_core::queue::writer::Core::append",
        "verbatim_core::queue::writer::Core::perform",
        "verbatim_core::queue::writer::Core::capture",
        "verbatim_core::agent::Agent::capture",
        "verbatim_core::agent::build_job",
        "verbatim_core::queue::writer::Pending::new",
        "verbatim_core::block_on",
        "cipher::stream::core_api",
    ];
    SKIP.iter().any(|s| name.starts_with(s))
}

/// Instructions per function (inclusive or self) from `callgrind_annotate`, keyed by full name.
pub(super) fn callgrind_functions(file: &Path, inclusive: bool) -> BenchResult<Vec<(String, u64)>> {
    let out = Command::new("callgrind_annotate")
        .arg(format!("--inclusive={}", if inclusive { "yes" } else { "no" }))
        .arg("--threshold=100")
        .arg(file)
        .output()
        .map_err(|e| format!("callgrind_annotate: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut functions = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(first) = line.split_whitespace().next() else { continue };
        let Ok(ir) = first.replace(',', "").parse::<u64>() else { continue };
        // "1,234 (12.3%)  file:function [object]" (newer) or "1,234  file:function [object]".
        let rest = line[first.len()..].trim_start();
        let rest = if rest.starts_with('(') { rest.split_once(')').map(|(_, r)| r.trim_start()).unwrap_or(rest) } else { rest };
        if rest.starts_with("PROGRAM TOTALS") || rest.is_empty() {
            continue;
        }
        let func = rest.split_once(':').map(|(_, f)| f).unwrap_or(rest);
        let func = func.rsplit_once(" [").map(|(f, _)| f).unwrap_or(func).trim();
        if !func.is_empty() {
            functions.push((func.to_string(), ir));
        }
    }
    Ok(functions)
}

/// The top functions per captured event: the run with events minus the run without (so that
/// process start, the key exchange and the policy do not count), plumbing left out.
/// Returns (instructions per event, percent of the per-event total, name).
pub(super) fn callgrind_top(
    with: &Path,
    without: &Path,
    events: u64,
    inclusive: bool,
    n: usize,
) -> BenchResult<Vec<(u64, f64, String)>> {
    let setup: BTreeMap<String, u64> = callgrind_functions(without, inclusive)?.into_iter().collect();
    let per_event_total = callgrind_total(with)?.saturating_sub(callgrind_total(without)?) as f64 / events.max(1) as f64;
    let mut costs: Vec<(u64, String)> = callgrind_functions(with, inclusive)?
        .into_iter()
        .map(|(f, ir)| (ir.saturating_sub(setup.get(&f).copied().unwrap_or(0)) / events.max(1), f))
        .collect();
    costs.sort_by_key(|(ir, _)| std::cmp::Reverse(*ir));
    let mut top: Vec<(u64, f64, String)> = Vec::new();
    for (ir, func) in costs {
        if plumbing(func.trim_start_matches('<')) {
            continue;
        }
        let name = shorten(&func);
        // Generic helpers (indexing, conversions) only ever run inside the functions listed.
        const HELPERS: &[&str] = &["hybrid_array::", "core::", "alloc::", "usize as ", "T as ", "u8 as ", "[T] as "];
        if inclusive && HELPERS.iter().any(|h| name.starts_with(h)) {
            continue;
        }
        // A wrapper costs the same as the one function it calls: keep the first of the two.
        let same_work = top.last().is_some_and(|(last, _, _)| last.abs_diff(ir) as f64 <= 0.02 * per_event_total);
        if top.iter().any(|(_, _, n)| *n == name) || (inclusive && same_work) {
            continue;
        }
        top.push((ir, 100.0 * ir as f64 / per_event_total.max(1.0), name));
        if top.len() == n {
            break;
        }
    }
    Ok(top)
}

/// Drops generic parameters and hashes from a demangled name, for the table.
pub(super) fn shorten(name: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in name.chars() {
        match c {
            '<' if !out.is_empty() => depth += 1,
            '>' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    let out = out.trim_start_matches('<').to_string();
    match out.rfind("::h") {
        Some(i) if out[i + 3..].chars().all(|c| c.is_ascii_hexdigit()) => out[..i].to_string(),
        _ => out,
    }
}

pub(super) fn bench_cpu(report: &mut Report, plan: &Plan, base: &Path, symbols_exe: Option<&Path>) -> BenchResult<()> {
    if Command::new("valgrind").arg("--version").output().is_err() {
        return Err("valgrind is not installed (scripts/bench.sh installs it: apt-get install -y valgrind)".into());
    }
    let dir = fresh_dir(base, "cpu")?;
    let binary = match symbols_exe {
        Some(p) => p.to_path_buf(),
        None => exe()?,
    };
    let run = |events: u64, name: &str| -> BenchResult<PathBuf> {
        let out = dir.join(format!("callgrind.{name}.out"));
        let store = fresh_dir(&dir, &format!("store-{name}"))?;
        let mut child = Command::new("valgrind")
            .args(["--tool=callgrind", "--quiet"])
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(&binary)
            .args(["bench", "capture-child", "--events", &events.to_string(), "--dir"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("valgrind: {e}"))?;
        let status = wait_limited(&mut child, Duration::from_secs(600))?;
        if !status.success() {
            return Err(format!("callgrind run of {events} events failed ({status})"));
        }
        Ok(out)
    };
    let with = run(plan.cpu_events, "events")?;
    let without = run(0, "setup")?;
    let per_event = (callgrind_total(&with)?.saturating_sub(callgrind_total(&without)?)) as f64 / plan.cpu_events as f64;
    let inclusive = callgrind_top(&with, &without, plan.cpu_events, true, 5).unwrap_or_default();
    let exclusive = callgrind_top(&with, &without, plan.cpu_events, false, 5).unwrap_or_default();
    let named = symbols_exe.is_some();
    let keep = dir.with_file_name("callgrind.events.out");
    let _ = std::fs::copy(&with, &keep);
    remove(&dir);
    let list = |top: &[(u64, f64, String)]| top.iter().map(|(_, p, f)| format!("{f} {p:.0}%")).collect::<Vec<_>>().join("; ");
    report.rows.push(
        Row::new(
            format!("CPU per captured event (callgrind, 1 capturer, {} events)", plan.cpu_events),
            format!("{:.0} k instructions/event", per_event / 1e3),
        )
        .baseline(if named {
            format!("top inclusive: {}", list(&inclusive))
        } else {
            "functions unnamed: pass --symbols-exe (scripts/bench.sh does)".into()
        }),
    );
    if named {
        report.rows.push(Row::new("CPU: top self cost", list(&exclusive)));
    }
    report.json.insert(
        "cpu".into(),
        json!({
            "events": plan.cpu_events,
            "instructions_per_event": round(per_event, 0),
            "top_inclusive": inclusive.iter().map(|(ir, p, f)| json!({ "function": f, "instructions_per_event": ir, "percent": round(*p, 1) })).collect::<Vec<_>>(),
            "top_self": exclusive.iter().map(|(ir, p, f)| json!({ "function": f, "instructions_per_event": ir, "percent": round(*p, 1) })).collect::<Vec<_>>(),
            "profile": keep.display().to_string(),
        }),
    );
    Ok(())
}
