//! The MDM artifacts: the committed copies match what the schema generates, the XML files are
//! well formed and describe every key with the right type, and the console samples are
//! property lists the agent accepts once the console has substituted its variables.

use std::path::{Path, PathBuf};
use std::process::Command;

use verbatim_core::Channel;
use verbatim_core::policy::artifacts::{self, Console, PLACEHOLDER_BUNDLE_ID};
use verbatim_core::policy::schema::{KEYS, KeyKind, KeySpec};
use verbatim_core::policy::{self, ProblemKind, Value, file};

const REGENERATE: &str = "cargo run -p verbatim-cli -- policy export-artifacts --out .";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("cli/ has a parent").to_path_buf()
}

fn generated(path: &str) -> String {
    artifacts::artifacts(PLACEHOLDER_BUNDLE_ID)
        .into_iter()
        .find(|a| a.path == path)
        .unwrap_or_else(|| panic!("no artifact {path}"))
        .contents
}

// ---------------------------------------------------------------------------------------------
// Committed copies and the command
// ---------------------------------------------------------------------------------------------

#[test]
fn committed_artifacts_match_the_schema() {
    let root = repo_root();
    let mut stale = Vec::new();
    for artifact in artifacts::artifacts(PLACEHOLDER_BUNDLE_ID) {
        match std::fs::read_to_string(root.join(artifact.path)) {
            Ok(committed) if committed == artifact.contents => {}
            Ok(_) => stale.push(format!("{} differs from what the schema generates", artifact.path)),
            Err(e) => stale.push(format!("{} cannot be read ({e})", artifact.path)),
        }
    }
    assert!(stale.is_empty(), "{}\nregenerate from the repository root with: {REGENERATE}", stale.join("\n"));
}

fn verbatim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_verbatim")).args(args).output().expect("run verbatim")
}

#[test]
fn export_artifacts_writes_every_file_then_reports_them_unchanged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().to_str().expect("utf-8 path");
    let first = verbatim(&["policy", "export-artifacts", "--out", out_dir]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let stdout = String::from_utf8_lossy(&first.stdout);
    for artifact in artifacts::artifacts(PLACEHOLDER_BUNDLE_ID) {
        let written = std::fs::read_to_string(dir.path().join(artifact.path)).expect("file written");
        assert_eq!(written, artifact.contents, "{}", artifact.path);
        assert!(stdout.contains(&format!("created {}", dir.path().join(artifact.path).display())), "{stdout}");
    }
    let second = verbatim(&["policy", "export-artifacts", "--out", out_dir]);
    assert!(second.status.success());
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert_eq!(stdout.lines().count(), artifacts::artifacts(PLACEHOLDER_BUNDLE_ID).len(), "{stdout}");
    assert!(stdout.lines().all(|l| l.starts_with("unchanged ")), "{stdout}");
}

