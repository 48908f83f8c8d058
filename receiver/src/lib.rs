//! Verbatim's reference archive receiver: the upload API over HTTPS (docs/upload-api.md), an
//! append-only durable store, completeness verification, and export of opened records as
//! JSON Lines and RFC 5322 messages (docs/export-formats.md).
//!
//! Modules, one job each: [`keys`] (archive key pair), [`tokens`] (device tokens), [`store`]
//! (SQLite, single writer), [`server`] (HTTPS, handlers, limits), [`tls`] (certificates),
//! [`faults`] (fault injection for tests and the demo), [`verify`], [`export`].

pub mod error;
pub mod export;
pub mod faults;
mod fsutil;
pub mod keys;
pub mod participants;
pub mod seaweed;
pub mod server;
pub mod store;
pub mod time;
pub mod tls;
pub mod tokens;
pub mod vault;
pub mod verify;

pub use error::{Error, Result};
pub use export::{ExportSummary, KeyRing, export, export_with_keys, source_ids};
pub use faults::{Fault, FaultPlan};
pub use keys::{AcceptedKeys, KeyInfo, keygen, load_public, load_secret};
pub use server::{BackgroundReceiver, Limits, Receiver, ReceiverConfig, RunningReceiver};
pub use tls::TlsSource;
pub use tokens::add_device;
pub use verify::{Report, verify};
