//! MDM artifacts generated from the schema ([`KEYS`]): the AppConfig specfile EMM consoles
//! import, sample console configurations for Microsoft Intune and Jamf Pro, and Android's
//! managed-configuration resources. Pure functions of the schema: no I/O, no timestamps, the
//! same output on every run, so the committed copies can be checked against them
//! (`verbatim policy export-artifacts` writes them; `cli/tests/mdm_artifacts.rs` compares).
//!
//! Formats followed:
//! - AppConfig specfile: the AppConfig Community XML schema (`appconfig.xsd`, as published
//!   with Jamf's AppConfig Generator): `managedAppConfiguration` holds `version`, `bundleId`,
//!   `dict` (one `string`/`integer`/`boolean`/`stringArray` per key, each with an optional
//!   `defaultValue` then an optional `constraint`) and `presentation` (`fieldGroup`s of
//!   `field`s with localized `label`, `description` and `options`). The schema has no
//!   password or secret field type (`hidden` would hide the field from the admin altogether),
//!   so the device token is an ordinary `input` whose description says it is a credential.
//! - Android: `<restrictions>` as read by `RestrictionsManager` (types `string`, `integer`,
//!   `bool`, `choice`, `multi-select`); `entries`, `entryValues` and a multi-select's
//!   `defaultValue` are string-array resources. Android has no list-of-free-strings type, so
//!   list keys other than the channels are `string`s holding comma-separated values, which
//!   the parser accepts.
//! - Console samples: the `<dict>` of an XML property list, as pasted into Intune ("Enter XML
//!   data") or Jamf Pro (App Configuration), with that console's variables where a value is
//!   per device.

use std::fmt::Write as _;

use super::schema::{KEYS, KeyKind, KeySpec, MAX_LIST_ITEMS};
use crate::model::Channel;

/// The specfile's `<version>`: consoles use it to tell a revised specfile from the one they
/// hold. Bump it whenever the generated specfile changes (a unit test insists).
pub const SPECFILE_VERSION: u32 = 4;

/// The bundle identifier written into the committed specfile. Verbatim is embedded in the
/// firm's messaging app, so the real value is that app's; regenerate with it.
pub const PLACEHOLDER_BUNDLE_ID: &str = "com.example.verbatim";

/// The locale of every label and description.
const LOCALE: &str = "en-US";

/// Where each artifact is committed, relative to the repository root.
pub const SPECFILE_PATH: &str = "mdm/appconfig-specfile.xml";
pub const INTUNE_PLIST_PATH: &str = "mdm/intune-app-config.plist";
pub const JAMF_PLIST_PATH: &str = "mdm/jamf-app-config.plist";
pub const ANDROID_RESTRICTIONS_PATH: &str = "android/src/main/res/xml/app_restrictions.xml";
pub const ANDROID_STRINGS_PATH: &str = "android/src/main/res/values/verbatim_restrictions.xml";
pub const MAC_RELAY_LAUNCHD_PATH: &str = "mdm/macos/com.verbatim.relay.imessage.plist";
pub const MAC_RELAY_PPPC_PATH: &str = "mdm/macos/verbatim-relay-pppc.mobileconfig";
pub const MAC_RELAY_SETTINGS_PATH: &str = "mdm/macos/verbatim-relay-settings.mobileconfig";

/// One generated file and where it belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Path relative to the repository root, `/`-separated.
    pub path: &'static str,
    pub contents: String,
}

/// Every artifact, with the specfile naming `bundle_id` (see [`is_valid_bundle_id`]).
pub fn artifacts(bundle_id: &str) -> Vec<Artifact> {
    let (restrictions, strings) = android_app_restrictions();
    vec![
        Artifact { path: SPECFILE_PATH, contents: appconfig_specfile_for(bundle_id) },
        Artifact { path: INTUNE_PLIST_PATH, contents: sample_plist(Console::Intune) },
        Artifact { path: JAMF_PLIST_PATH, contents: sample_plist(Console::Jamf) },
        Artifact { path: ANDROID_RESTRICTIONS_PATH, contents: restrictions },
        Artifact { path: ANDROID_STRINGS_PATH, contents: strings },
        Artifact { path: MAC_RELAY_LAUNCHD_PATH, contents: mac_relay_launch_agent() },
        Artifact { path: MAC_RELAY_PPPC_PATH, contents: mac_relay_pppc_profile() },
        Artifact { path: MAC_RELAY_SETTINGS_PATH, contents: mac_relay_settings_profile() },
    ]
}

/// Whether `id` matches the specfile schema's `bundleId` pattern `([a-zA-Z0-9]+\.)+([a-zA-Z0-9])+`
/// (note: no hyphens or underscores).
pub fn is_valid_bundle_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('.').collect();
    parts.len() >= 2 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

// ---------------------------------------------------------------------------------------------
// Shared text
// ---------------------------------------------------------------------------------------------

