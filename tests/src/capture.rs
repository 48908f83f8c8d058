//! Capture.

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Clone)]
pub struct CapturedEvent {
    pub event: Event,
    pub in_scope: bool,
    pub outcome: CaptureOutcome,
}

/// What the app handed to the agent, and what the agent said about each event.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub events: Vec<CapturedEvent>,
}

impl Captured {
    pub fn extend(&mut self, other: Captured) {
        self.events.extend(other.events);
    }

    pub fn in_scope(&self) -> impl Iterator<Item = &CapturedEvent> {
        self.events.iter().filter(|e| e.in_scope)
    }

    pub fn out_of_scope(&self) -> impl Iterator<Item = &CapturedEvent> {
        self.events.iter().filter(|e| !e.in_scope)
    }

    /// In-scope events of one kind (`message`, `edit`, `unsend`, `reaction`, `attachment`, `call`).
    pub fn count(&self, kind: &str) -> usize {
        self.in_scope().filter(|e| e.event.kind() == kind).count()
    }

    /// Calls that came with a recording file.
    pub fn calls_with_recording(&self) -> usize {
        self.in_scope().filter(|e| matches!(&e.event, Event::Call(c) if c.recording_path.is_some())).count()
    }

    /// The first sequence number of each in-scope event, in capture order.
    pub fn event_starts(&self) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|e| match e.outcome {
                CaptureOutcome::Captured { first_seq, .. } => Some(first_seq),
                CaptureOutcome::OutOfScope => None,
            })
            .collect()
    }

    /// The events stored wholly before sequence `seq` (and every out-of-scope one). Panics when
    /// an event straddles `seq`.
    pub fn before_seq(&self, seq: u64) -> Captured {
        let events = self
            .events
            .iter()
            .filter(|e| match e.outcome {
                CaptureOutcome::Captured { first_seq, last_seq } => {
                    assert!(last_seq < seq || first_seq >= seq, "an event straddles sequence {seq}");
                    last_seq < seq
                }
                CaptureOutcome::OutOfScope => true,
            })
            .cloned()
            .collect();
        Captured { events }
    }

    /// Highest sequence number any capture was given.
    pub fn last_seq(&self) -> u64 {
        self.events
            .iter()
            .filter_map(|e| match e.outcome {
                CaptureOutcome::Captured { last_seq, .. } => Some(last_seq),
                CaptureOutcome::OutOfScope => None,
            })
            .max()
            .unwrap_or(0)
    }
}

/// Captures `events` events of the synthetic workload `seed` (files written under `files`),
/// checking that policy scope decided each as the workload says it should.
pub async fn capture_workload(agent: &Agent, files: &Path, seed: u64, events: usize) -> Captured {
    capture_until(agent, files, seed, events, 0).await
}

/// Captures at least `min_events` events of workload `seed`, and more until the queue holds
/// more than `min_queue_bytes`.
pub async fn capture_until(agent: &Agent, files: &Path, seed: u64, min_events: usize, min_queue_bytes: u64) -> Captured {
    let mut workload = Workload::new(WorkloadOptions::new(seed, files)).expect("workload");
    let mut captured = Captured::default();
    while captured.events.len() < min_events || agent.status().queue_bytes <= min_queue_bytes {
        assert!(captured.events.len() < 5_000, "the workload never filled {min_queue_bytes} bytes");
        let ev = workload.next_event().expect("next event");
        let id = ev.id().to_string();
        let outcome = agent.capture(ev.event.clone()).await.unwrap_or_else(|e| panic!("capture of {id} failed: {e}"));
        match (ev.in_scope, outcome) {
            (true, CaptureOutcome::Captured { .. }) | (false, CaptureOutcome::OutOfScope) => {}
            (in_scope, outcome) => panic!("{id}: in_scope={in_scope} but the agent said {outcome:?}"),
        }
        captured.events.push(CapturedEvent { event: ev.event, in_scope: ev.in_scope, outcome });
    }
    captured
}
