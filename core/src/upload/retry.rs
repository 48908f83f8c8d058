//! When to try again: capped exponential back-off (the schedule comes from `backon`) with full
//! jitter (a uniform draw below the schedule's ceiling, which spreads a fleet of phones that
//! failed together), never sooner than the archive's `Retry-After`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::prng::Rng;

pub const FIRST_DELAY: Duration = Duration::from_millis(200);
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Waiting, abstracted so tests can record waits and move a manual clock instead of sleeping.
pub trait Pause: Send + Sync {
    fn pause(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Real waiting on the tokio timer.
pub struct TokioPause;

impl Pause for TokioPause {
    fn pause(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

pub fn tokio_pause() -> Arc<dyn Pause> {
    Arc::new(TokioPause)
}

/// The delays of one upload session.
pub struct RetrySchedule {
    ceilings: ExponentialBackoff,
    rng: Rng,
    last_ceiling: Duration,
}

impl RetrySchedule {
    pub fn new(seed: u64) -> Self {
        let ceilings = ExponentialBuilder::default()
            .with_min_delay(FIRST_DELAY)
            .with_max_delay(MAX_DELAY)
            .with_factor(2.0)
            .without_max_times()
            .build();
        RetrySchedule { ceilings, rng: Rng::new(seed), last_ceiling: FIRST_DELAY }
    }

    /// The next delay: uniform in [0, ceiling], and at least `retry_after` when the archive said so.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.ceilings.next().unwrap_or(MAX_DELAY);
        self.last_ceiling = ceiling;
        let fraction = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let jittered = ceiling.mul_f64(fraction);
        match retry_after {
            Some(r) => jittered.max(r),
            None => jittered,
        }
    }

    /// The ceiling used for the last delay (for tests and status).
    pub fn last_ceiling(&self) -> Duration {
        self.last_ceiling
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap_and_delays_stay_below_them() {
        let mut s = RetrySchedule::new(1);
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            let d = s.next_delay(None);
            assert!(d <= s.last_ceiling());
            ceilings.push(s.last_ceiling());
        }
        assert_eq!(ceilings[0], FIRST_DELAY);
        // backon multiplies in floating point: compare whole milliseconds.
        assert_eq!(ceilings[1].as_millis(), 2 * FIRST_DELAY.as_millis());
        assert_eq!(ceilings[2].as_millis(), 4 * FIRST_DELAY.as_millis());
        assert!(ceilings.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*ceilings.last().unwrap(), MAX_DELAY);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let mut s = RetrySchedule::new(2);
        for _ in 0..20 {
            assert!(s.next_delay(Some(Duration::from_secs(7))) >= Duration::from_secs(7));
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut a = RetrySchedule::new(3);
        let mut b = RetrySchedule::new(4);
        let da: Vec<_> = (0..8).map(|_| a.next_delay(None)).collect();
        let db: Vec<_> = (0..8).map(|_| b.next_delay(None)).collect();
        assert_ne!(da, db);
    }
}