/// Console field groups, in display order. Keys are listed in schema order within a group; a
/// key missing here lands in [`OTHER_GROUP`] rather than being left out.
const GROUPS: &[(&str, &[&str])] = &[
    (
        "Archive connection",
        &[
            "archive_url",
            "archive_public_key",
            "archive_key_id",
            "tenant_id",
            "device_token",
            "device_id",
            "archive_ca_pem",
            "tls_pins",
        ],
    ),
    (
        "Capture scope",
        &["capture_channels", "business_lines", "capture_attachments", "max_attachment_mb", "capture_call_recordings"],
    ),
    ("Upload", &["upload_network", "upload_allow_roaming", "upload_interval_minutes", "max_batch_kb"]),
    ("Queue and fail-closed", &["queue_max_mb", "queue_alert_percent", "pending_alert_hours", "heartbeat_hours", "fail_closed"]),
    ("Notice, logging and version", &["disclaimer_text", "disclaimer_mode", "log_level", "policy_version"]),
    ("Android: Google Messages archival", &["backfill_days", "organization_name"]),
];
const OTHER_GROUP: &str = "Other settings";

/// The groups with their keys' schema rows, empty groups dropped.
fn groups() -> Vec<(&'static str, Vec<&'static KeySpec>)> {
    let mut out: Vec<(&'static str, Vec<&'static KeySpec>)> =
        GROUPS.iter().map(|(title, names)| (*title, KEYS.iter().filter(|k| names.contains(&k.name)).collect())).collect();
    let other: Vec<&'static KeySpec> = KEYS.iter().filter(|k| !GROUPS.iter().any(|(_, names)| names.contains(&k.name))).collect();
    out.push((OTHER_GROUP, other));
    out.retain(|(_, keys)| !keys.is_empty());
    out
}

/// A short label from the key name: `archive_ca_pem` → `Archive CA PEM`.
fn title(name: &str) -> String {
    let words: Vec<String> = name
        .split('_')
        .enumerate()
        .map(|(i, word)| match word {
            "url" | "id" | "tls" | "ca" | "pem" | "mb" | "kb" => word.to_ascii_uppercase(),
            _ if i == 0 => {
                let mut chars = word.chars();
                chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
            }
            _ => word.to_string(),
        })
        .collect();
    words.join(" ")
}

/// The label shown for a channel or enum word in pick lists.
fn option_label(word: &str) -> String {
    match Channel::parse(word) {
        Some(channel) => channel_label(channel).to_string(),
        None => word.to_string(),
    }
}

fn channel_label(channel: Channel) -> &'static str {
    match channel {
        Channel::Sms => "SMS",
        Channel::Mms => "MMS",
        Channel::Rcs => "RCS",
        Channel::Imessage => "iMessage",
        Channel::Whatsapp => "WhatsApp",
        Channel::Wechat => "WeChat",
        Channel::Signal => "Signal",
        Channel::Telegram => "Telegram",
        Channel::Line => "LINE",
        Channel::Voice => "Voice calls",
    }
}

/// The words an admin picks from, for keys with a fixed set.
fn choices(kind: KeyKind) -> Option<Vec<&'static str>> {
    match kind {
        KeyKind::Enum(words) => Some(words.to_vec()),
        KeyKind::ChannelList => Some(Channel::ALL.iter().map(|c| c.as_str()).collect()),
        _ => None,
    }
}

/// Items of a comma-separated default or example.
fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|item| !item.is_empty())
}

/// Which console description is being written: Android cannot hold lists of free strings.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Specfile,
    Android,
}

/// The description an admin reads in the console: the schema's, then whether the key is
/// required, the accepted range, list syntax, the default, and the credential warning.
fn console_description(spec: &KeySpec, target: Target) -> String {
    let mut text = spec.description.to_string();
    text.push_str(if spec.required { " Required." } else { " Optional." });
    if let KeyKind::Integer { min, max } = spec.kind {
        let _ = write!(text, " A whole number from {min} to {max}.");
    }
    if target == Target::Android && matches!(spec.kind, KeyKind::StringList | KeyKind::Pins) {
        text.push_str(" Several values: separate them with commas.");
    }
    if spec.kind == KeyKind::ChannelList {
        text.push_str(" None selected means the default.");
    }
    if let Some(default) = spec.default {
        let _ = write!(text, " Default: {}.", split_list(default).collect::<Vec<_>>().join(", "));
    }
    if spec.secret {
        text.push_str(" This is a credential: consoles show it as plain text, so limit who can view this configuration.");
    }
    text
}

