//! `verbatim bench`: 7: size of the bindings' host library.

#[allow(unused_imports)]
use super::*;

pub(super) fn bench_size(report: &mut Report, lib: Option<&Path>, unstripped: Option<&Path>) -> BenchResult<()> {
    let lib = match lib {
        Some(p) => p.to_path_buf(),
        None => exe()?.with_file_name("libverbatim_ffi.so"),
    };
    let Ok(meta) = std::fs::metadata(&lib) else {
        report.rows.push(Row::new(
            "size: bindings host cdylib",
            format!("skipped: {} not built (cargo build -p verbatim-ffi --release)", lib.display()),
        ));
        return Ok(());
    };
    // The release profile strips; strip again to be sure of what is measured.
    let stripped = std::env::temp_dir().join(format!("verbatim-bench-ffi-{}.so", std::process::id()));
    let size = match Command::new("strip").arg("-o").arg(&stripped).arg(&lib).status() {
        Ok(s) if s.success() => std::fs::metadata(&stripped).map(|m| m.len()).unwrap_or(meta.len()),
        _ => meta.len(),
    };
    let _ = std::fs::remove_file(&stripped);
    let breakdown = unstripped.map(crate_breakdown).transpose()?.unwrap_or_default();
    let shown: Vec<String> =
        breakdown.iter().take(8).map(|(c, b, p)| format!("{c} {:.0} KiB ({p:.0}%)", *b as f64 / 1024.0)).collect();
    report.rows.push(
        Row::new("size: bindings host cdylib, stripped", format!("{:.2} MiB", size as f64 / 1048576.0))
            .baseline(if shown.is_empty() {
                "breakdown: pass --ffi-lib-unstripped (scripts/bench.sh does)".into()
            } else {
                format!("largest: {}", shown.join(", "))
            })
            .goal("< 6 MiB", size < 6 * 1024 * 1024),
    );
    report.json.insert(
        "size".into(),
        json!({
            "library": lib.display().to_string(),
            "stripped_bytes": size,
            "by_crate": breakdown.iter().map(|(c, b, p)| json!({ "crate": c, "bytes": b, "percent": round(*p, 1) })).collect::<Vec<_>>(),
        }),
    );
    Ok(())
}

/// Symbol bytes per crate (from `nm` on an unstripped build): (crate, bytes, percent of symbols).
/// Inlined code counts for the crate it was inlined into; C and assembly symbols are grouped by
/// their library's prefix.
pub(super) fn crate_breakdown(lib: &Path) -> BenchResult<Vec<(String, u64, f64)>> {
    let out = Command::new("nm")
        .args(["--print-size", "--size-sort", "--demangle", "--defined-only"])
        .arg(lib)
        .output()
        .map_err(|e| format!("nm: {e}"))?;
    if !out.status.success() {
        return Err(format!("nm {} failed", lib.display()));
    }
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.splitn(4, ' ');
        let (_, Some(size), Some(_), Some(name)) = (parts.next(), parts.next(), parts.next(), parts.next()) else { continue };
        let Ok(size) = u64::from_str_radix(size, 16) else { continue };
        *by.entry(crate_of(name)).or_default() += size;
    }
    let total: u64 = by.values().sum();
    let mut v: Vec<(String, u64, f64)> = by.into_iter().map(|(c, b)| (c, b, 100.0 * b as f64 / total.max(1) as f64)).collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    Ok(v)
}

pub(super) fn crate_of(symbol: &str) -> String {
    let s = symbol.trim_start_matches(['<', '&', '*', ' ']).trim_start_matches("mut ").trim_start_matches("dyn ");
    if !s.contains("::") {
        // Not Rust: ring's C and assembly (prefixed, or its bignum kernels), the UniFFI exports,
        // and otherwise the bundled SQLite, most of whose functions are static and unprefixed.
        let lower = s.to_ascii_lowercase();
        return if lower.starts_with("ring_core")
            || lower.starts_with("ecp_nistz")
            || lower.contains("mul4x")
            || lower.contains("mulx4x")
            || lower.starts_with("bn_")
            || lower.contains("gfp_")
        {
            "ring (C/asm)".into()
        } else if lower.starts_with("uniffi") || lower.starts_with("ffi_") {
            "verbatim_ffi (exports)".into()
        } else if lower.starts_with("rust_") || lower.starts_with("__rust") || lower.starts_with('_') {
            "std".into()
        } else {
            "sqlite3 (C)".into()
        };
    }
    let head = s.split("::").next().unwrap_or(s);
    let head: String = head.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    let generic = head.is_empty()
        || head.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        || [
            "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "str", "bool", "char", "f32",
            "f64",
        ]
        .contains(&head.as_str());
    match (generic, s.split_once(" as ")) {
        // `<T as some_crate::Trait>::f`: the trait's crate.
        (true, Some((_, rest))) => crate_of(rest),
        (true, None) => "core".into(),
        (false, _) => head,
    }
}