#[test]
fn export_artifacts_takes_the_app_bundle_id_and_refuses_an_invalid_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().to_str().expect("utf-8 path");
    let ok = verbatim(&["policy", "export-artifacts", "--out", out_dir, "--bundle-id", "com.acme.Messenger"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let specfile = std::fs::read_to_string(dir.path().join(artifacts::SPECFILE_PATH)).expect("specfile");
    assert!(specfile.contains("<bundleId>com.acme.Messenger</bundleId>"));

    let other = tempfile::tempdir().expect("temp dir");
    let bad = verbatim(&[
        "policy",
        "export-artifacts",
        "--out",
        other.path().to_str().expect("utf-8 path"),
        "--bundle-id",
        "com.acme-capital.app",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bundle identifier"));
    assert!(std::fs::read_dir(other.path()).expect("dir").next().is_none(), "nothing written");
}

// ---------------------------------------------------------------------------------------------
// AppConfig specfile
// ---------------------------------------------------------------------------------------------

fn specfile() -> Element {
    parse_xml(&generated(artifacts::SPECFILE_PATH)).unwrap_or_else(|e| panic!("specfile is not well-formed XML: {e}"))
}

/// The value of `<language value="en-US">` under `el`.
fn english(el: &Element) -> String {
    let language = el.child("language").unwrap_or_else(|| panic!("<{}> has no <language>", el.name));
    assert_eq!(language.attr("value"), Some("en-US"));
    language.text()
}

#[test]
fn specfile_is_well_formed_and_lists_every_key_with_its_type() {
    let root = specfile();
    assert_eq!(root.name, "managedAppConfiguration");
    let order: Vec<&str> = root.elements().map(|e| e.name.as_str()).collect();
    assert_eq!(order, ["version", "bundleId", "dict", "presentation"]);
    let version: u32 = root.child("version").expect("version").text().parse().expect("integer version");
    assert!((1..=99_999).contains(&version));
    assert_eq!(version, artifacts::SPECFILE_VERSION);
    assert!(artifacts::is_valid_bundle_id(&root.child("bundleId").expect("bundleId").text()));

    let dict = root.child("dict").expect("dict");
    let entries: Vec<&Element> = dict.elements().collect();
    assert_eq!(entries.len(), KEYS.len(), "one dict entry per key");
    for (entry, spec) in entries.iter().zip(KEYS) {
        assert_eq!(entry.attr("keyName"), Some(spec.name), "schema order");
        check_specfile_entry(entry, spec);
    }
}

fn check_specfile_entry(entry: &Element, spec: &KeySpec) {
    let name = spec.name;
    let expected = match spec.kind {
        KeyKind::Integer { .. } => "integer",
        KeyKind::Bool => "boolean",
        KeyKind::StringList | KeyKind::ChannelList | KeyKind::Pins => "stringArray",
        _ => "string",
    };
    assert_eq!(entry.name, expected, "{name}");
    // The schema's sequence: defaultValue?, constraint?.
    let children: Vec<&str> = entry.elements().map(|e| e.name.as_str()).collect();
    assert!(children == ["constraint"] || children == ["defaultValue", "constraint"], "{name}: {children:?}");

    let constraint = entry.child("constraint").expect("constraint");
    let nullable = if spec.required { "false" } else { "true" };
    assert_eq!(constraint.attr("nullable"), Some(nullable), "{name}");
    if let KeyKind::Integer { min, max } = spec.kind {
        assert_eq!(constraint.attr("min"), Some(min.to_string().as_str()), "{name}");
        assert_eq!(constraint.attr("max"), Some(max.to_string().as_str()), "{name}");
    }
    let allowed: Option<Vec<String>> = match spec.kind {
        KeyKind::Enum(words) => Some(words.iter().map(|w| w.to_string()).collect()),
        KeyKind::ChannelList => Some(Channel::ALL.iter().map(|c| c.as_str().to_string()).collect()),
        _ => None,
    };
    let listed: Option<Vec<String>> =
        constraint.child("values").map(|v| v.children_named("value").iter().map(|e| e.text()).collect());
    assert_eq!(listed, allowed, "{name}: allowed values");

    match entry.child("defaultValue") {
        Some(default) if name == "device_id" => {
            let variable = default.child("deviceVariable").expect("device variable");
            assert_eq!(variable.attr("value"), Some("serialNumber"));
        }
        Some(default) => {
            let values: Vec<String> = default.children_named("value").iter().map(|e| e.text()).collect();
            let schema = spec.default.unwrap_or_else(|| panic!("{name}: default in specfile, not in schema"));
            let schema: Vec<String> = schema.split(',').map(|s| s.trim().to_string()).collect();
            assert_eq!(values, schema, "{name}");
            // Every default is valid for the agent.
            let tree = Value::dict([(name, Value::from(values.join(",").as_str()))]);
            if let Err(rejected) = policy::parse(&tree) {
                assert!(rejected.problems.iter().all(|p| p.key != name), "{name}: {rejected}");
            }
        }
        None => assert!(spec.default.is_none(), "{name}: schema default missing from the specfile"),
    }
}

#[test]
fn specfile_presentation_has_one_labelled_field_per_key() {
    let root = specfile();
    let presentation = root.child("presentation").expect("presentation");
    assert_eq!(presentation.attr("defaultLocale"), Some("en-US"));
    let mut fields = Vec::new();
    for group in presentation.elements() {
        assert_eq!(group.name, "fieldGroup");
        assert!(!english(group.child("name").expect("group name")).is_empty());
        let group_children: Vec<&Element> = group.elements().collect();
        assert_eq!(group_children[0].name, "name", "name comes first");
        fields.extend(group_children[1..].iter().copied());
    }
    let mut names: Vec<&str> = fields.iter().map(|f| f.attr("keyName").expect("keyName")).collect();
    names.sort_unstable();
    let mut all: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    all.sort_unstable();
    assert_eq!(names, all, "every key has exactly one field");

    for field in fields {
        assert_eq!(field.name, "field");
        let spec = KEYS.iter().find(|k| Some(k.name) == field.attr("keyName")).expect("known key");
        let expected = match spec.kind {
            KeyKind::Bool => "checkbox",
            KeyKind::Enum(_) => "select",
            KeyKind::ChannelList => "multiselect",
            KeyKind::StringList | KeyKind::Pins => "list",
            _ => "input",
        };
        assert_eq!(field.attr("type"), Some(expected), "{}", spec.name);
        let order: Vec<&str> = field.elements().map(|e| e.name.as_str()).collect();
        assert!(order == ["label", "description"] || order == ["label", "description", "options"], "{order:?}");
        assert!(!english(field.child("label").expect("label")).is_empty());
        let description = english(field.child("description").expect("description"));
        assert!(description.starts_with(spec.description), "{}", spec.name);
        if spec.secret {
            assert!(description.contains("credential"), "{}", spec.name);
        }
        if let Some(options) = field.child("options") {
            let values: Vec<&str> = options.elements().map(|o| o.attr("value").expect("option value")).collect();
            assert!(!values.is_empty());
            for option in options.elements() {
                assert!(!english(option).is_empty());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Android
// ---------------------------------------------------------------------------------------------

/// `(name, value)` of each `<string>`, and `(name, items)` of each `<string-array>`.
type Strings = Vec<(String, String)>;
type Arrays = Vec<(String, Vec<String>)>;

/// The string and array resources of the strings file, by name.
fn android_resources() -> (Strings, Arrays) {
    let resources = parse_xml(&generated(artifacts::ANDROID_STRINGS_PATH))
        .unwrap_or_else(|e| panic!("strings file is not well-formed XML: {e}"));
    assert_eq!(resources.name, "resources");
    let strings =
        resources.children_named("string").iter().map(|s| (s.attr("name").expect("name").to_string(), s.text())).collect();
    let arrays = resources
        .children_named("string-array")
        .iter()
        .map(|a| (a.attr("name").expect("name").to_string(), a.children_named("item").iter().map(|i| i.text()).collect()))
        .collect();
    (strings, arrays)
}

#[test]
fn android_restrictions_list_every_key_with_resolvable_resources() {
    let root = parse_xml(&generated(artifacts::ANDROID_RESTRICTIONS_PATH))
        .unwrap_or_else(|e| panic!("app_restrictions.xml is not well-formed XML: {e}"));
    assert_eq!(root.name, "restrictions");
    assert_eq!(root.attr("xmlns:android"), Some("http://schemas.android.com/apk/res/android"));
    let (strings, arrays) = android_resources();
    let string = |reference: &str| {
        let name = reference.strip_prefix("@string/").unwrap_or_else(|| panic!("{reference} is not a string ref"));
        strings.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no string {name}"))
    };
    let array = |reference: &str| {
        let name = reference.strip_prefix("@array/").unwrap_or_else(|| panic!("{reference} is not an array ref"));
        arrays.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no array {name}"))
    };

    let restrictions: Vec<&Element> = root.elements().collect();
    assert_eq!(restrictions.len(), KEYS.len(), "one restriction per key");
    for (restriction, spec) in restrictions.iter().zip(KEYS) {
        let name = spec.name;
        assert_eq!(restriction.name, "restriction");
        assert_eq!(restriction.attr("android:key"), Some(name), "schema order");
        let expected = match spec.kind {
            KeyKind::Integer { .. } => "integer",
            KeyKind::Bool => "bool",
            KeyKind::Enum(_) => "choice",
            KeyKind::ChannelList => "multi-select",
            _ => "string",
        };
        assert_eq!(restriction.attr("android:restrictionType"), Some(expected), "{name}");
        assert!(!string(restriction.attr("android:title").expect("title")).is_empty(), "{name}");
        let description = string(restriction.attr("android:description").expect("description"));
        if matches!(spec.kind, KeyKind::StringList | KeyKind::Pins) {
            assert!(description.contains("commas"), "{name}: list keys must say they are comma-separated");
        }

        let default = restriction.attr("android:defaultValue");
        match spec.kind {
            KeyKind::Enum(words) => {
                let values = array(restriction.attr("android:entryValues").expect("entryValues"));
                let entries = array(restriction.attr("android:entries").expect("entries"));
                assert_eq!(values, words.iter().map(|w| w.to_string()).collect::<Vec<_>>(), "{name}");
                assert_eq!(entries.len(), values.len(), "{name}");
                assert_eq!(default, spec.default, "{name}");
            }
            KeyKind::ChannelList => {
                let values = array(restriction.attr("android:entryValues").expect("entryValues"));
                let entries = array(restriction.attr("android:entries").expect("entries"));
                let channels: Vec<String> = Channel::ALL.iter().map(|c| c.as_str().to_string()).collect();
                assert_eq!(values, channels, "{name}");
                assert_eq!(entries.len(), values.len(), "{name}");
                let default = array(default.expect("multi-select default is an array"));
                let schema: Vec<String> = spec.default.expect("default").split(',').map(str::to_string).collect();
                assert_eq!(default, schema, "{name}");
            }
            _ => {
                assert!(restriction.attr("android:entries").is_none(), "{name}");
                assert_eq!(default, spec.default, "{name}");
            }
        }
    }
}

#[test]
fn android_strings_are_valid_android_resource_text() {
    let text = generated(artifacts::ANDROID_STRINGS_PATH);
    let (strings, arrays) = android_resources();
    let all = strings.iter().map(|(_, v)| v.clone()).chain(arrays.into_iter().flat_map(|(_, items)| items));
    for value in all {
        // aapt2 rejects an apostrophe or double quote that is not backslash-escaped, and reads a
        // leading @ or ? as a reference.
        let mut previous = None;
        for c in value.chars() {
            if matches!(c, '\'' | '"') {
                assert_eq!(previous, Some('\\'), "unescaped {c} in {value:?}");
            }
            previous = if c == '\\' && previous == Some('\\') { None } else { Some(c) };
        }
        assert!(!value.starts_with('@') && !value.starts_with('?'), "{value:?}");
    }
    assert!(text.contains("firm\\'s"), "the schema's apostrophes are escaped");
}

// ---------------------------------------------------------------------------------------------
// Console samples
// ---------------------------------------------------------------------------------------------

fn sample_path(console: Console) -> &'static str {
    match console {
        Console::Intune => artifacts::INTUNE_PLIST_PATH,
        Console::Jamf => artifacts::JAMF_PLIST_PATH,
    }
}

/// The sample as an admin edits it: every example value of a required key (marked REPLACE)
/// replaced with the firm's own. Variables are left for the console.
fn edit_examples(sample: &str) -> String {
    let mut text = sample.to_string();
    for spec in KEYS.iter().filter(|k| k.required) {
        for (i, example) in spec.example.split(',').map(str::trim).enumerate() {
            let own = match spec.name {
                "archive_url" => "https://archive.acme-capital.test".to_string(),
                "archive_public_key" => "HZZbBeJO45qQYQIpVz+fRAL7YzkKt7LJwK6Sfj1r54Q=".to_string(),
                "business_lines" => format!("+44 20 7946 000{i}"),
                other => format!("{other}-of-acme-capital"),
            };
            text = text.replace(&format!("<string>{example}</string>"), &format!("<string>{own}</string>"));
        }
    }
    text
}

/// What a console might put in place of each variable, in a sample the admin edited.
fn substitute(console: Console, sample: &str) -> String {
    let mut text = edit_examples(sample);
    for variable in artifacts::mdm_variables(console) {
        let value = match variable.key {
            "device_id" if console == Console::Intune => "b9841cd9-9843-405f-be28-b2265c59ef97",
            "device_id" => "F4KN99ZUG5V2",
            "device_token" => "vbt1.00112233445566778899aabbccddeeff.c2FtcGxlLXRva2VuLXNhbXBsZS10b2tlbi1zYW1wbGU",
            other => panic!("no sample value for {other}"),
        };
        assert!(text.contains(&format!("<string>{}</string>", variable.variable)), "{}", variable.variable);
        text = text.replace(&format!("<string>{}</string>", variable.variable), &format!("<string>{value}</string>"));
    }
    text
}

#[test]
fn console_samples_are_plists_the_agent_accepts_once_variables_are_substituted() {
    for console in [Console::Intune, Console::Jamf] {
        let sample = generated(sample_path(console));
        parse_xml(&sample).unwrap_or_else(|e| panic!("{console:?} sample is not well-formed XML: {e}"));
        let tree = file::from_bytes(substitute(console, &sample).as_bytes())
            .unwrap_or_else(|e| panic!("{console:?} sample is not a property list: {e}"));
        let parsed = policy::parse(&tree).unwrap_or_else(|r| panic!("{console:?} sample rejected:\n{r}"));
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        let expected_id = if console == Console::Intune { "b9841cd9-9843-405f-be28-b2265c59ef97" } else { "F4KN99ZUG5V2" };
        assert_eq!(parsed.policy.device_id.as_deref(), Some(expected_id));
        // Every required key is present in the sample itself.
        for spec in KEYS.iter().filter(|k| k.required) {
            assert!(tree.get(spec.name).is_some(), "{console:?}: {} missing", spec.name);
        }
    }
}

#[test]
fn console_samples_are_refused_while_variables_are_unsubstituted() {
    for console in [Console::Intune, Console::Jamf] {
        let tree = file::from_bytes(edit_examples(&generated(sample_path(console))).as_bytes()).expect("property list");
        let rejected = policy::parse(&tree).expect_err("a console that did not substitute must not configure the agent");
        let mut keys: Vec<&str> = rejected.problems.iter().map(|p| p.key.as_str()).collect();
        keys.sort_unstable();
        let mut variables: Vec<&str> = artifacts::mdm_variables(console).iter().map(|v| v.key).collect();
        variables.sort_unstable();
        assert_eq!(keys, variables, "{console:?}: {rejected}");
        assert!(rejected.problems.iter().all(|p| p.kind == ProblemKind::InvalidValue));
    }
}

#[test]
fn console_samples_left_unedited_are_refused_for_their_placeholders() {
    for console in [Console::Intune, Console::Jamf] {
        let tree = file::from_bytes(generated(sample_path(console)).as_bytes()).expect("property list");
        let rejected = policy::parse(&tree).expect_err("placeholders are errors");
        let placeholders: Vec<&str> =
            rejected.problems.iter().filter(|p| p.kind == ProblemKind::Placeholder).map(|p| p.key.as_str()).collect();
        assert!(placeholders.contains(&"archive_url") && placeholders.contains(&"archive_public_key"), "{console:?}: {rejected}");
    }
}

#[test]
fn policy_check_reads_a_bare_dict_as_pasted_into_a_console() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jamf.plist");
    std::fs::write(&path, substitute(Console::Jamf, &generated(artifacts::JAMF_PLIST_PATH))).expect("write");
    let out = verbatim(&["policy", "check", path.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains("c2FtcGxl"), "the token must never be printed: {all}");
}

// ---------------------------------------------------------------------------------------------
// A small, strict XML reader: enough to prove the generated files are well formed (one root,
// matched tags, quoted and unique attributes, valid references, well-formed comments) and to
// walk them. No DTD processing; a DOCTYPE without an internal subset is skipped.
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Node {
    Element(Element),
    Text(String),
}

#[derive(Debug)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    fn child(&self, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.name == name)
    }

    fn children_named(&self, name: &str) -> Vec<&Element> {
        self.elements().filter(|e| e.name == name).collect()
    }

    /// The element's own text, trimmed.
    fn text(&self) -> String {
        let text: String = self
            .children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                Node::Element(_) => None,
            })
            .collect();
        text.trim().to_string()
    }
}

fn parse_xml(source: &str) -> Result<Element, String> {
    let mut p = XmlReader { s: source, pos: 0 };
    if p.rest().starts_with("<?xml") {
        p.skip_past("?>")?;
    }
    p.misc(true)?;
    let root = p.element()?;
    p.misc(false)?;
    if p.pos != p.s.len() {
        return Err(p.error("content after the root element"));
    }
    Ok(root)
}

struct XmlReader<'a> {
    s: &'a str,
    pos: usize,
}

impl XmlReader<'_> {
    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }

    fn error(&self, what: &str) -> String {
        let line = self.s[..self.pos].matches('\n').count() + 1;
        format!("line {line}: {what}")
    }

    fn skip_whitespace(&mut self) {
        let trimmed = self.rest().trim_start_matches([' ', '\t', '\r', '\n']);
        self.pos = self.s.len() - trimmed.len();
    }

    fn skip_past(&mut self, end: &str) -> Result<&str, String> {
        let at = self.rest().find(end).ok_or_else(|| self.error(&format!("missing {end}")))?;
        let body = &self.s[self.pos..self.pos + at];
        self.pos += at + end.len();
        Ok(body)
    }

    fn expect(&mut self, text: &str) -> Result<(), String> {
        if self.rest().starts_with(text) {
            self.pos += text.len();
            Ok(())
        } else {
            Err(self.error(&format!("expected {text:?}")))
        }
    }

    /// Whitespace, comments and processing instructions (and, before the root, a DOCTYPE).
    fn misc(&mut self, before_root: bool) -> Result<(), String> {
        loop {
            self.skip_whitespace();
            if self.rest().starts_with("<!--") {
                self.comment()?;
            } else if self.rest().starts_with("<?") {
                self.skip_past("?>")?;
            } else if before_root && self.rest().starts_with("<!DOCTYPE") {
                let body = self.skip_past(">")?;
                if body.contains('[') {
                    return Err(self.error("internal DTD subsets are not expected"));
                }
            } else {
                return Ok(());
            }
        }
    }

    fn comment(&mut self) -> Result<(), String> {
        self.expect("<!--")?;
        let body = self.skip_past("-->")?;
        if body.contains("--") || body.ends_with('-') {
            return Err(self.error("`--` inside a comment"));
        }
        Ok(())
    }

    fn name(&mut self) -> Result<String, String> {
        let rest = self.rest();
        let len = rest
            .char_indices()
            .find(|&(i, c)| {
                let ok =
                    c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && (c.is_ascii_digit() || c == '-' || c == '.'));
                !ok
            })
            .map_or(rest.len(), |(i, _)| i);
        if len == 0 {
            return Err(self.error("expected a name"));
        }
        let name = rest[..len].to_string();
        self.pos += len;
        Ok(name)
    }

    fn element(&mut self) -> Result<Element, String> {
        self.expect("<")?;
        let name = self.name()?;
        let mut attrs: Vec<(String, String)> = Vec::new();
        loop {
            let before = self.pos;
            self.skip_whitespace();
            if self.rest().starts_with("/>") {
                self.pos += 2;
                return Ok(Element { name, attrs, children: Vec::new() });
            }
            if self.rest().starts_with('>') {
                self.pos += 1;
                break;
            }
            if self.pos == before {
                return Err(self.error("expected whitespace before an attribute"));
            }
            let attr = self.name()?;
            self.skip_whitespace();
            self.expect("=")?;
            self.skip_whitespace();
            let quote = self.rest().chars().next().filter(|c| *c == '"' || *c == '\'');
            let quote = quote.ok_or_else(|| self.error("attribute value must be quoted"))?;
            self.pos += 1;
            let raw = self.skip_past(&quote.to_string())?.to_string();
            if raw.contains('<') {
                return Err(self.error("`<` in an attribute value"));
            }
            if attrs.iter().any(|(n, _)| *n == attr) {
                return Err(self.error(&format!("duplicate attribute {attr}")));
            }
            let value = self.decode(&raw)?;
            attrs.push((attr, value));
        }
        let mut children = Vec::new();
        loop {
            if self.rest().starts_with("</") {
                self.pos += 2;
                let end = self.name()?;
                if end != name {
                    return Err(self.error(&format!("</{end}> closes <{name}>")));
                }
                self.skip_whitespace();
                self.expect(">")?;
                return Ok(Element { name, attrs, children });
            } else if self.rest().starts_with("<!--") {
                self.comment()?;
            } else if self.rest().starts_with("<![CDATA[") {
                self.pos += "<![CDATA[".len();
                children.push(Node::Text(self.skip_past("]]>")?.to_string()));
            } else if self.rest().starts_with("<?") {
                self.skip_past("?>")?;
            } else if self.rest().starts_with('<') {
                children.push(Node::Element(self.element()?));
            } else if self.rest().is_empty() {
                return Err(self.error(&format!("<{name}> is never closed")));
            } else {
                let len = self.rest().find('<').unwrap_or(self.rest().len());
                let raw = self.rest()[..len].to_string();
                if raw.contains("]]>") {
                    return Err(self.error("`]]>` in text"));
                }
                let text = self.decode(&raw)?;
                self.pos += len;
                children.push(Node::Text(text));
            }
        }
    }

    /// Replaces the five predefined entities and character references; anything else after
    /// `&` is an error.
    fn decode(&self, raw: &str) -> Result<String, String> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(at) = rest.find('&') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let end = after.find(';').ok_or_else(|| self.error("`&` without `;`"))?;
            let entity = &after[..end];
            let c = match entity {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                _ => {
                    let code = if let Some(hex) = entity.strip_prefix("#x") {
                        u32::from_str_radix(hex, 16).ok()
                    } else if let Some(dec) = entity.strip_prefix('#') {
                        dec.parse().ok()
                    } else {
                        None
                    };
                    code.and_then(char::from_u32).ok_or_else(|| self.error(&format!("bad reference &{entity};")))?
                }
            };
            out.push(c);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[test]
