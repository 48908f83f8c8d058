//! `verbatim bench`: sizes.

#[allow(unused_imports)]
use super::*;

pub(super) struct Plan {
    pub(super) quick: bool,
    pub(super) capture_secs: f64,
    pub(super) rounds: usize,
    pub(super) capturers: Vec<usize>,
    pub(super) upload_events: u64,
    pub(super) memory_small: u64,
    pub(super) memory_large: u64,
    pub(super) cold_events: u64,
    pub(super) cold_runs: usize,
    pub(super) cpu_events: u64,
    pub(super) imessage_small: u64,
    pub(super) imessage_large: u64,
    pub(super) telephony_rows: u64,
    pub(super) telephony_rows_large: u64,
    pub(super) telephony_rounds: usize,
    pub(super) whatsapp_messages: u64,
}

impl Plan {
    pub(super) fn new(args: &BenchArgs) -> Plan {
        let q = args.quick;
        Plan {
            quick: q,
            capture_secs: args.capture_secs.unwrap_or(if q { 0.2 } else { 0.15 }),
            rounds: args.rounds.unwrap_or(if q { 2 } else { 40 }).max(1),
            capturers: vec![1, 4, 16],
            upload_events: args.upload_events.unwrap_or(if q { 2_000 } else { 100_000 }),
            memory_small: if q { 2_000 } else { 10_000 },
            memory_large: args.memory_events.unwrap_or(if q { 20_000 } else { 1_000_000 }),
            cold_events: if q { 50_000 } else { 1_000_000 },
            cold_runs: if q { 3 } else { 7 },
            cpu_events: if q { 200 } else { 2_000 },
            imessage_small: if q { 500 } else { 10_000 },
            imessage_large: args.imessage_messages.unwrap_or(if q { 2_000 } else { 1_000_000 }),
            telephony_rows: if q { 2_000 } else { 100_000 },
            telephony_rows_large: if q { 10_000 } else { 1_000_000 },
            telephony_rounds: if q { 2 } else { 7 },
            whatsapp_messages: args.whatsapp_messages.unwrap_or(if q { 500 } else { 10_000 }),
        }
    }
}
