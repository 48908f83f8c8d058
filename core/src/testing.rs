//! Instruments for tests, compiled only with the `testing` feature: the crate's own tests and
//! the workspace's test crates turn it on; an app's build of the library never does.

/// Waits for a future on the current thread, for tests outside an async runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    crate::block_on::block_on(f)
}

/// Every seal made while the log is on: which key instance sealed which sequence number of
/// which stream. The nonce-uniqueness tests read it (no (key, nonce) pair may seal twice).
pub mod seal_log {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use crate::chain::StreamId;

    /// One use of an epoch key.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    pub struct Seal {
        pub stream: StreamId,
        pub epoch: u64,
        /// Which key object sealed (each `EpochKey` gets its own number).
        pub key_instance: u64,
        pub seq: u64,
    }

    static ON: AtomicBool = AtomicBool::new(false);
    static LOG: Mutex<Vec<Seal>> = Mutex::new(Vec::new());
    static INSTANCES: AtomicU64 = AtomicU64::new(1);

    /// Starts recording (for the whole process; tests tell their seals apart by device id).
    pub fn start() {
        ON.store(true, Ordering::SeqCst);
    }

    /// The seals recorded for streams of `device`, in the order they were made.
    pub fn seals_of_device(device: &str) -> Vec<Seal> {
        let log = LOG.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().filter(|s| s.stream.device == device).cloned().collect()
    }

    pub(crate) fn next_instance() -> u64 {
        INSTANCES.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn record(stream: &StreamId, epoch: u64, key_instance: u64, seq: u64) {
        if ON.load(Ordering::Relaxed) {
            let seal = Seal { stream: stream.clone(), epoch, key_instance, seq };
            LOG.lock().unwrap_or_else(|p| p.into_inner()).push(seal);
        }
    }
}

/// Faults injected into the queue writer.
pub mod faults {
    use std::sync::Mutex;

    static PANIC_AFTER_SEAL: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());

    /// The queue writer of `device` panics once, right after sealing sequence `seq` and before
    /// storing it: the worst moment, the nonce used and nothing kept.
    pub fn panic_after_sealing(device: &str, seq: u64) {
        PANIC_AFTER_SEAL.lock().unwrap_or_else(|p| p.into_inner()).push((device.to_string(), seq));
    }

    pub(crate) fn after_seal(device: &str, seq: u64) {
        let hit = {
            let mut armed = PANIC_AFTER_SEAL.lock().unwrap_or_else(|p| p.into_inner());
            let at = armed.iter().position(|(d, s)| d == device && *s == seq);
            at.map(|i| armed.remove(i)).is_some()
        };
        if hit {
            panic!("injected fault: the queue writer panics after sealing sequence {seq}");
        }
    }
}
