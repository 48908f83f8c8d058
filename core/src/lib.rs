//! Verbatim core: the whole on-device agent without any FFI.
//!
//! The pipeline (see DESIGN.md): a managed [`policy`] configures the agent, the app hands
//! typed [`model`] events to the [`agent`], which decides scope, [`seal`]s them to the
//! archive's public key, appends them to the hash-[`chain`]ed durable [`queue`], and the
//! uploader sends acknowledged-only-once batches in the [`wire`] format.

// The core's records and enums carry UniFFI derives behind this feature; `verbatim-ffi`
// exports them (a second UniFFI component in the same library, like matrix-sdk-base's).
#[cfg(feature = "uniffi")]
uniffi::setup_scaffolding!();
#[cfg(feature = "uniffi")]
mod ffi_types;

pub mod agent;
pub mod archive;
mod block_on;
pub mod chain;
pub mod clock;
pub mod error;
pub mod evidence;
pub mod model;
pub mod policy;
pub mod prng;
pub mod queue;
pub mod record;
pub mod seal;
pub mod secret;
pub mod sources;
#[cfg(feature = "tools")]
pub mod synth;
#[cfg(feature = "testing")]
pub mod testing;
pub mod upload;
pub mod wire;

pub use agent::{Agent, AgentOptions, CaptureOutcome, Status, UnenrollReport};
pub use error::{Error, ErrorKind};
pub use model::{Channel, Direction, Event};
pub use policy::{Policy, Value};
