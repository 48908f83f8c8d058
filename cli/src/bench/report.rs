//! `verbatim bench`: the table.

#[allow(unused_imports)]
use super::*;

pub(super) struct Row {
    pub(super) bench: String,
    pub(super) figure: String,
    pub(super) baseline: String,
    pub(super) goal: String,
    pub(super) met: Option<bool>,
}

impl Row {
    pub(super) fn new(bench: impl Into<String>, figure: impl Into<String>) -> Row {
        Row { bench: bench.into(), figure: figure.into(), baseline: String::new(), goal: String::new(), met: None }
    }
    pub(super) fn baseline(mut self, b: impl Into<String>) -> Row {
        self.baseline = b.into();
        self
    }
    pub(super) fn goal(mut self, g: impl Into<String>, met: bool) -> Row {
        self.goal = g.into();
        self.met = Some(met);
        self
    }
}

pub(super) struct Report {
    pub(super) rows: Vec<Row>,
    pub(super) json: serde_json::Map<String, Json>,
    pub(super) failures: Vec<String>,
}

pub(super) fn suite(args: BenchArgs) -> ExitCode {
    let plan = Plan::new(&args);
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o.trim() == name);
    for o in &args.only {
        let known =
            ["capture", "upload", "objectstore", "memory", "cold", "cpu", "size", "telephony", "imessage", "whatsapp", "erasure"];
        if !known.contains(&o.trim()) {
            eprintln!(
                "error: unknown benchmark {o:?} (capture, upload, objectstore, memory, cold, cpu, size, telephony, imessage, whatsapp, erasure)"
            );
            return ExitCode::from(2);
        }
    }
    let (base, temporary) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => {
            let mut b = [0u8; 4];
            let _ = getrandom::fill(&mut b);
            (std::env::temp_dir().join(format!("verbatim-bench-{:08x}", u32::from_le_bytes(b))), true)
        }
    };
    if let Err(e) = std::fs::create_dir_all(&base) {
        eprintln!("error: {}: {e}", base.display());
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let mut report = Report { rows: Vec::new(), json: serde_json::Map::new(), failures: Vec::new() };
    report.json.insert("machine".into(), machine());
    report.json.insert("quick".into(), json!(plan.quick));
    eprintln!("verbatim bench{} in {}", if plan.quick { " --quick" } else { "" }, base.display());

    type Bench<'a> = (&'a str, Box<dyn Fn(&mut Report) -> BenchResult<()> + 'a>);
    let benches: Vec<Bench> = vec![
        ("capture", Box::new(|r: &mut Report| bench_capture(r, &plan, &base))),
        ("upload", Box::new(|r: &mut Report| bench_upload(r, &plan, &base, args.batch_kb))),
        ("objectstore", Box::new(|r: &mut Report| bench_object_store(r, &plan, &base, args.batch_kb))),
        ("memory", Box::new(|r: &mut Report| bench_memory(r, &plan, &base, args.batch_kb))),
        ("cold", Box::new(|r: &mut Report| bench_cold(r, &plan, &base))),
        ("cpu", Box::new(|r: &mut Report| bench_cpu(r, &plan, &base, args.symbols_exe.as_deref()))),
        ("size", Box::new(|r: &mut Report| bench_size(r, args.ffi_lib.as_deref(), args.ffi_lib_unstripped.as_deref()))),
        ("telephony", Box::new(|r: &mut Report| bench_telephony(r, &plan, &base))),
        ("imessage", Box::new(|r: &mut Report| bench_imessage(r, &plan, &base))),
        ("whatsapp", Box::new(|r: &mut Report| bench_whatsapp(r, &plan, &base))),
        ("erasure", Box::new(|r: &mut Report| bench_erasure(r, &plan, &base))),
    ];
    for (name, bench) in benches {
        if !wanted(name) {
            continue;
        }
        let t = Instant::now();
        eprintln!("[{name}] ...");
        let done = Arc::new(AtomicBool::new(false));
        watchdog(name.to_string(), if plan.quick { 300 } else { 7200 }, done.clone());
        if let Err(e) = bench(&mut report) {
            eprintln!("[{name}] FAILED: {e}");
            report.rows.push(Row::new(name, format!("FAILED: {e}")));
            report.failures.push(format!("{name}: {e}"));
        }
        done.store(true, Ordering::SeqCst);
        eprintln!("[{name}] {:.1} s", t.elapsed().as_secs_f64());
    }
    let total = started.elapsed().as_secs_f64();
    report.json.insert("total_secs".into(), json!(round(total, 1)));
    report.json.insert("failures".into(), json!(report.failures));
    print_table(&report, &plan, total);
    if args.json {
        outln!("{}", Json::Object(report.json.clone()));
    }
    if temporary {
        remove(&base);
    }
    if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// A benchmark that hangs (a deadlock in the code measured) must fail the run, not stall CI.
pub(super) fn watchdog(name: String, secs: u64, done: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if done.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("[{name}] FAILED: did not finish within {secs} s (hung?)");
        std::process::exit(1);
    });
}

pub(super) fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

pub(super) fn machine() -> Json {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).unwrap_or("?").trim().to_string();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let load =
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    json!({ "cores": cores, "cpu": model, "load_average_at_start": load, "os": std::env::consts::OS, "arch": std::env::consts::ARCH })
}

pub(super) fn print_table(report: &Report, plan: &Plan, total: f64) {
    let m = report.json.get("machine").cloned().unwrap_or(Json::Null);
    outln!();
    outln!(
        "Verbatim benchmarks{} ({} cores, {}, load {} at start; {:.0} s)",
        if plan.quick { " --quick (tiny sizes: checks that everything runs, figures are not meaningful)" } else { "" },
        m["cores"],
        m["cpu"].as_str().unwrap_or("?"),
        m["load_average_at_start"].as_str().unwrap_or("?"),
        total
    );
    let header = ["benchmark", "figure", "baseline (same run) and ratio", "goal", "met"];
    let cells: Vec<[String; 5]> = report
        .rows
        .iter()
        .map(|r| {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            };
            [r.bench.clone(), r.figure.clone(), r.baseline.clone(), r.goal.clone(), met.to_string()]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for c in &cells {
        for (i, v) in c.iter().enumerate() {
            widths[i] = widths[i].max(v.chars().count());
        }
    }
    let line = |c: &[String]| {
        let mut s = String::from("|");
        for (i, v) in c.iter().enumerate() {
            s.push(' ');
            s.push_str(v);
            s.push_str(&" ".repeat(widths[i] - v.chars().count()));
            s.push_str(" |");
        }
        s
    };
    outln!("{}", line(&header.map(String::from)));
    outln!("|{}", widths.iter().map(|w| format!("{}|", "-".repeat(w + 2))).collect::<String>());
    for c in &cells {
        outln!("{}", line(c));
    }
    if !report.failures.is_empty() {
        outln!("{} benchmark(s) failed to run: {}", report.failures.len(), report.failures.join("; "));
    }
}
