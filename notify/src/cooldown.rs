//! Cooldown: at most one notice per (target, workload, rule) per window, counting the
//! ones held back so the next notice that gets through can say how many there were.
//!
//! The window is fixed from the last notice *sent*: suppressed notices do not extend
//! it, so a drift that repeats forever still produces one notice per window.
use std::time::Duration;

/// What the outbox remembers per (target, workload, rule).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CooldownState {
    /// When the last notice was let through, Unix milliseconds.
    pub last_sent_ms: u64,
    /// How many were suppressed since then.
    pub suppressed: u64,
}

/// The cooldown's answer for one notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Send it, telling the receiver how many were suppressed before it.
    Send { suppressed_before: u64 },
    /// Hold it back; it is counted.
    Suppress,
}

impl CooldownState {
    /// Decides for a notice at `now_ms` and returns the state to store.
    /// `previous` is `None` the first time this key is seen.
    pub fn admit(previous: Option<Self>, now_ms: u64, window: Duration) -> (Admission, Self) {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        match previous {
            Some(p) if now_ms.saturating_sub(p.last_sent_ms) < window_ms => (
                Admission::Suppress,
                CooldownState {
                    last_sent_ms: p.last_sent_ms,
                    suppressed: p.suppressed.saturating_add(1),
                },
            ),
            p => (
                Admission::Send {
                    suppressed_before: p.map_or(0, |p| p.suppressed),
                },
                CooldownState {
                    last_sent_ms: now_ms,
                    suppressed: 0,
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_inside_the_window_are_counted_and_reported_after_it() {
        let w = Duration::from_secs(60);
        let (a, s) = CooldownState::admit(None, 1_000, w);
        assert_eq!(
            a,
            Admission::Send {
                suppressed_before: 0
            }
        );
        let (a, s) = CooldownState::admit(Some(s), 2_000, w);
        assert_eq!(a, Admission::Suppress);
        let (a, s) = CooldownState::admit(Some(s), 60_999, w);
        assert_eq!(a, Admission::Suppress);
        assert_eq!(s.suppressed, 2);
        let (a, s) = CooldownState::admit(Some(s), 61_000, w);
        assert_eq!(
            a,
            Admission::Send {
                suppressed_before: 2
            }
        );
        assert_eq!(
            s,
            CooldownState {
                last_sent_ms: 61_000,
                suppressed: 0
            }
        );
    }

    #[test]
    fn a_zero_window_sends_everything() {
        let (_, s) = CooldownState::admit(None, 5, Duration::ZERO);
        let (a, _) = CooldownState::admit(Some(s), 5, Duration::ZERO);
        assert_eq!(
            a,
            Admission::Send {
                suppressed_before: 0
            }
        );
    }
}
