//! Fault injection for tests and `verbatim demo`: a queue of misbehaviours applied, in order,
//! to the next authenticated `POST /v1/batches` requests. Off unless the caller installs a
//! plan in [`crate::ReceiverConfig::faults`]; the `receive` command never does.
//!
//! Kept apart from the real path: the handler asks the plan for the next fault once per
//! request and otherwise runs the same code.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Read part of the body, then drop the connection without answering.
    DropConnection,
    /// Answer with this status (an `ApiError` body) without storing anything; with
    /// `retry_after_secs`, a `Retry-After` header too. E.g. 500, 503 + Retry-After, 429.
    Status { code: u16, retry_after_secs: Option<u64> },
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Store the batch normally, then answer 200 with a body that is not JSON (the device must
    /// not take it as an acknowledgement; its resend then counts as duplicates).
    GarbageBody,
    /// Do all the work, roll the transaction back instead of committing, drop the connection:
    /// a crash before fsync. Nothing is acknowledged or kept.
    CrashBeforeCommit,
    /// Commit durably, then drop the connection before answering: the device must resend and
    /// get duplicates, never lose records.
    DropAfterCommit,
}

/// A shared, cloneable queue of faults.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    queue: Arc<Mutex<VecDeque<Fault>>>,
    applied: Arc<watch::Sender<usize>>,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan::new()
    }
}

impl FaultPlan {
    pub fn new() -> FaultPlan {
        FaultPlan { queue: Arc::default(), applied: Arc::new(watch::channel(0).0) }
    }

    /// Queues `fault` after those already queued.
    pub fn push(&self, fault: Fault) -> &FaultPlan {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).push_back(fault);
        self
    }

    pub fn drop_connection(&self) -> &FaultPlan {
        self.push(Fault::DropConnection)
    }

    pub fn status(&self, code: u16, retry_after_secs: Option<u64>) -> &FaultPlan {
        self.push(Fault::Status { code, retry_after_secs })
    }

    pub fn delay(&self, d: Duration) -> &FaultPlan {
        self.push(Fault::Delay(d))
    }

    pub fn garbage_body(&self) -> &FaultPlan {
        self.push(Fault::GarbageBody)
    }

    pub fn crash_before_commit(&self) -> &FaultPlan {
        self.push(Fault::CrashBeforeCommit)
    }

    pub fn drop_after_commit(&self) -> &FaultPlan {
        self.push(Fault::DropAfterCommit)
    }

    /// Faults queued and not yet applied.
    pub fn pending(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Faults taken by requests so far.
    pub fn applied(&self) -> usize {
        *self.applied.borrow()
    }

    /// Waits until at least `n` faults have been taken by requests (a taken `Delay` is then
    /// running), so a test can act while a fault is in progress without sleeping.
    pub async fn wait_applied(&self, n: usize) {
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|v| *v >= n).await;
    }

    /// Drops every queued fault.
    pub fn clear(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The fault for the request being handled, if any.
    pub(crate) fn take(&self) -> Option<Fault> {
        let f = self.queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front()?;
        self.applied.send_modify(|n| *n += 1);
        Some(f)
    }
}
