//! Capture sources beyond the host app: each turns what a platform stores into the same typed
//! events and hands them to the [`Agent`](crate::Agent) through its public API.

#[cfg(feature = "imessage")]
pub mod imessage;
