//! How the core's types that are not plain records cross the FFI (feature `uniffi`): each as
//! the string the app already knows. Custom types, as glean-core does for its paths.

use std::path::PathBuf;

use crate::evidence::Cause;

// A file the app points to (attachment, recording): an absolute path string on both platforms.
uniffi::custom_type!(PathBuf, String, {
    remote,
    lower: |path| path.to_string_lossy().into_owned(),
    try_lift: |text| Ok(PathBuf::from(text)),
});

// A could-not-record cause in its text form (`queue_full`, `channel_disabled:sms`), the same
// form status, MDM feedback and the archived `capture_unavailable` events use.
uniffi::custom_type!(Cause, String, {
    lower: |cause| cause.to_string(),
    try_lift: |text| Cause::parse(&text).ok_or_else(|| uniffi::deps::anyhow::anyhow!("unknown cause {text:?}")),
});
