//! Per-principal rate limiting (governor's GCRA): `RATE_LIMIT_REQUESTS` per
//! `RATE_LIMIT_WINDOW_SECONDS`, as a burst that refills evenly. Keyed only after
//! authentication, so unauthenticated traffic never creates state; idle keys are
//! pruned periodically so memory stays bounded by the active principals.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use brig_core::shutdown::Shutdown;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter as Governor};

use crate::error::ApiError;

type Limiter = DefaultKeyedRateLimiter<String, StateInformationMiddleware>;

pub struct RateLimiter {
    limiter: Limiter,
    clock: DefaultClock,
    burst: u32,
    period: Duration,
}

/// A principal's quota after a request, for the `RateLimit-*` headers (IETF
/// draft names): the burst, what is left of it, and seconds until it is full again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    pub reset_secs: u64,
}

impl RateInfo {
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("ratelimit-limit", self.limit.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            ("ratelimit-reset", self.reset_secs.to_string()),
        ]
    }
}

/// Where the `Principal` extractor leaves the quota
/// state, for [`headers`] to copy onto the response.
#[derive(Clone, Default)]
pub struct RateSlot(Arc<std::sync::Mutex<Option<RateInfo>>>);

impl RateSlot {
    pub fn set(&self, info: RateInfo) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(info);
    }

    fn take(&self) -> Option<RateInfo> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Middleware: `RateLimit-Limit`, `-Remaining` and `-Reset` on every response
/// to an authenticated request (429s included).
pub async fn headers(mut request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let slot = RateSlot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    if let Some(info) = slot.take() {
        for (name, value) in info.headers() {
            if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
}

impl RateLimiter {
    pub fn new(requests: u32, window: Duration) -> Self {
        let burst = NonZeroU32::new(requests.max(1)).expect("max(1) is non-zero");
        let period = (window / burst.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .expect("period is non-zero")
            .allow_burst(burst);
        RateLimiter {
            limiter: Governor::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            clock: DefaultClock::default(),
            burst: burst.get(),
            period,
        }
    }

    /// Admits one request of `principal`, or says when to retry; either way
    /// with the quota's state for the response headers.
    pub fn check(&self, principal: &str) -> (Result<(), ApiError>, RateInfo) {
        match self.limiter.check_key(&principal.to_string()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let refill = self.period * (self.burst - remaining.min(self.burst));
                let info = RateInfo {
                    limit: self.burst,
                    remaining,
                    reset_secs: refill.as_secs_f64().ceil() as u64,
                };
                (Ok(()), info)
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let retry_after_secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                let info = RateInfo {
                    limit: self.burst,
                    remaining: 0,
                    reset_secs: retry_after_secs,
                };
                (Err(ApiError::RateLimited { retry_after_secs }), info)
            }
        }
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

    /// Prunes every `every` until the limiter is dropped or `shutdown` cancels.
    pub fn spawn_pruner(self: &Arc<Self>, every: Duration, shutdown: &Shutdown) {
        let weak = Arc::downgrade(self);
        shutdown.spawn_loop(async move {
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
            limiter.check(&format!("principal-{i}")).0.unwrap();
        }
        assert_eq!(limiter.tracked(), 500);
        std::thread::sleep(Duration::from_millis(150));
        limiter.prune();
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn the_burst_is_the_configured_request_count() {
        let limiter = RateLimiter::new(3, Duration::from_secs(60));
        for left in (0..3).rev() {
            let (admitted, info) = limiter.check("p");
            admitted.unwrap();
            assert_eq!((info.limit, info.remaining), (3, left));
            assert_eq!(info.reset_secs, 20 * (3 - left) as u64);
        }
        match limiter.check("p") {
            (Err(ApiError::RateLimited { retry_after_secs }), info) => {
                assert!((1..=20).contains(&retry_after_secs));
                assert_eq!((info.remaining, info.reset_secs), (0, retry_after_secs));
            }
            other => panic!("{other:?}"),
        }
    }
}
