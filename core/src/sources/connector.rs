//! What the server-side connectors (WhatsApp Business coexistence webhooks, the WeCom chat
//! archive) share: one agent, hence one device stream with its own contiguous chain, per
//! business line (a WhatsApp business number, a WeCom user id), opened when the line first has
//! something to capture, under `STATE/<line>`.
//!
//! Every line runs under the one policy file the admin gives, with two entries made per line:
//! `device_id` (`<policy device_id>-<line>`, or `<source>-<line>` without one, so the archive
//! sees each employee's line as a device of its own) and, when one was given for the line, its
//! own `device_token` (the receiver issues tokens per device). Scope is the policy's
//! `business_lines`: a line not listed there opens nothing and stores nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::agent::{Agent, AgentOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::model::normalize_handle;
use crate::policy::{self, Policy, Value};
use crate::secret::Secret;

/// The agents of a connector's business lines.
pub struct Lines {
    source: &'static str,
    state: PathBuf,
    tree: Value,
    policy: Policy,
    /// Each line's device token, by normalised line.
    tokens: BTreeMap<String, Secret>,
    open: Mutex<HashMap<String, Agent>>,
    /// Held while a line's store is opened: a store has one writer, so two first deliveries
    /// for one line must not both open it.
    opening: tokio::sync::Mutex<()>,
}

impl Lines {
    /// Lines of `source` (`whatsapp`, `wecom`) under `state`, with the policy `tree` (checked
    /// here: every problem by key) and per-line device tokens (by line as written).
    pub fn new(source: &'static str, state: &Path, tree: Value, tokens: BTreeMap<String, Secret>) -> Result<Lines> {
        let policy = policy::parse(&tree).map_err(|rejected| Error::policy_rejected(rejected.problems))?.policy;
        if policy.business_lines.is_empty() {
            return Err(Error::new(
                ErrorKind::NotConfigured,
                format!("{source} connector: the policy names no business line (business_lines): nothing would be captured"),
            ));
        }
        std::fs::create_dir_all(state)
            .map_err(|e| Error::new(ErrorKind::Storage, format!("cannot create {}: {e}", state.display())))?;
        let tokens = tokens.into_iter().map(|(line, token)| (normalize_handle(&line), token)).collect();
        Ok(Lines {
            source,
            state: state.to_path_buf(),
            tree,
            policy,
            tokens,
            open: Mutex::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
        })
    }

    /// The policy every line runs under (without the per-line entries).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// `line` is one of the policy's business lines.
    pub fn is_business(&self, line: &str) -> bool {
        self.policy.business_lines.contains(&normalize_handle(line))
    }

    /// The device id `line` uploads as.
    pub fn device_id(&self, line: &str) -> String {
        let base = self.policy.device_id.clone().unwrap_or_else(|| self.source.to_string());
        format!("{base}-{}", normalize_handle(line))
    }

    /// Whether `line` has a device token of its own (it can upload).
    pub fn has_token(&self, line: &str) -> bool {
        self.tokens.contains_key(&normalize_handle(line))
    }

    /// The data directory of `line`: its normalised form when that is a plain file name, else
    /// `x` and its hex (a WeCom user id may hold anything).
    pub fn dir_of(&self, line: &str) -> PathBuf {
        let line = normalize_handle(line);
        let plain =
            !line.is_empty() && !line.starts_with('.') && line.chars().all(|c| c.is_ascii_alphanumeric() || "+-_.@".contains(c));
        self.state.join(if plain { line } else { format!("x{}", hex::encode(line.as_bytes())) })
    }

    /// The agent of `line`, opened (and its policy applied) on first use; `None` when the line
    /// is not business, so nothing of it is stored. Background-only: it may open a store.
    pub async fn agent(&self, line: &str) -> Result<Option<Agent>> {
        if !self.is_business(line) {
            return Ok(None);
        }
        let key = normalize_handle(line);
        let opened = |lines: &Lines| lines.open.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        if let Some(agent) = opened(self) {
            return Ok(Some(agent));
        }
        let _opening = self.opening.lock().await;
        if let Some(agent) = opened(self) {
            return Ok(Some(agent)); // opened by the delivery that held the lock before
        }
        let agent = Agent::open(&self.dir_of(line), AgentOptions::default())?;
        agent.apply_policy(&self.tree_for(line)).await?;
        self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(key, agent.clone());
        Ok(Some(agent))
    }

