//! Rise/fall hysteresis: a server changes state only after `rise` passes in a row (down to
//! up) or `fall` failures in a row (up to down).

#[derive(Debug, Clone)]
pub struct Tracker {
    rise: u32,
    fall: u32,
    healthy: bool,
    /// Consecutive results that disagree with `healthy`.
    streak: u32,
}

impl Tracker {
    /// `rise` and `fall` of 0 are treated as 1.
    pub fn new(rise: u32, fall: u32, healthy: bool) -> Tracker {
        Tracker {
            rise: rise.max(1),
            fall: fall.max(1),
            healthy,
            streak: 0,
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Records one probe result; returns the new state when it changed.
    pub fn observe(&mut self, passed: bool) -> Option<bool> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if passed { self.rise } else { self.fall };
        if self.streak >= needed {
            self.healthy = passed;
            self.streak = 0;
            Some(passed)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tracker;

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_passes() {
        let mut t = Tracker::new(2, 3, true);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        // A pass resets the failure streak.
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), Some(false));
        assert!(!t.healthy());
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), Some(true));
        assert!(t.healthy());
    }

    #[test]
    fn zero_counts_act_as_one() {
        let mut t = Tracker::new(0, 0, false);
        assert_eq!(t.observe(true), Some(true));
        assert_eq!(t.observe(false), Some(false));
    }
}
