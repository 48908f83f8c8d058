//! `verbatim telephony replay`: drives the Google Messages archival source
//! (`verbatim_core::sources::telephony`) without a phone. Each line of the snapshots file is
//! the whole Telephony provider at one wake-up, in the provider's column names and units; a
//! part's `_data` names a file, relative to the snapshots file, that stands for its bytes.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use verbatim_core::clock::{Clock, SystemClock};
use verbatim_core::sources::Mark;
use verbatim_core::sources::telephony::{ProviderView, ScanOptions, ScanReport, scan_with};

/// Where a replay remembers how many lines of a snapshots file it applied: each line is the
/// whole provider at one moment, so applying an earlier line again would read as the provider
/// going back in time (rows "deleted"). A run again resumes after the last line applied.
const PROGRESS: &str = "telephony-replay";

use crate::device_cmd::{open_with_policy, runtime};
use crate::output::outln;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The simulated device's data directory (created if missing).
    #[arg(long)]
    pub state: PathBuf,
    /// Policy file (XML property list or JSON). Its first business line is the phone's own
    /// number; `backfill_days` applies to the first view.
    #[arg(long)]
    pub policy: PathBuf,
    /// One JSON object per line: {"sms": [...], "mms": [... with "parts" and "addr"]}.
    #[arg(long)]
    pub snapshots: PathBuf,
}

fn fail(line: usize, what: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: telephony replay: line {line}: {what}; views before it are captured, nothing of it is");
    ExitCode::from(2)
}

pub fn replay(args: ReplayArgs) -> ExitCode {
    let (agent, policy) = match open_with_policy(&args.state, &args.policy) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let Some(line) = policy.business_lines.iter().next().cloned() else {
        eprintln!("error: telephony replay: the policy names no business line (the phone's own number)");
        return ExitCode::from(1);
    };
    let file = match std::fs::File::open(&args.snapshots) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: telephony replay: cannot read {}: {e}", args.snapshots.display());
            return ExitCode::from(2);
        }
    };
    let base = args.snapshots.parent().map(Path::to_path_buf).unwrap_or_default();
    let progress_key = std::fs::canonicalize(&args.snapshots).unwrap_or_else(|_| args.snapshots.clone()).display().to_string();
    let applied: usize = match agent.source_state(PROGRESS) {
        Ok(state) => state.get(&progress_key).and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()).unwrap_or(0),
        Err(e) => return fail(0, e),
    };
    let rt = runtime();
    let mut total = ScanReport::default();
    let mut views = 0usize;
    for (index, text) in std::io::BufReader::new(file).lines().enumerate() {
        let n = index + 1;
        if n <= applied {
            continue;
        }
        let text = match text {
            Ok(t) => t,
            Err(e) => return fail(n, format!("unreadable: {e}")),
        };
        if text.trim().is_empty() {
            continue;
        }
        let mut view: ProviderView = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => return fail(n, describe(&e)),
        };
        if let Err(what) = attach_part_files(&mut view, &base) {
            return fail(n, what);
        }
        let options =
            ScanOptions { line: line.clone(), backfill_days: policy.backfill_days, now_ms: SystemClock::default().now_ms() };
        // Each event is printed once its page is durable, so the output follows the capture.
        let mut printed = 0;
        let mut print_new = |report: &ScanReport| {
            for event in &report.events[printed..] {
                outln!("captured {} {}", event.kind, event.id);
            }
            printed = report.events.len();
        };
        match rt.block_on(scan_with(&agent, &view, &options, &mut print_new)) {
            Ok(report) => {
                print_new(&report);
                total.events.extend(report.events);
                total.baseline += report.baseline;
                total.out_of_scope += report.out_of_scope;
                views += 1;
            }
            Err(e) => return fail(n, e),
        }
        // A kill before this line is saved applies the view again: the same view is a no-op.
        if let Err(e) = rt.block_on(agent.save_marks(vec![Mark::set(PROGRESS, progress_key.clone(), n.to_string())])) {
            return fail(n, e);
        }
    }
    let _ = rt.block_on(agent.close());
    if applied > 0 {
        eprintln!("telephony replay: the first {applied} views were applied by an earlier run");
    }
    eprintln!(
        "telephony replay: {views} views; {} messages, {} attachments, {} edits, {} reactions, {} unsends captured; {} rows of history; {} out of scope",
        total.count("message"),
        total.count("attachment"),
        total.count("edit"),
        total.count("reaction"),
        total.count("unsend"),
        total.baseline,
        total.out_of_scope
    );
    ExitCode::SUCCESS
}

/// Points each media part at the file its `_data` names (relative to the snapshots file),
/// refusing the view if one cannot be read, before anything of it is captured.
fn attach_part_files(view: &mut ProviderView, base: &Path) -> Result<(), String> {
    for row in &mut view.mms {
        for part in &mut row.parts {
            let Some(data) = &part.data else { continue };
            let path = base.join(data);
            if let Err(e) = std::fs::File::open(&path) {
                return Err(format!("mms _id {} part _id {}: _data {:?} cannot be read: {e}", row.id, part.id, data));
            }
            part.file = Some(path);
        }
    }
    Ok(())
}

/// A JSON error, by column and kind: serde's own text can quote the offending value, which
/// may be a message's text.
fn describe(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if let Some(field) = text.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
        return format!("missing field `{field}` (column {})", e.column());
    }
    if let Some(expected) = text.split(", expected ").nth(1).map(|r| r.split(" at line").next().unwrap_or(r)) {
        return format!("a value of the wrong type at column {} (expected {expected})", e.column());
    }
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!("not valid JSON (column {})", e.column())
        }
        _ => format!("not a provider view (column {})", e.column()),
    }
}