    /// Opens the agent of every business line that has a store already (after a restart: so
    /// what is queued keeps uploading even if the line is quiet).
    pub async fn open_existing(&self) -> Result<()> {
        let lines: Vec<String> = self.policy.business_lines.iter().cloned().collect();
        for line in lines {
            if self.dir_of(&line).exists() {
                self.agent(&line).await?;
            }
        }
        Ok(())
    }

    /// Every line opened so far, with its agent.
    pub fn opened(&self) -> Vec<(String, Agent)> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<(String, Agent)> = open.iter().map(|(l, a)| (l.clone(), a.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Closes every opened agent.
    pub async fn close(&self) {
        let all: Vec<Agent> = self.open.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, a)| a).collect();
        for agent in all {
            let _ = agent.close().await;
        }
    }

    /// The policy tree of `line`: the file's, with its device id and token.
    fn tree_for(&self, line: &str) -> Value {
        let mut tree = self.tree.clone();
        if let Value::Dict(map) = &mut tree {
            map.insert("device_id".into(), Value::String(self.device_id(line)));
            if let Some(token) = self.tokens.get(&normalize_handle(line)) {
                map.insert("device_token".into(), Value::String(token.expose().to_string()));
            }
        }
        tree
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::sample_policy;
    use std::sync::Arc;

    fn tree(lines: &[&str], device: Option<&str>) -> Value {
        let mut overrides = vec![("business_lines", Value::List(lines.iter().map(|l| Value::String(l.to_string())).collect()))];
        if let Some(d) = device {
            overrides.push(("device_id", Value::String(d.into())));
        }
        sample_policy("https://archive.acme.test", &[7u8; 32], "tok-file", &overrides)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_business_line_gets_its_own_store_and_device_and_others_open_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = BTreeMap::from([("+1 555 0100".to_string(), Secret::new("tok-line-1"))]);
        let lines = Lines::new("whatsapp", dir.path(), tree(&["+15550100", "+15550200"], Some("wa-gw")), tokens).unwrap();
        let a = lines.agent("+15550100").await.unwrap().unwrap();
        let b = lines.agent("+15550200").await.unwrap().unwrap();
        assert!(lines.agent("+15550999").await.unwrap().is_none(), "not a business line");
        assert!(!dir.path().join("+15550999").exists(), "nothing stored for it");
        assert_eq!(a.policy().unwrap().device_id.as_deref(), Some("wa-gw-+15550100"));
        assert_eq!(b.policy().unwrap().device_id.as_deref(), Some("wa-gw-+15550200"));
        assert_eq!(a.policy().unwrap().device_token.expose(), "tok-line-1");
        assert_eq!(b.policy().unwrap().device_token.expose(), "tok-file", "no token of its own: the file's");
        assert!(lines.has_token("+15550100") && !lines.has_token("+15550200"));
        assert_ne!(a.stream(), b.stream());
        assert_eq!(lines.opened().len(), 2);
        // Many first deliveries at once for a new line open its store once.
        let third =
            Arc::new(Lines::new("whatsapp", &dir.path().join("more"), tree(&["+15550300"], None), BTreeMap::new()).unwrap());
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let third = third.clone();
            tasks.spawn(async move { third.agent("+15550300").await.map(|a| a.unwrap().stream()) });
        }
        let streams: Vec<_> = tasks.join_all().await.into_iter().map(|r| r.unwrap()).collect();
        assert!(streams.windows(2).all(|w| w[0] == w[1]), "one store, one stream");
        third.close().await;
        // The same line again is the same agent.
        let again = lines.agent("+1 (555) 0100").await.unwrap().unwrap();
        assert_eq!(again.stream(), a.stream());
        lines.close().await;
    }

    #[test]
    fn odd_user_ids_get_a_plain_directory_name_and_no_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let lines = Lines::new("wecom", dir.path(), tree(&["zhang.san", "../etc"], None), BTreeMap::new()).unwrap();
        assert_eq!(lines.dir_of("zhang.san"), dir.path().join("zhang.san"));
        assert_eq!(lines.dir_of("../etc"), dir.path().join(format!("x{}", hex::encode("../etc"))));
        assert_eq!(lines.device_id("zhang.san"), "wecom-zhang.san");
        let none = Lines::new("wecom", dir.path(), tree(&[], None), BTreeMap::new());
        assert!(none.is_err(), "a policy without business lines captures nothing: refused");
    }
}
