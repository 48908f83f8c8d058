//! Unit tests of the FFI layer's own logic (conversions, panic guards, the log filter). The
//! whole surface is exercised from Kotlin by scripts/test-kotlin.sh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use verbatim_core::evidence::Cause;
use verbatim_core::policy::Value;

use crate::error::{ErrorKind, ProblemKind, VerbatimError};
use crate::feedback::{FeedbackSeverity, feedback_items};
use crate::logging::{self, LogSink};
use crate::runtime::{self, OnCancel};
use crate::types::*;

const ALL_KINDS: [ErrorKind; 19] = [
    ErrorKind::NotConfigured,
    ErrorKind::PolicyRejected,
    ErrorKind::InvalidEvent,
    ErrorKind::QueueFull,
    ErrorKind::DiskFull,
    ErrorKind::Storage,
    ErrorKind::Corrupt,
    ErrorKind::Crypto,
    ErrorKind::File,
    ErrorKind::Network,
    ErrorKind::Tls,
    ErrorKind::PinMismatch,
    ErrorKind::Unauthorized,
    ErrorKind::Rejected,
    ErrorKind::Conflict,
    ErrorKind::UnknownArchiveKey,
    ErrorKind::Closed,
    ErrorKind::Internal,
    ErrorKind::Callback,
];

#[test]
fn every_kind_has_its_variant() {
    for kind in ALL_KINDS {
        let e = VerbatimError::new(kind, "d");
        assert_eq!(e.kind(), kind);
        assert_eq!(e.detail(), "d");
    }
}

#[test]
fn core_errors_map_to_the_same_kind_and_a_rejected_policy_keeps_its_problems() {
    use verbatim_core::error::{Error, ErrorKind as K};
    use verbatim_core::policy::{Problem, ProblemKind as PK};
    let e: VerbatimError = Error::new(K::QueueFull, "full").into();
    assert_eq!(e, VerbatimError::QueueFull { detail: "full".into() });
    let problems = vec![
        Problem { key: "tenant_id".into(), kind: PK::Missing, detail: "is required".into() },
        Problem { key: "heartbeat_hours".into(), kind: PK::OutOfRange, detail: "must be 1 to 168".into() },
    ];
    let e: VerbatimError = Error::policy_rejected(problems).into();
    let VerbatimError::PolicyRejected { problems, detail } = e else { panic!("{e:?}") };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["tenant_id", "heartbeat_hours"]);
    assert_eq!(problems[1].kind, ProblemKind::OutOfRange);
    assert_eq!(detail, "tenant_id: is required\nheartbeat_hours: must be 1 to 168");
}

#[test]
fn foreign_exceptions_become_callback_errors_cut_short() {
    let long = "x".repeat(1000);
    let e = VerbatimError::from(uniffi::UnexpectedUniFFICallbackError { reason: long });
    assert_eq!(e.kind(), ErrorKind::Callback);
    assert!(e.detail().len() < 300, "{}", e.detail().len());
}

#[test]
fn policy_tree_converts_recursively() {
    let tree = PolicyValue::Dict {
        entries: HashMap::from([
            ("s".to_string(), PolicyValue::Text { value: "x".into() }),
            ("n".to_string(), PolicyValue::Integer { value: -3 }),
            (
                "l".to_string(),
                PolicyValue::Items {
                    items: vec![PolicyValue::Bool { value: true }, PolicyValue::Dict { entries: HashMap::new() }],
                },
            ),
        ]),
    };
    let v: Value = tree.into();
    assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"l":[true,{}],"n":-3,"s":"x"}"#);
}

