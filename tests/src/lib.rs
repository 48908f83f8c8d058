//! Helpers for Verbatim's end-to-end tests: the core's agent against the reference receiver,
//! over real TLS on 127.0.0.1, each test in its own temporary directories with its own port.
//!
//! The pieces, so that each test reads as a story:
//! - [`World`]: a temporary directory, an archive key pair, a receiver (self-signed CA, fault
//!   plan) and a device token; it builds policies trusting that receiver and opens devices.
//! - [`capture_workload`]: captures a synthetic workload and records what was captured
//!   ([`Captured`]), so the export can be compared with it.
//! - [`RecordingPause`]: the uploader's waits, recorded instead of slept (optionally moving a
//!   [`ManualClock`], hanging, or running a hook at the first wait).
//! - [`Exported`]: verify + export with the archive key, and the comparison with [`Captured`]:
//!   every in-scope event exactly once, with equal fields and byte-equal files.
//! - Queue surgery ([`tamper_queue_record`], [`open_queue`]) for the tampering tests.
//!
//! One module each: `archive_key`, `receiver`, `world`, `capture`, `upload`, `export` (the
//! comparison with what was captured), `queue_surgery`, `one_fault`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use verbatim_core::agent::CaptureOutcome;
use verbatim_core::archive::Opener;
use verbatim_core::chain::{self, Link, StreamId};
use verbatim_core::clock::ManualClock;
use verbatim_core::model::Event;
use verbatim_core::policy::Value;
use verbatim_core::record::{AgentEvent, AttachmentHeader, CallRecord, Record, RecordBody};
use verbatim_core::seal::{ArchiveSecretKey, generate_archive_keypair};
use verbatim_core::secret::Secret;
use verbatim_core::synth::{Workload, WorkloadOptions, sample_policy};
use verbatim_core::upload::{NetworkState, Pause, StopReason, UploadOptions, UploadReport};
use verbatim_core::wire::{Batch, CONTENT_TYPE, EpochInfo, WireRecord};
use verbatim_core::{Agent, AgentOptions};
use verbatim_receiver::export::StreamExport;
use verbatim_receiver::{AcceptedKeys, ExportSummary, FaultPlan, Receiver, ReceiverConfig, Report, RunningReceiver};

mod archive_key;
mod capture;
mod export;
mod one_fault;
mod queue_surgery;
mod receiver;
mod upload;
mod world;

pub use archive_key::*;
pub use capture::*;
pub use export::*;
pub use one_fault::*;
pub use queue_surgery::*;
pub use receiver::*;
pub use upload::*;
pub use world::*;

/// The tenant of `synth::sample_policy`.
pub const TENANT: &str = "acme-securities";
/// The device id every test's policy names (each test has its own receiver).
pub const DEVICE: &str = "dev-e2e";
/// Smallest batch policy allows: workloads of a few dozen events span several batches.
pub const BATCH_KB: u32 = 128;
/// Size of an attachment chunk record (core/src/queue/writer.rs CHUNK_SIZE).
pub const CHUNK: u64 = 64 * 1024;
