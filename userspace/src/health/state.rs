/// Rise/fall hysteresis: a target changes state only after `rise` successes or `fall`
/// failures in a row, so one lost probe does not move traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    healthy: bool,
    /// Consecutive results contradicting the current state.
    streak: u32,
}

impl HealthState {
    /// Targets start healthy, as a freshly configured server does in HAProxy: traffic flows at
    /// once, and a dead target leaves after `fall` checks.
    pub fn new() -> Self {
        Self {
            healthy: true,
            streak: 0,
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Results in a row against the current state (HAProxy's going down / going up).
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Records one probe result; returns the new state when it changed.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy { fall } else { rise };
        if self.streak >= needed.max(1) {
            self.healthy = ok;
            self.streak = 0;
            return Some(ok);
        }
        None
    }
}

impl Default for HealthState {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_after_fall_failures_in_a_row_and_rises_after_rise_successes() {
        let mut s = HealthState::new();
        assert_eq!(s.record(false, 2, 3), None);
        assert_eq!(s.record(false, 2, 3), None);
        assert_eq!(s.record(false, 2, 3), Some(false));
        assert!(!s.healthy());
        assert_eq!(s.record(true, 2, 3), None);
        assert_eq!(s.record(true, 2, 3), Some(true));
        assert!(s.healthy());
    }

    #[test]
    fn an_interrupted_streak_starts_over() {
        let mut s = HealthState::new();
        s.record(false, 2, 3);
        s.record(false, 2, 3);
        assert_eq!(s.record(true, 2, 3), None);
        assert_eq!(s.record(false, 2, 3), None);
        assert_eq!(s.record(false, 2, 3), None);
        assert!(s.healthy());
        assert_eq!(s.record(false, 2, 3), Some(false));
    }

    #[test]
    fn rise_and_fall_of_one_switch_at_once() {
        let mut s = HealthState::new();
        assert_eq!(s.record(false, 1, 1), Some(false));
        assert_eq!(s.record(true, 1, 1), Some(true));
    }
}
