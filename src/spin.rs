//! When the event loop busy-polls before it sleeps.
//!
//! In a conversation the answer to a line often comes back within
//! microseconds, and a thread that slept in the meantime must be woken for
//! it: on a virtual machine that means waking a halted virtual CPU, which
//! costs more than the whole relay hop. Polling without blocking for a few
//! microseconds first catches the answer awake. That buys latency with CPU,
//! so it is done only while it pays: while spins catch events. After
//! [`MISSES_ALLOWED`] spins in a row that caught nothing, only one wake-up in
//! [`PROBE_EVERY`] spins, until one catches something again. A wake-up that
//! brought no events (the tick alone) never spins.
//!
//! The window is `chat-server --spin-us`; 0 turns spinning off.

use std::time::Duration;

/// Spinning stops after this many spins in a row caught nothing.
pub const MISSES_ALLOWED: u32 = 8;

/// Once spinning has stopped, one wake-up in this many still spins, to find
/// out whether spinning pays again.
pub const PROBE_EVERY: u32 = 16;

/// The default window: long enough to catch a loopback answer, short enough
/// that a quiet second costs nothing (spins happen only after events).
pub const DEFAULT_WINDOW: Duration = Duration::from_micros(20);

/// Whether to spin before the next sleep, and for how long.
#[derive(Debug, Clone)]
pub struct SpinPolicy {
    window: Duration,
    /// Spins in a row that caught nothing, then wake-ups since spinning
    /// stopped at [`MISSES_ALLOWED`].
    misses: u32,
}

impl SpinPolicy {
    /// A policy that spins for up to `window`; `Duration::ZERO` never spins.
    /// It starts stopped: the first wake-up with events probes.
    pub fn new(window: Duration) -> Self {
        SpinPolicy {
            window,
            misses: MISSES_ALLOWED,
        }
    }

    /// Called before sleeping: how long to poll without blocking first, if
    /// at all. `woke_with_events` says whether the last wake-up brought
    /// events. Counts the spin as a miss until [`caught`](Self::caught)
    /// says otherwise.
    pub fn spin_window(&mut self, woke_with_events: bool) -> Option<Duration> {
        if self.window.is_zero() || !woke_with_events {
            return None;
        }
        let stopped = self.misses >= MISSES_ALLOWED;
        let probe = stopped && (self.misses - MISSES_ALLOWED).is_multiple_of(PROBE_EVERY);
        // Wrapping, after billions of quiet wake-ups, only means eight more
        // tries.
        self.misses = self.misses.wrapping_add(1);
        (!stopped || probe).then_some(self.window)
    }

    /// The spin just granted caught an event.
    pub fn caught(&mut self) {
        self.misses = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spins(policy: &mut SpinPolicy, wake_ups: u32) -> u32 {
        (0..wake_ups)
            .filter(|_| policy.spin_window(true).is_some())
            .count() as u32
    }

    #[test]
    fn zero_never_spins() {
        let mut policy = SpinPolicy::new(Duration::ZERO);
        assert_eq!(spins(&mut policy, 100), 0);
        policy.caught();
        assert_eq!(policy.spin_window(true), None);
    }

    #[test]
    fn a_wake_up_without_events_never_spins() {
        let mut policy = SpinPolicy::new(DEFAULT_WINDOW);
        policy.caught();
        assert_eq!(policy.spin_window(false), None);
    }

    #[test]
    fn spinning_goes_on_while_it_catches_events() {
        let mut policy = SpinPolicy::new(DEFAULT_WINDOW);
        for _ in 0..100 {
            assert_eq!(policy.spin_window(true), Some(DEFAULT_WINDOW));
            policy.caught();
        }
    }

    #[test]
    fn after_eight_misses_only_one_wake_up_in_sixteen_spins() {
        let mut policy = SpinPolicy::new(DEFAULT_WINDOW);
        policy.caught();
        assert_eq!(spins(&mut policy, MISSES_ALLOWED), MISSES_ALLOWED);
        assert_eq!(spins(&mut policy, PROBE_EVERY * 4), 4, "probes only");
        // A probe that catches something starts spinning again.
        while policy.spin_window(true).is_none() {}
        policy.caught();
        assert_eq!(spins(&mut policy, MISSES_ALLOWED), MISSES_ALLOWED);
    }

    #[test]
    fn a_new_policy_probes_first() {
        let mut policy = SpinPolicy::new(DEFAULT_WINDOW);
        assert!(policy.spin_window(true).is_some());
        assert_eq!(spins(&mut policy, PROBE_EVERY - 1), 0);
    }
}