fn the_xml_reader_rejects_malformed_documents() {
    for bad in [
        "<a><b></a></b>",
        "<a x=1/>",
        "<a x='1' x='2'/>",
        "<a>&nbsp;</a>",
        "<a>AT&T</a>",
        "<a><!-- a -- b --></a>",
        "<a/><b/>",
        "<a>",
        "<a x=\"<\"/>",
    ] {
        assert!(parse_xml(bad).is_err(), "{bad}");
    }
    let ok = parse_xml("<?xml version=\"1.0\"?>\n<!-- c -->\n<a x=\"1 &amp; 2\"><b>t&#39;s</b><c/></a>\n").expect("ok");
    assert_eq!(ok.attr("x"), Some("1 & 2"));
    assert_eq!(ok.child("b").expect("b").text(), "t's");
}

/// The Mac relay's kit: the launch agent runs `verbatim relay imessage` on the user's
/// Messages database with the managed configuration's path; the PPPC profile grants Full Disk
/// Access to that binary by code requirement; the settings profile carries every policy key.
#[test]
fn the_mac_relay_kit_runs_the_relay_with_full_disk_access_and_the_schema_keys() {
    use verbatim_core::Value;
    use verbatim_core::policy::file::from_plist_bytes;
    let get = |v: &Value, key: &str| -> Value {
        match v {
            Value::Dict(d) => d.get(key).cloned().unwrap_or_else(|| panic!("no {key}")),
            _ => panic!("not a dict looking for {key}"),
        }
    };
    let first = |v: Value| -> Value {
        match v {
            Value::List(l) => l.into_iter().next().expect("one item"),
            _ => panic!("not a list"),
        }
    };
    let text = |v: Value| -> String {
        match v {
            Value::String(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    };

    let agent = from_plist_bytes(generated(artifacts::MAC_RELAY_LAUNCHD_PATH).as_bytes()).expect("launch agent parses");
    let Value::List(args) = get(&agent, "ProgramArguments") else { panic!() };
    let args: Vec<String> = args.into_iter().map(text).collect();
    assert_eq!(args[0], artifacts::MAC_RELAY_BINARY);
    assert_eq!(&args[1..3], ["relay", "imessage"]);
    let flag = |f: &str| args.iter().position(|a| a == f).map(|i| args[i + 1].clone()).unwrap_or_else(|| panic!("{f}"));
    assert_eq!(flag("--chat-db"), "~/Library/Messages/chat.db");
    assert_eq!(flag("--policy"), format!("/Library/Managed Preferences/{}.plist", artifacts::MAC_RELAY_PREFERENCES_DOMAIN));
    assert_eq!(text(get(&agent, "Label")), artifacts::MAC_RELAY_LABEL);

    let pppc = from_plist_bytes(generated(artifacts::MAC_RELAY_PPPC_PATH).as_bytes()).expect("PPPC profile parses");
    let payload = first(get(&pppc, "PayloadContent"));
    assert_eq!(text(get(&payload, "PayloadType")), "com.apple.TCC.configuration-profile-policy");
    let grant = first(get(&get(&payload, "Services"), "SystemPolicyAllFiles"));
    assert_eq!(text(get(&grant, "Identifier")), artifacts::MAC_RELAY_BINARY);
    assert_eq!(text(get(&grant, "Authorization")), "Allow");
    assert!(text(get(&grant, "CodeRequirement")).starts_with(&format!("identifier \"{}\"", artifacts::MAC_RELAY_SIGNING_ID)));

    let settings = from_plist_bytes(generated(artifacts::MAC_RELAY_SETTINGS_PATH).as_bytes()).expect("settings profile parses");
    let payload = first(get(&settings, "PayloadContent"));
    assert_eq!(text(get(&payload, "PayloadType")), artifacts::MAC_RELAY_PREFERENCES_DOMAIN);
    for spec in verbatim_core::policy::schema::KEYS.iter().filter(|k| k.required) {
        get(&payload, spec.name);
    }
}