/// Escapes text for XML element content.
fn xml_text(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Escapes text for a double-quoted XML attribute (line breaks and tabs kept as references, so
/// attribute-value normalisation does not turn them into spaces).
fn xml_attr(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

/// Text made safe inside `<!-- -->`: one line, no `--`, not ending in `-`.
fn comment_text(text: &str) -> String {
    let mut safe = text.replace(['\n', '\r'], " ");
    while safe.contains("--") {
        safe = safe.replace("--", "- -");
    }
    if safe.ends_with('-') {
        safe.push('.');
    }
    safe
}

/// Writes an XML comment indented by `indent`, wrapped at about 100 columns.
fn write_comment(out: &mut String, indent: &str, text: &str) {
    const WIDTH: usize = 100;
    let mut line = format!("{indent}<!--");
    let opening_len = line.len();
    for word in comment_text(text).split_whitespace() {
        if line.len() + 1 + word.len() > WIDTH && line.len() > opening_len {
            out.push_str(&line);
            out.push('\n');
            line = format!("{indent}    ");
        } else {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push_str(" -->\n");
}

// ---------------------------------------------------------------------------------------------
// AppConfig specfile
// ---------------------------------------------------------------------------------------------

/// Device variables of the AppConfig schema (`deviceVariable`) used as defaults: the console
/// substitutes each device's value.
const SPECFILE_DEVICE_VARIABLES: &[(&str, &str)] = &[("device_id", "serialNumber")];

/// The AppConfig specfile for the placeholder bundle id ([`PLACEHOLDER_BUNDLE_ID`]).
pub fn appconfig_specfile() -> String {
    appconfig_specfile_for(PLACEHOLDER_BUNDLE_ID)
}

/// The AppConfig specfile naming `bundle_id`, which should satisfy [`is_valid_bundle_id`]
/// (it is escaped, not checked, here).
pub fn appconfig_specfile_for(bundle_id: &str) -> String {
    specfile(bundle_id, SPECFILE_VERSION)
}

fn specfile(bundle_id: &str, version: u32) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    write_comment(
        &mut out,
        "",
        "Verbatim managed app configuration: AppConfig specfile for EMM consoles that import one. Generated \
         from the Verbatim policy schema by `verbatim policy export-artifacts`; do not edit by hand. The bundleId \
         is a placeholder unless regenerated with the bundle-id option set to your app's identifier. The schema \
         has no secret field type: device_token is an ordinary input, shown in clear text by consoles. Key \
         reference: docs/policy-reference.md.",
    );
    out.push_str("<managedAppConfiguration>\n");
    let _ = writeln!(out, "  <version>{version}</version>");
    let _ = writeln!(out, "  <bundleId>{}</bundleId>", xml_text(bundle_id));
    out.push_str("  <dict>\n");
    for spec in KEYS {
        write_specfile_key(&mut out, spec);
    }
    out.push_str("  </dict>\n");
    let _ = writeln!(out, "  <presentation defaultLocale=\"{LOCALE}\">");
    for (group, keys) in groups() {
        out.push_str("    <fieldGroup>\n");
        let _ = writeln!(out, "      <name><language value=\"{LOCALE}\">{}</language></name>", xml_text(group));
        for spec in keys {
            write_specfile_field(&mut out, spec);
        }
        out.push_str("    </fieldGroup>\n");
    }
    out.push_str("  </presentation>\n");
    out.push_str("</managedAppConfiguration>\n");
    out
}

/// The specfile element type holding a key of this kind.
pub fn specfile_element(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Integer { .. } => "integer",
        KeyKind::Bool => "boolean",
        KeyKind::StringList | KeyKind::ChannelList | KeyKind::Pins => "stringArray",
        KeyKind::String | KeyKind::Text | KeyKind::Url | KeyKind::PublicKey | KeyKind::Enum(_) | KeyKind::Pem => "string",
    }
}

/// The specfile `field` type (admin console control) for a key of this kind.
pub fn specfile_field_type(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Bool => "checkbox",
        KeyKind::Enum(_) => "select",
        KeyKind::ChannelList => "multiselect",
        KeyKind::StringList | KeyKind::Pins => "list",
        KeyKind::String | KeyKind::Text | KeyKind::Url | KeyKind::PublicKey | KeyKind::Integer { .. } | KeyKind::Pem => "input",
    }
}

/// A regular expression the console can check a string against, where one is simple and sure.
fn specfile_pattern(kind: KeyKind) -> Option<&'static str> {
    match kind {
        KeyKind::Url => Some("https://.+"),
        // 32 bytes in base64: 43 characters and one optional `=`, either alphabet.
        KeyKind::PublicKey => Some("[A-Za-z0-9+/_-]{43}=?"),
        _ => None,
    }
}

fn write_specfile_key(out: &mut String, spec: &KeySpec) {
    let element = specfile_element(spec.kind);
    let _ = writeln!(out, "    <{element} keyName=\"{}\">", xml_attr(spec.name));

    // defaultValue: a device variable, the schema default, or nothing.
    let variable = SPECFILE_DEVICE_VARIABLES.iter().find(|(key, _)| *key == spec.name).map(|(_, v)| *v);
    if let Some(variable) = variable {
        let _ = writeln!(out, "      <defaultValue><deviceVariable value=\"{}\"/></defaultValue>", xml_attr(variable));
    } else if let Some(default) = spec.default {
        out.push_str("      <defaultValue>\n");
        let values: Vec<&str> = if spec.kind.is_list() { split_list(default).collect() } else { vec![default.trim()] };
        for value in values {
            let _ = writeln!(out, "        <value>{}</value>", xml_text(value));
        }
        out.push_str("      </defaultValue>\n");
    }

    // constraint: nullable unless required, plus range, pattern or allowed values.
    let mut attrs = format!(" nullable=\"{}\"", !spec.required);
    match spec.kind {
        KeyKind::Integer { min, max } => {
            let clamp = |n: i64| n.clamp(i64::from(i32::MIN), i64::from(i32::MAX));
            let _ = write!(attrs, " min=\"{}\" max=\"{}\"", clamp(min), clamp(max));
        }
        KeyKind::StringList | KeyKind::ChannelList | KeyKind::Pins => {
            if spec.required {
                attrs.push_str(" min=\"1\"");
            }
            let max = choices(spec.kind).map_or(MAX_LIST_ITEMS, |words| words.len());
            let _ = write!(attrs, " max=\"{max}\"");
        }
        _ => {}
    }
    if let Some(pattern) = specfile_pattern(spec.kind) {
        let _ = write!(attrs, " pattern=\"{}\"", xml_attr(pattern));
    }
    match choices(spec.kind) {
        Some(words) => {
            let _ = writeln!(out, "      <constraint{attrs}>");
            out.push_str("        <values>\n");
            for word in words {
                let _ = writeln!(out, "          <value>{}</value>", xml_text(word));
            }
            out.push_str("        </values>\n");
            out.push_str("      </constraint>\n");
        }
        None => {
            let _ = writeln!(out, "      <constraint{attrs}/>");
        }
    }
    let _ = writeln!(out, "    </{element}>");
}

fn write_specfile_field(out: &mut String, spec: &KeySpec) {
    let _ = writeln!(out, "      <field keyName=\"{}\" type=\"{}\">", xml_attr(spec.name), specfile_field_type(spec.kind));
    let _ = writeln!(out, "        <label><language value=\"{LOCALE}\">{}</language></label>", xml_text(&title(spec.name)));
    let _ = writeln!(
        out,
        "        <description><language value=\"{LOCALE}\">{}</language></description>",
        xml_text(&console_description(spec, Target::Specfile))
    );
    if let Some(words) = choices(spec.kind) {
        let defaults: Vec<&str> = spec.default.map(|d| split_list(d).collect()).unwrap_or_default();
        out.push_str("        <options>\n");
        for word in words {
            let selected = if defaults.contains(&word) { " selected=\"true\"" } else { "" };
            let _ = writeln!(
                out,
                "          <option value=\"{}\"{selected}><language value=\"{LOCALE}\">{}</language></option>",
                xml_attr(word),
                xml_text(&option_label(word))
            );
        }
        out.push_str("        </options>\n");
    }
    out.push_str("      </field>\n");
}

// ---------------------------------------------------------------------------------------------
// Console samples (XML property list dict)
// ---------------------------------------------------------------------------------------------

/// An MDM console whose App Configuration field takes an XML property list `<dict>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// Microsoft Intune: app configuration policy, managed devices, iOS/iPadOS, "Enter XML data".
    Intune,
    /// Jamf Pro: mobile device app, App Configuration.
    Jamf,
}

