//! The main job, as a user runs it: `verbatim demo --json` ends with a JSON report showing that
//! nothing was lost, duplicated or taken out of scope, through every injected fault.

use std::process::Command;

#[test]
fn the_demo_archives_everything_through_faults_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_verbatim"))
        .args(["demo", "--events", "300", "--large-attachment-mb", "3", "--json", "--dir"])
        .arg(&work)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let last = stdout.lines().last().expect("a report line");
    let report: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    for key in ["captured", "archived", "out_of_scope", "gaps", "duplicates", "chain_verified"] {
        assert!(report.get(key).is_some(), "report lacks {key}: {last}");
    }
    assert!(report["captured"].as_u64().unwrap() > 200);
    assert_eq!(report["archived"], report["captured"]);
    assert!(report["out_of_scope"].as_u64().unwrap() > 0, "the workload includes personal chats");
    assert_eq!(report["leaked_out_of_scope"], 0);
    assert_eq!(report["missing"], 0);
    assert_eq!(report["duplicates"], 0);
    assert_eq!(report["gaps"], 0);
    assert_eq!(report["chain_verified"], true);
    assert_eq!(report["alerts"], 0);
    assert_eq!(report["faults_met"], report["faults_injected"]);
    assert_eq!(report["device_restarts"], 1, "the first window ends mid-upload on any machine");
    assert_eq!(report["ok"], true);
    // Progress is shown while it works, on stderr.
    assert!(stderr.contains("[4/6] upload through injected faults"), "{stderr}");
    // The export is where the report says.
    assert!(std::path::Path::new(report["export_dir"].as_str().unwrap()).is_dir());
}
