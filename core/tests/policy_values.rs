//! The shared table of value conversions (`tests/data/policy-value-conversions.json`), run on
//! the Rust layer: each native form, read from a property list and from JSON as `policy check`
//! reads files, gives the table's tree value, and the parser gives the table's verdict. The
//! Kotlin and Swift layers run the same table (see the table's `about`).

#![cfg(feature = "policy-files")]

use verbatim_core::policy::{self, Value, file};

const KEY: &str = "upload_interval_minutes";

fn table() -> Vec<serde_json::Value> {
    let text = include_str!("data/policy-value-conversions.json");
    let table: serde_json::Value = serde_json::from_str(text).expect("the table is JSON");
    table["cases"].as_array().expect("cases").clone()
}

/// The table's tree value: `{"integer": 15}`, `{"real": 15.0}`, `{"text": "x"}`,
/// `{"bool": true}`, or `"absent"` (None).
fn expected_tree(case: &serde_json::Value) -> Option<Value> {
    let tree = &case["tree"];
    if tree == "absent" {
        return None;
    }
    let (kind, value) = tree.as_object().and_then(|o| o.iter().next()).expect("one tagged value");
    Some(match kind.as_str() {
        "integer" => Value::Integer(value.as_i64().unwrap()),
        "real" => Value::Real(value.as_f64().unwrap()),
        "text" => Value::String(value.as_str().unwrap().to_string()),
        "bool" => Value::Bool(value.as_bool().unwrap()),
        other => panic!("unknown tree tag {other}"),
    })
}

/// A valid policy with `value` (or nothing) under KEY.
fn policy_with(value: Option<Value>) -> Value {
    let key = [9u8; 32];
    let mut tree = verbatim_core::synth::sample_policy("https://archive.acme.test", &key, "tok-table", &[]);
    if let (Value::Dict(map), Some(value)) = (&mut tree, value) {
        map.insert(KEY.to_string(), value);
    }
    tree
}

/// The verdict as the table writes it: the accepted number, or the problem kind.
fn verdict(tree: &Value) -> serde_json::Value {
    match policy::parse(tree) {
        Ok(parsed) => serde_json::json!(parsed.policy.upload_interval_minutes),
        Err(rejected) => {
            assert_eq!(rejected.problems.len(), 1, "{rejected}");
            assert_eq!(rejected.problems[0].key, KEY);
            serde_json::json!(rejected.problems[0].kind.as_str())
        }
    }
}

#[test]
fn every_case_converts_and_is_judged_as_the_table_says() {
    let cases = table();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let expected = expected_tree(&case);
        let mut forms = Vec::new();
        if let Some(plist) = case["plist"].as_str() {
            forms.push(("plist", format!("<plist version=\"1.0\"><dict><key>{KEY}</key>{plist}</dict></plist>")));
        }
        if let Some(json) = case["json"].as_str() {
            forms.push(("json", format!("{{\"{KEY}\": {json}}}")));
        }
        assert!(!forms.is_empty(), "{name}: no Rust-readable form");
        for (form, bytes) in forms {
            let tree = file::from_bytes(bytes.as_bytes()).unwrap_or_else(|e| panic!("{name} ({form}): {e}"));
            assert_eq!(tree.get(KEY).cloned(), expected, "{name} ({form}): tree value");
        }
        assert_eq!(verdict(&policy_with(expected)), case["outcome"], "{name}: verdict");
    }
}