/// A console variable the sample puts in a key: the console replaces it with each device's
/// (or user's) value when it sends the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MdmVariable {
    pub key: &'static str,
    /// Exactly as typed in the console.
    pub variable: &'static str,
    /// What the console puts in its place.
    pub meaning: &'static str,
}

/// The variables each sample uses.
pub fn mdm_variables(console: Console) -> &'static [MdmVariable] {
    match console {
        Console::Intune => {
            &[MdmVariable { key: "device_id", variable: "{{deviceid}}", meaning: "the Intune device ID (a GUID)" }]
        }
        Console::Jamf => &[
            MdmVariable { key: "device_id", variable: "$SERIALNUMBER", meaning: "the device's serial number" },
            MdmVariable {
                key: "device_token",
                variable: "$EXTENSIONATTRIBUTE_1",
                meaning: "the value of the device extension attribute with ID 1, which you create to hold \
                          each device's token; change 1 to your attribute's ID",
            },
        ],
    }
}

/// A sample App Configuration `<dict>` for `console`: required keys hold the schema's examples
/// (replace them), per-device keys hold the console's variables, keys with a default hold it.
/// A console input, not an agent input: the agent refuses a value that still looks like a
/// variable, so it does not pass `verbatim policy check` until the variables are substituted.
pub fn sample_plist(console: Console) -> String {
    let (name, where_, per_device) = match console {
        Console::Intune => (
            "Microsoft Intune",
            "Apps, App configuration policies, Add, Managed devices, iOS/iPadOS; Configuration settings format: \
             Enter XML data",
            "device_token must be each device's own token, and Intune has no per-device variable that could \
             carry it: give each device its own policy (see docs/mdm-admin.md).",
        ),
        Console::Jamf => (
            "Jamf Pro",
            "the app's App Configuration in Mobile Device Apps",
            "device_token must be each device's own token: keep it in a device extension attribute and refer to it \
             with $EXTENSIONATTRIBUTE_n (see docs/mdm-admin.md).",
        ),
    };
    let variables = mdm_variables(console);
    let mut out = String::new();
    write_comment(
        &mut out,
        "",
        &format!(
            "Verbatim managed app configuration, sample for {name} ({where_}). Generated from the Verbatim policy \
             schema by `verbatim policy export-artifacts`; do not edit the committed copy: copy it, replace every \
             value marked REPLACE, then paste the dict. Values such as {} are {name} variables that the console \
             substitutes per device. Each device's token is issued for its device_id, which therefore comes \
             from a variable here. {per_device} Check your copy first with `verbatim policy check` after putting \
             a real value in place of each variable. Key reference: docs/policy-reference.md.",
            variables.iter().map(|v| v.variable).collect::<Vec<_>>().join(" and ")
        ),
    );
    out.push_str("<dict>\n");
    let mut unset = Vec::new();
    for spec in KEYS {
        let variable = variables.iter().find(|v| v.key == spec.name);
        let (source, value) = match (variable, spec.required, spec.default) {
            (Some(v), _, _) => (format!("{name} variable {}, {}", v.variable, v.meaning), v.variable),
            (None, true, _) => ("REPLACE the example".to_string(), spec.example),
            (None, false, Some(default)) => ("default shown".to_string(), default),
            (None, false, None) => {
                unset.push(spec.name);
                continue;
            }
        };
        let status = match (spec.required, spec.secret) {
            (true, true) => "REQUIRED, secret",
            (true, false) => "REQUIRED",
            (false, true) => "optional, secret",
            (false, false) => "optional",
        };
        write_comment(&mut out, "    ", &format!("{} ({status}; {source}): {}", spec.name, spec.description));
        let _ = writeln!(out, "    <key>{}</key>", xml_text(spec.name));
        write_plist_value(&mut out, spec.kind, value, variable.is_some());
    }
    if !unset.is_empty() {
        write_comment(
            &mut out,
            "    ",
            &format!("Optional keys left unset (see docs/policy-reference.md): {}.", unset.join(", ")),
        );
    }
    out.push_str("</dict>\n");
    out
}