#[test]
fn panics_become_internal_errors() {
    let e = runtime::guard("op", || -> crate::error::Result<()> { panic!("secret payload") }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
    assert!(!e.detail().contains("secret payload"));
    let e = verbatim_core::testing::block_on(runtime::spawn("async_op", OnCancel::Finish, async {
        if true {
            panic!("secret payload");
        }
        Ok(())
    }))
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
    assert!(e.detail().contains("async_op") && !e.detail().contains("secret payload"));
}

struct Collect(Mutex<Vec<(LogLevel, String)>>);

impl LogSink for Collect {
    fn log(&self, level: LogLevel, _target: String, message: String) -> Result<(), VerbatimError> {
        self.0.lock().unwrap().push((level, message));
        Ok(())
    }
}

#[test]
fn log_records_below_the_level_never_reach_the_sink() {
    let sink = Arc::new(Collect(Mutex::new(Vec::new())));
    logging::set_log_sink(Some(sink.clone()));
    logging::set_level(LogLevel::Warn);
    tracing::info!("info-dropped");
    tracing::warn!(n = 1, "warn-kept");
    logging::set_level(LogLevel::Trace);
    tracing::trace!("trace-kept");
    logging::set_level(LogLevel::Off);
    tracing::error!("error-dropped");
    logging::set_log_sink(None);
    tracing::error!("no-sink");
    let got = sink.0.lock().unwrap().clone();
    assert_eq!(got, vec![(LogLevel::Warn, "warn-kept n=1".to_string()), (LogLevel::Trace, "trace-kept".to_string())]);
}

#[test]
fn feedback_marks_what_needs_the_admin() {
    let mut s = AgentStatus {
        agent_version: "1.0.0".into(),
        configured: false,
        not_configured_reason: Some("no policy has been applied".into()),
        capture_enabled: false,
        fail_closed: true,
        disclaimer_text: None,
        organization_name: None,
        channels: vec![],
        tenant_id: None,
        device_id: None,
        stream_id: None,
        policy_version: None,
        policy_fingerprint: None,
        log_level: LogLevel::Info,
        upload_schedule: None,
        queue_records: 0,
        queue_bytes: 0,
        queue_max_bytes: 0,
        queue_alert: false,
        queue_full: false,
        pending_stale: false,
        unavailable: vec![],
        last_heartbeat_ms: 0,
        oldest_pending_ms: None,
        oldest_pending_age_ms: None,
        last_seq: 0,
        acked_through: 0,
        epoch: None,
        counters: CaptureCounters { captured: 0, out_of_scope: 0, invalid: 0, refused_not_configured: 0, refused_queue_full: 0 },
        upload: UploadState {
            last_attempt_ms: None,
            last_success_ms: None,
            last_error: None,
            next_retry_ms: None,
            archive_key_refused: false,
        },
        upload_due_ms: None,
    };
    let sev = |s: &AgentStatus, key: &str| feedback_items(s, 0).into_iter().find(|i| i.key == key).map(|i| i.severity);
    assert_eq!(sev(&s, "verbatim.configured"), Some(FeedbackSeverity::Error));
    s.not_configured_reason = None;
    s.configured = true;
    s.capture_enabled = true;
    s.queue_max_bytes = 100;
    s.queue_bytes = 90;
    s.queue_alert = true;
    assert_eq!(sev(&s, "verbatim.configured"), Some(FeedbackSeverity::Info));
    assert_eq!(sev(&s, "verbatim.queue_percent"), Some(FeedbackSeverity::Error));
    assert_eq!(sev(&s, "verbatim.last_error"), Some(FeedbackSeverity::Info));
    s.upload.last_error = Some("unauthorized: token refused".into());
    assert_eq!(sev(&s, "verbatim.last_error"), Some(FeedbackSeverity::Error));
    s.pending_stale = true;
    assert_eq!(sev(&s, "verbatim.oldest_pending_hours"), Some(FeedbackSeverity::Error));
    s.unavailable = vec![Cause::DiskFull];
    assert_eq!(sev(&s, "verbatim.unavailable"), Some(FeedbackSeverity::Error));
    assert_eq!(sev(&s, "verbatim.archive_key_refused"), None);
    s.upload.archive_key_refused = true;
    assert_eq!(sev(&s, "verbatim.archive_key_refused"), Some(FeedbackSeverity::Error));
    let keys: Vec<String> = feedback_items(&s, 0).into_iter().map(|i| i.key).collect();
    assert!(keys.iter().all(|k| k.starts_with("verbatim.")), "{keys:?}");
    assert!(keys.contains(&"verbatim.updated_at".to_string()));
}
