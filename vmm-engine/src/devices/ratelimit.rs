//! Rate limits for log lines a guest can trigger at will (a malformed
//! request, a bad register value): the first [`FIRST`] occurrences at a
//! call site are logged, then at most one line per [`INTERVAL`] carrying
//! the count of those left out. Use [`guest_warn!`](crate::guest_warn) in
//! place of `log::warn!` wherever a guest controls how often it runs.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines logged in full before the limit starts.
pub const FIRST: u32 = 10;
/// After those, at most one line per interval.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// One call site's budget. `const`, so it can be a `static`.
pub struct RateLimit {
    first: u32,
    interval: Duration,
    state: Mutex<State>,
}

struct State {
    logged: u32,
    suppressed: u64,
    last: Option<Instant>,
}

impl RateLimit {
    pub const fn new(first: u32, interval: Duration) -> Self {
        RateLimit {
            first,
            interval,
            state: Mutex::new(State {
                logged: 0,
                suppressed: 0,
                last: None,
            }),
        }
    }

    /// Whether this occurrence is logged; if so, how many were left out
    /// since the last line that was.
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    /// [`Self::check`] at a given time.
    pub fn check_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let due = match s.last {
            _ if s.logged < self.first => true,
            Some(t) => now.saturating_duration_since(t) >= self.interval,
            None => true,
        };
        if !due {
            s.suppressed = s.suppressed.saturating_add(1);
            return None;
        }
        s.logged = s.logged.saturating_add(1);
        s.last = Some(now);
        Some(std::mem::take(&mut s.suppressed))
    }
}

/// `log::warn!` for a line a guest can trigger: rate-limited per call site
/// (see [`crate::devices::ratelimit`]).
#[macro_export]
macro_rules! guest_warn {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::devices::ratelimit::RateLimit = $crate::devices::ratelimit::RateLimit::new(
            $crate::devices::ratelimit::FIRST,
            $crate::devices::ratelimit::INTERVAL,
        );
        if let Some(left_out) = LIMIT.check() {
            if left_out == 0 {
                log::warn!($($arg)+);
            } else {
                log::warn!("{} ({left_out} more like this since the last one not logged)", format_args!($($arg)+));
            }
        }
    }};
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        static WARNINGS: Cell<u64> = const { Cell::new(0) };
    }

    struct Counter;
    impl log::Log for Counter {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::Level::Warn
        }
        fn log(&self, r: &log::Record) {
            if r.level() <= log::Level::Warn {
                WARNINGS.with(|w| w.set(w.get() + 1));
            }
        }
        fn flush(&self) {}
    }
    static COUNTER: Counter = Counter;

    /// Warnings logged on this thread while `f` runs.
    pub(crate) fn warnings_during(f: impl FnOnce()) -> u64 {
        if log::set_logger(&COUNTER).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
        }
        let before = WARNINGS.with(|w| w.get());
        f();
        WARNINGS.with(|w| w.get()) - before
    }

    #[test]
    fn first_n_then_one_per_interval_with_the_count() {
        let rl = RateLimit::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(rl.check_at(t0), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(rl.check_at(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(rl.check_at(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(rl.check_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(rl.check_at(t0 + Duration::from_secs(25)), Some(1));
    }

    #[test]
    fn a_flood_through_the_macro_logs_first_n_lines() {
        let n = warnings_during(|| {
            for i in 0..10_000 {
                crate::guest_warn!("hostile guest line {i}");
            }
        });
        // One call site: FIRST lines, and none more within the interval
        // (the whole loop runs far inside 60 s on any machine that can run
        // the suite; a slower one may log one more, with the count).
        assert!(
            (FIRST as u64..=FIRST as u64 + 1).contains(&n),
            "{n} lines logged"
        );
    }
}
