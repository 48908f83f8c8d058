//! The policy as the device keeps it between runs: the pushed tree without its secrets.
//!
//! The device token is never written to the store. iOS (managed app configuration) and Android
//! (application restrictions) keep the MDM's configuration readable by the app at any time, and
//! the platform layer applies it at every start; until it does, the restored policy captures
//! (sealing needs only the archive's public key) but cannot upload, and says why.

use super::parse::{Secrets, parse_with};
use super::{Policy, Value, schema};

/// The tree to persist: only known keys that are not secret. Unknown keys go too, since a
/// misspelt key may hold a credential; they never affect the parsed policy.
pub fn persistable(tree: &Value) -> Value {
    match tree {
        Value::Dict(map) => Value::Dict(
            map.iter()
                .filter(|(k, _)| schema::spec(k).is_some_and(|spec| !spec.secret))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        // Not a dictionary: `parse` refuses it before anything is persisted.
        _ => Value::Dict(Default::default()),
    }
}

/// The tree to persist, as JSON.
pub fn persistable_json(tree: &Value) -> String {
    // A tree of strings, integers, booleans, lists and dictionaries always serialises.
    serde_json::to_string(&persistable(tree)).unwrap_or_else(|_| "{}".to_string())
}

/// Parses a persisted tree back into the policy in force, with an empty device token (see
/// [`Policy::device_token`]), and the tree to persist again: any secret an older version kept
/// is ignored and goes at the first start of this one. `None` when the JSON is unreadable or
/// no longer validates (e.g. after an upgrade tightened a rule).
pub fn parse_stored(tree_json: &str) -> Option<(Policy, String)> {
    let tree: Value = serde_json::from_str(tree_json).ok()?;
    let kept = persistable(&tree);
    let policy = parse_with(&kept, Secrets::Absent).ok()?.policy;
    let json = serde_json::to_string(&kept).ok()?;
    Some((policy, json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::sample_policy;

    #[test]
    fn the_persisted_tree_holds_no_secret_and_parses_back_without_the_token() {
        let tree = sample_policy("https://archive.example/", &[7u8; 32], "tok-persist-never-0123456789", &[]);
        let json = persistable_json(&tree);
        assert!(!json.contains("tok-persist-never"), "{json}");
        assert!(!json.contains("device_token"), "{json}");
        let full = super::super::parse(&tree).unwrap().policy;
        let (restored, kept) = parse_stored(&json).expect("the kept tree parses");
        assert_eq!(kept, json, "persisting again changes nothing");
        assert!(restored.device_token.is_empty());
        assert_eq!(Policy { device_token: full.device_token.clone(), ..restored }, full);
    }

    #[test]
    fn unknown_keys_are_not_kept_and_a_token_kept_by_an_older_version_is_ignored() {
        let mut tree = sample_policy("https://archive.example/", &[7u8; 32], "tok-old-version-0123456789", &[]);
        if let Value::Dict(map) = &mut tree {
            map.insert("archive_passwrod".into(), Value::from("hunter2-misspelt"));
        }
        assert!(!persistable_json(&tree).contains("hunter2"));
        // An older store kept the whole tree, token included.
        let old_json = serde_json::to_string(&tree).unwrap();
        let (restored, kept) = parse_stored(&old_json).expect("parses");
        assert!(restored.device_token.is_empty());
        assert!(!kept.contains("tok-old-version") && !kept.contains("hunter2"), "{kept}");
        assert!(parse_stored("{not json").is_none());
        assert!(parse_stored("{}").is_none(), "required non-secret keys are still required");
    }
}