/// Writes one plist value. A variable is always a plain `<string>`.
fn write_plist_value(out: &mut String, kind: KeyKind, text: &str, is_variable: bool) {
    if is_variable {
        let _ = writeln!(out, "    <string>{}</string>", xml_text(text));
        return;
    }
    match kind {
        KeyKind::Integer { .. } => {
            let _ = writeln!(out, "    <integer>{}</integer>", xml_text(text.trim()));
        }
        KeyKind::Bool => {
            let tag = if matches!(text.trim(), "true" | "1") { "<true/>" } else { "<false/>" };
            let _ = writeln!(out, "    {tag}");
        }
        KeyKind::StringList | KeyKind::ChannelList | KeyKind::Pins => {
            out.push_str("    <array>\n");
            for item in split_list(text) {
                let _ = writeln!(out, "        <string>{}</string>", xml_text(item));
            }
            out.push_str("    </array>\n");
        }
        KeyKind::String | KeyKind::Text | KeyKind::Url | KeyKind::PublicKey | KeyKind::Enum(_) | KeyKind::Pem => {
            let _ = writeln!(out, "    <string>{}</string>", xml_text(text));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Android managed configurations
// ---------------------------------------------------------------------------------------------

/// The Android `restrictionType` for a key of this kind. Lists of free strings have no Android
/// type: they are `string`s of comma-separated values.
pub fn android_restriction_type(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Integer { .. } => "integer",
        KeyKind::Bool => "bool",
        KeyKind::Enum(_) => "choice",
        KeyKind::ChannelList => "multi-select",
        KeyKind::String
        | KeyKind::Text
        | KeyKind::Url
        | KeyKind::PublicKey
        | KeyKind::Pem
        | KeyKind::StringList
        | KeyKind::Pins => "string",
    }
}

/// The resource name for one of a key's strings or arrays: `verbatim_restriction_<key>_<what>`.
/// Prefixed: the library's resources merge into the host app's.
pub fn android_resource_name(key: &str, what: &str) -> String {
    format!("verbatim_restriction_{key}_{what}")
}

/// Android's `res/xml/app_restrictions.xml` and the strings it refers to
/// (`res/values/verbatim_restrictions.xml`), in that order.
pub fn android_app_restrictions() -> (String, String) {
    let header = "Verbatim managed configuration for Android Enterprise. Generated from the Verbatim policy \
                  schema by `verbatim policy export-artifacts`; do not edit by hand. Key reference: \
                  docs/policy-reference.md.";
    let mut restrictions = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    write_comment(&mut restrictions, "", header);
    restrictions.push_str("<restrictions xmlns:android=\"http://schemas.android.com/apk/res/android\">\n");
    let mut strings = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    write_comment(&mut strings, "", &format!("{header} Titles and descriptions for app_restrictions.xml."));
    strings.push_str("<resources>\n");

    for spec in KEYS {
        let name = |what: &str| android_resource_name(spec.name, what);
        let mut attrs = vec![
            ("key", xml_attr(spec.name)),
            ("restrictionType", android_restriction_type(spec.kind).to_string()),
            ("title", format!("@string/{}", name("title"))),
            ("description", format!("@string/{}", name("description"))),
        ];
        let _ = writeln!(strings, "    <string name=\"{}\">{}</string>", name("title"), android_string(&title(spec.name)));
        let _ = writeln!(
            strings,
            "    <string name=\"{}\">{}</string>",
            name("description"),
            android_string(&console_description(spec, Target::Android))
        );
        if let Some(words) = choices(spec.kind) {
            attrs.push(("entries", format!("@array/{}", name("entries"))));
            attrs.push(("entryValues", format!("@array/{}", name("entry_values"))));
            let labels: Vec<String> = words.iter().map(|w| option_label(w)).collect();
            write_string_array(&mut strings, &name("entries"), &labels, true);
            let values: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            write_string_array(&mut strings, &name("entry_values"), &values, false);
        }
        match (spec.kind, spec.default) {
            (KeyKind::ChannelList, Some(default)) => {
                // A multi-select's default is an array resource.
                attrs.push(("defaultValue", format!("@array/{}", name("default"))));
                let values: Vec<String> = split_list(default).map(str::to_string).collect();
                write_string_array(&mut strings, &name("default"), &values, false);
            }
            (_, Some(default)) => attrs.push(("defaultValue", xml_attr(default.trim()))),
            (_, None) => {}
        }
        restrictions.push_str("    <restriction");
        for (attr, value) in attrs {
            let _ = write!(restrictions, "\n        android:{attr}=\"{value}\"");
        }
        restrictions.push_str(" />\n");
    }
    restrictions.push_str("</restrictions>\n");
    strings.push_str("</resources>\n");
    (restrictions, strings)
}

fn write_string_array(out: &mut String, name: &str, items: &[String], translatable: bool) {
    let attr = if translatable { "" } else { " translatable=\"false\"" };
    let _ = writeln!(out, "    <string-array name=\"{name}\"{attr}>");
    for item in items {
        let _ = writeln!(out, "        <item>{}</item>", android_string(item));
    }
    out.push_str("    </string-array>\n");
}

/// Text for an Android string resource: Android's own escapes (apostrophes and quotes must be
/// backslashed, a leading `@` or `?` would read as a reference), then XML escaping.
fn android_string(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\'' => escaped.push_str("\\'"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            '\t' => escaped.push_str("\\t"),
            '@' | '?' if i == 0 => {
                escaped.push('\\');
                escaped.push(c);
            }
            c => escaped.push(c),
        }
    }
    escaped.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

// ---------------------------------------------------------------------------------------------
// The iMessage relay on a managed Mac
// ---------------------------------------------------------------------------------------------

/// Where the relay's installer package puts the `verbatim` binary.
pub const MAC_RELAY_BINARY: &str = "/usr/local/bin/verbatim";
/// The relay binary's code-signing identifier (what the PPPC code requirement names).
pub const MAC_RELAY_SIGNING_ID: &str = "com.verbatim.relay";
/// The managed-preferences domain of the relay's configuration: a device-level custom
/// settings payload lands in `/Library/Managed Preferences/<domain>.plist`, which the launch
/// agent hands the relay as `--policy`.
pub const MAC_RELAY_PREFERENCES_DOMAIN: &str = "com.verbatim.relay";
/// The launch agent's label.
pub const MAC_RELAY_LABEL: &str = "com.verbatim.relay.imessage";

const PLIST_HEADER: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n";

/// The launchd agent (`~/Library/LaunchAgents` or `/Library/LaunchAgents`, per user: Messages'
/// database is the signed-in user's) that keeps the relay running. launchd expands no `~`;
/// the relay does, so the paths stay per user.
pub fn mac_relay_launch_agent() -> String {
    let mut out = String::from(PLIST_HEADER);
    write_comment(
        &mut out,
        "",
        "Verbatim iMessage relay: launchd agent, generated by `verbatim policy export-artifacts`. Install in \
         /Library/LaunchAgents (every user) with the relay package; the relay reads the managed configuration the \
         settings profile installs and keeps its sealed queue in ~/Library/Application Support/Verbatim/relay. \
         Full Disk Access comes from verbatim-relay-pppc.mobileconfig. See docs/mdm-admin.md.",
    );
    let args = [
        MAC_RELAY_BINARY,
        "relay",
        "imessage",
        "--chat-db",
        "~/Library/Messages/chat.db",
        "--attachments-root",
        "~/Library/Messages/Attachments",
        "--state",
        "~/Library/Application Support/Verbatim/relay",
        "--policy",
        &format!("/Library/Managed Preferences/{MAC_RELAY_PREFERENCES_DOMAIN}.plist"),
    ];
    out.push_str("<plist version=\"1.0\">\n<dict>\n");
    let _ = writeln!(out, "    <key>Label</key>\n    <string>{MAC_RELAY_LABEL}</string>");
    out.push_str("    <key>ProgramArguments</key>\n    <array>\n");
    for a in args {
        let _ = writeln!(out, "        <string>{}</string>", xml_text(a));
    }
    out.push_str("    </array>\n");
    out.push_str("    <key>RunAtLoad</key>\n    <true/>\n");
    write_comment(&mut out, "    ", "Restarted whenever it stops: a relay that is not running captures nothing.");
    out.push_str("    <key>KeepAlive</key>\n    <true/>\n");
    out.push_str("    <key>ThrottleInterval</key>\n    <integer>30</integer>\n");
    out.push_str("    <key>ProcessType</key>\n    <string>Background</string>\n");
    out.push_str("    <key>LimitLoadToSessionType</key>\n    <string>Aqua</string>\n");
    out.push_str("</dict>\n</plist>\n");
    out
}

/// The Privacy Preferences Policy Control profile granting the relay binary Full Disk Access
/// (`SystemPolicyAllFiles`), identified by path and pinned by its code requirement. Only an
/// MDM can install it (user-approved or supervised enrolment).
pub fn mac_relay_pppc_profile() -> String {
    let requirement = format!(
        "identifier \"{MAC_RELAY_SIGNING_ID}\" and anchor apple generic and certificate 1[field.1.2.840.113635.100.6.2.6] \
         /* exists */ and certificate leaf[field.1.2.840.113635.100.6.1.13] /* exists */ and certificate \
         leaf[subject.OU] = \"REPLACETEAMID\""
    );
    let mut out = String::from(PLIST_HEADER);
    write_comment(
        &mut out,
        "",
        "Verbatim iMessage relay: Full Disk Access (PPPC), generated by `verbatim policy export-artifacts`. \
         REPLACE REPLACETEAMID with the Team ID that signs the relay (`codesign -dr - /usr/local/bin/verbatim` \
         prints the designated requirement to paste instead) and the two REPLACE UUIDs with fresh ones. \
         Deploy from the MDM to the Macs running the relay; Messages' database needs Full Disk Access.",
    );
    out.push_str("<plist version=\"1.0\">\n<dict>\n");
    out.push_str("    <key>PayloadContent</key>\n    <array>\n        <dict>\n");
    out.push_str("            <key>PayloadType</key>\n            <string>com.apple.TCC.configuration-profile-policy</string>\n");
    let _ =
        writeln!(out, "            <key>PayloadIdentifier</key>\n            <string>{MAC_RELAY_SIGNING_ID}.pppc.tcc</string>");
    out.push_str("            <key>PayloadUUID</key>\n            <string>REPLACE-0000-4000-8000-000000000001</string>\n");
    out.push_str("            <key>PayloadVersion</key>\n            <integer>1</integer>\n");
    out.push_str("            <key>Services</key>\n            <dict>\n                <key>SystemPolicyAllFiles</key>\n                <array>\n                    <dict>\n");
    let _ = writeln!(
        out,
        "                        <key>Identifier</key>\n                        <string>{MAC_RELAY_BINARY}</string>"
    );
    out.push_str("                        <key>IdentifierType</key>\n                        <string>path</string>\n");
    let _ = writeln!(
        out,
        "                        <key>CodeRequirement</key>\n                        <string>{}</string>",
        xml_text(&requirement)
    );
    out.push_str("                        <key>Authorization</key>\n                        <string>Allow</string>\n");
    out.push_str("                        <key>Comment</key>\n                        <string>Verbatim relay reads Messages' database (read only) for compliance capture</string>\n");
    out.push_str("                    </dict>\n                </array>\n            </dict>\n        </dict>\n    </array>\n");
    out.push_str("    <key>PayloadDisplayName</key>\n    <string>Verbatim relay: Full Disk Access</string>\n");
    let _ = writeln!(out, "    <key>PayloadIdentifier</key>\n    <string>{MAC_RELAY_SIGNING_ID}.pppc</string>");
    out.push_str("    <key>PayloadScope</key>\n    <string>System</string>\n");
    out.push_str("    <key>PayloadType</key>\n    <string>Configuration</string>\n");
    out.push_str("    <key>PayloadUUID</key>\n    <string>REPLACE-0000-4000-8000-000000000002</string>\n");
    out.push_str("    <key>PayloadVersion</key>\n    <integer>1</integer>\n");
    out.push_str("</dict>\n</plist>\n");
    out
}

/// The relay's managed configuration: a configuration profile whose custom settings payload
/// (domain [`MAC_RELAY_PREFERENCES_DOMAIN`]) holds the policy, every key from the schema as
/// in the Jamf sample (Jamf Pro computer profiles take the same variables).
pub fn mac_relay_settings_profile() -> String {
    let sample = sample_plist(Console::Jamf);
    let dict = &sample[sample.find("<dict>").expect("sample has a dict")..];
    let mut out = String::from(PLIST_HEADER);
    write_comment(
        &mut out,
        "",
        &format!(
            "Verbatim iMessage relay: managed configuration, generated by `verbatim policy export-artifacts` from \
             the policy schema. The settings land in /Library/Managed Preferences/{MAC_RELAY_PREFERENCES_DOMAIN}.plist, \
             which the launch agent passes as --policy. Replace every REPLACE value (business_lines: the managed \
             Apple ID's email and the iPhone's forwarded number) and the UUIDs; check the inner dict with \
             `verbatim policy check`. Key reference: docs/policy-reference.md."
        ),
    );
    out.push_str("<plist version=\"1.0\">\n<dict>\n    <key>PayloadContent</key>\n    <array>\n        <dict>\n");
    let _ = writeln!(out, "            <key>PayloadType</key>\n            <string>{MAC_RELAY_PREFERENCES_DOMAIN}</string>");
    let _ = writeln!(
        out,
        "            <key>PayloadIdentifier</key>\n            <string>{MAC_RELAY_PREFERENCES_DOMAIN}.settings.payload</string>"
    );
    out.push_str("            <key>PayloadUUID</key>\n            <string>REPLACE-0000-4000-8000-000000000003</string>\n");
    out.push_str("            <key>PayloadVersion</key>\n            <integer>1</integer>\n");
    out.push_str("            <key>PayloadDisplayName</key>\n            <string>Verbatim relay policy</string>\n");
    // The sample's keys, inside this payload dict.
    let body = dict.trim_end().strip_prefix("<dict>").and_then(|d| d.strip_suffix("</dict>")).expect("a dict");
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let _ = writeln!(out, "        {line}");
    }
    out.push_str("        </dict>\n    </array>\n");
    out.push_str("    <key>PayloadDisplayName</key>\n    <string>Verbatim relay: managed configuration</string>\n");
    let _ = writeln!(out, "    <key>PayloadIdentifier</key>\n    <string>{MAC_RELAY_PREFERENCES_DOMAIN}.settings</string>");
    out.push_str("    <key>PayloadScope</key>\n    <string>System</string>\n");
    out.push_str("    <key>PayloadType</key>\n    <string>Configuration</string>\n");
    out.push_str("    <key>PayloadUUID</key>\n    <string>REPLACE-0000-4000-8000-000000000004</string>\n");
    out.push_str("    <key>PayloadVersion</key>\n    <integer>1</integer>\n");
    out.push_str("</dict>\n</plist>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// SHA-256 of the specfile generated with version 0 and the placeholder bundle id. When the
    /// specfile changes, consoles must see a new `<version>`: the test below fails until
    /// [`SPECFILE_VERSION`] is bumped and this digest updated.
    const SPECFILE_DIGEST_AT_VERSION: (u32, &str) = (4, "9fc5605f3a8ee354672cc32e79586d2104f83fc9050001513430943cea73d123");

    #[test]
    fn specfile_version_is_bumped_when_the_specfile_changes() {
        let digest = hex::encode(Sha256::digest(specfile(PLACEHOLDER_BUNDLE_ID, 0).as_bytes()));
        let (version, recorded) = SPECFILE_DIGEST_AT_VERSION;
        assert!(
            version == SPECFILE_VERSION && recorded == digest,
            "the AppConfig specfile changed: set SPECFILE_VERSION to {} and SPECFILE_DIGEST_AT_VERSION to ({}, \"{digest}\")",
            if recorded == digest { SPECFILE_VERSION } else { version + 1 },
            if recorded == digest { SPECFILE_VERSION } else { version + 1 },
        );
    }

    #[test]
    fn groups_name_only_known_keys_once() {
        let mut seen = Vec::new();
        for (_, names) in GROUPS {
            for name in *names {
                assert!(KEYS.iter().any(|k| k.name == *name), "group lists unknown key {name}");
                assert!(!seen.contains(name), "{name} is in two groups");
                seen.push(*name);
            }
        }
    }

    #[test]
    fn every_key_is_in_exactly_one_group() {
        let grouped: Vec<&str> = groups().iter().flat_map(|(_, keys)| keys.iter().map(|k| k.name)).collect();
        let mut sorted = grouped.clone();
        sorted.sort_unstable();
        let mut all: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        all.sort_unstable();
        assert_eq!(sorted, all);
    }

    #[test]
    fn titles() {
        assert_eq!(title("archive_ca_pem"), "Archive CA PEM");
        assert_eq!(title("archive_url"), "Archive URL");
        assert_eq!(title("max_attachment_mb"), "Max attachment MB");
        assert_eq!(title("tls_pins"), "TLS pins");
    }

    #[test]
    fn bundle_ids() {
        assert!(is_valid_bundle_id(PLACEHOLDER_BUNDLE_ID));
        assert!(is_valid_bundle_id("com.acme.Messenger2"));
        for bad in ["com", "com.", ".com", "com.acme-capital.app", "com.acme_x.app", "com..acme", ""] {
            assert!(!is_valid_bundle_id(bad), "{bad}");
        }
    }

    #[test]
    fn android_strings_are_escaped() {
        assert_eq!(android_string("the firm's \"archive\""), "the firm\\'s \\\"archive\\\"");
        assert_eq!(android_string("@home"), "\\@home");
        assert_eq!(android_string("a@b?c"), "a@b?c");
        assert_eq!(android_string("a < b & c"), "a &lt; b &amp; c");
        assert_eq!(android_string("back\\slash"), "back\\\\slash");
    }

    #[test]
    fn xml_escaping_and_comments() {
        assert_eq!(xml_attr("a<b>&\"'\n"), "a&lt;b&gt;&amp;&quot;'&#10;");
        assert_eq!(xml_text("a<b>&\"'"), "a&lt;b&gt;&amp;\"'");
        assert_eq!(comment_text("x -- y ---"), "x - - y - - -.");
        let mut out = String::new();
        write_comment(&mut out, "  ", &"word ".repeat(60));
        assert!(out.lines().all(|l| l.len() <= 100), "{out}");
    }

    #[test]
    fn output_is_deterministic() {
        assert_eq!(artifacts(PLACEHOLDER_BUNDLE_ID), artifacts(PLACEHOLDER_BUNDLE_ID));
    }

    #[test]
    fn secret_keys_are_flagged_in_console_descriptions() {
        for spec in KEYS.iter().filter(|k| k.secret) {
            assert!(console_description(spec, Target::Specfile).contains("credential"), "{}", spec.name);
        }
    }

    #[test]
    fn variables_name_known_keys_and_look_like_variables() {
        for console in [Console::Intune, Console::Jamf] {
            for v in mdm_variables(console) {
                assert!(KEYS.iter().any(|k| k.name == v.key), "{}", v.key);
                // The agent must refuse the variable if the console leaves it unsubstituted.
                let tree = crate::policy::Value::dict([(v.key, crate::policy::Value::from(v.variable))]);
                let rejected = crate::policy::parse(&tree).expect_err("incomplete policy");
                assert!(
                    rejected.problems.iter().any(|p| p.key == v.key && p.detail.contains("MDM variable")),
                    "{} {}: {rejected}",
                    v.key,
                    v.variable
                );
            }
        }
    }
}
