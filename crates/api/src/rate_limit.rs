//! Per-principal rate limiting (governor's GCRA): `RATE_LIMIT_REQUESTS` per
//! `RATE_LIMIT_WINDOW_SECONDS`, as a burst that refills evenly. Keyed only after
//! authentication, so unauthenticated traffic never creates state; idle keys are
//! pruned periodically so memory stays bounded by the active principals.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter as Governor};

use crate::error::ApiError;

pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl RateLimiter {
    pub fn new(requests: u32, window: Duration) -> Self {
        let burst = NonZeroU32::new(requests.max(1)).expect("max(1) is non-zero");
        let period = (window / burst.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .expect("period is non-zero")
            .allow_burst(burst);
        RateLimiter {
            limiter: Governor::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// Admits one request of `principal`, or says when to retry.
    pub fn check(&self, principal: &str) -> Result<(), ApiError> {
        self.limiter.check_key(&principal.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }

    /// Keys currently tracked.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }

    /// Drops keys whose state is back to "full burst available".
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Prunes every `every` until the limiter is dropped.
    pub fn spawn_pruner(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(limiter) => limiter.prune(),
                    None => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_principals_are_pruned_so_state_stays_bounded() {
        let limiter = RateLimiter::new(2, Duration::from_millis(100));
        for i in 0..500 {
            limiter.check(&format!("principal-{i}")).unwrap();
        }
        assert_eq!(limiter.tracked(), 500);
        std::thread::sleep(Duration::from_millis(150));
        limiter.prune();
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn the_burst_is_the_configured_request_count() {
        let limiter = RateLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            limiter.check("p").unwrap();
        }
        match limiter.check("p") {
            Err(ApiError::RateLimited { retry_after_secs }) => assert!((1..=20).contains(&retry_after_secs)),
            other => panic!("{other:?}"),
        }
    }
}
