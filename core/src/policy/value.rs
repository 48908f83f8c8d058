//! [`Value`]: the neutral key/value tree a managed configuration arrives as (an iOS managed
//! app configuration dictionary, an Android restrictions `Bundle`, a JSON or plist file).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::schema;

/// A managed-configuration value. Serialises untagged, so a tree round-trips through JSON
/// losslessly (a JSON string is a `String`, a whole number an `Integer`, a number with a
/// fraction part or an exponent a `Real`, and so on).
///
/// `Real` exists because consoles really send it (a plist `<real>`, a JSON `15.0`, a Kotlin
/// `Double`): every platform layer passes it through unchanged and the parser alone decides
/// (an integer key takes a real that is a whole number, see [`super::parse`]), so the rule is
/// the same on iOS, Android and in the CLI.
///
/// `Debug` redacts the value of every dictionary entry whose key is secret per the schema
/// (`device_token`) or looks like a credential (contains `token`, `secret` or `password`), at
/// any depth, so a tree can be logged while debugging. A bare `Value::String` holding a token
/// cannot know it is one: never debug-print values taken out of a tree.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    String(String),
    Integer(i64),
    Real(f64),
    Bool(bool),
    List(Vec<Value>),
    Dict(BTreeMap<String, Value>),
}

impl Value {
    /// Builds a dictionary from `(key, value)` pairs; a later duplicate key replaces an earlier one.
    pub fn dict<K, I>(entries: I) -> Value
    where
        K: Into<String>,
        I: IntoIterator<Item = (K, Value)>,
    {
        Value::Dict(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// The type's name as used in error messages: `text`, `whole number`, `number with a
    /// fraction`, `true/false`, `list`, `dictionary`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "text",
            Value::Integer(_) => "whole number",
            Value::Real(_) => "number with a fraction",
            Value::Bool(_) => "true/false",
            Value::List(_) => "list",
            Value::Dict(_) => "dictionary",
        }
    }

    /// The entry `key` of a dictionary; `None` for a missing key or a non-dictionary.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(map) => map.get(key),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Integer(n)
    }
}

impl From<f64> for Value {
    fn from(r: f64) -> Self {
        Value::Real(r)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::List(items)
    }
}

/// Whether a dictionary key's value must not appear in `Debug` output: only the values of
/// known, non-secret schema keys are shown. An unknown key may be a misspelt secret
/// (`device_tokn`, `Device_Token`), so its value is hidden too.
fn hide_value_of(key: &str) -> bool {
    schema::spec(key).is_none_or(|spec| spec.secret)
}

/// Stands in for a hidden value in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => fmt::Debug::fmt(s, f),
            Value::Integer(n) => fmt::Debug::fmt(n, f),
            Value::Real(r) => fmt::Debug::fmt(r, f),
            Value::Bool(b) => fmt::Debug::fmt(b, f),
            Value::List(items) => f.debug_list().entries(items).finish(),
            Value::Dict(map) => {
                let mut out = f.debug_map();
                for (key, value) in map {
                    if hide_value_of(key) {
                        out.entry(key, &Redacted);
                    } else {
                        out.entry(key, value);
                    }
                }
                out.finish()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_is_lossless() {
        let v = Value::dict([
            ("s", Value::from("x")),
            ("n", Value::from(-7)),
            ("r", Value::from(15.0)),
            ("b", Value::from(true)),
            ("l", Value::List(vec!["a".into(), 1.into()])),
            ("d", Value::dict([("inner", Value::from(false))])),
        ]);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"{"b":true,"d":{"inner":false},"l":["a",1],"n":-7,"r":15.0,"s":"x"}"#);
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn debug_redacts_secret_keys_at_any_depth() {
        let v = Value::dict([
            ("device_token", Value::from("tok-1")),
            ("tenant_id", Value::from("acme")),
            ("nested", Value::dict([("device_token", Value::from("tok-2"))])),
            ("my_password", Value::List(vec!["tok-3".into()])),
        ]);
        let shown = format!("{v:?}");
        assert!(!shown.contains("tok-"), "{shown}");
        assert!(shown.contains("\"device_token\": [redacted]"), "{shown}");
        assert!(shown.contains("\"acme\""), "{shown}");
    }

    #[test]
    fn type_names() {
        assert_eq!(Value::from("a").type_name(), "text");
        assert_eq!(Value::from(1).type_name(), "whole number");
        assert_eq!(Value::from(1.5).type_name(), "number with a fraction");
        assert_eq!(Value::from(true).type_name(), "true/false");
        assert_eq!(Value::List(vec![]).type_name(), "list");
        assert_eq!(Value::dict::<String, _>([]).type_name(), "dictionary");
    }
}
