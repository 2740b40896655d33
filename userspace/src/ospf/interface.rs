//! Interface data, the interface state machine's states (RFC 2328 9.1) and the
//! Designated Router election (9.4) as a pure function.

use std::net::Ipv4Addr;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkType {
    Broadcast,
    PointToPoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IfState {
    Down,
    Waiting,
    #[serde(rename = "point-to-point")]
    PointToPoint,
    DrOther,
    Backup,
    Dr,
}

impl IfState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Waiting => "waiting",
            Self::PointToPoint => "point-to-point",
            Self::DrOther => "drother",
            Self::Backup => "backup",
            Self::Dr => "dr",
        }
    }
}

/// A router as the election sees it: itself or a neighbour in state 2-Way or higher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub router_id: Ipv4Addr,
    pub addr: Ipv4Addr,
    pub priority: u8,
    /// What it declares in its Hellos (for this router: the interface's current values).
    pub dr: Ipv4Addr,
    pub bdr: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elected {
    pub dr: Ipv4Addr,
    pub bdr: Ipv4Addr,
}

impl Elected {
    /// The interface state this result puts `me` in (9.4 step 5).
    pub fn state_of(&self, me: Ipv4Addr) -> IfState {
        if self.dr == me {
            IfState::Dr
        } else if self.bdr == me {
            IfState::Backup
        } else {
            IfState::DrOther
        }
    }
}

/// RFC 2328 9.4: `me` takes part only with a non-zero priority; `others` are the neighbours
/// in state 2-Way or higher.
pub fn elect(me: Candidate, others: &[Candidate]) -> Elected {
    let first = elect_once(me, others);
    let was = (me.dr == me.addr, me.bdr == me.addr);
    let now = (first.dr == me.addr, first.bdr == me.addr);
    if was == now {
        return first;
    }
    // Step 4: this router's role changed, so it now declares the new result; recompute.
    let me = Candidate {
        dr: first.dr,
        bdr: first.bdr,
        ..me
    };
    elect_once(me, others)
}

fn elect_once(me: Candidate, others: &[Candidate]) -> Elected {
    let eligible: Vec<Candidate> = std::iter::once(me)
        .chain(others.iter().copied())
        .filter(|c| c.priority > 0)
        .collect();
    let best = |set: &mut dyn Iterator<Item = &Candidate>| {
        set.max_by_key(|c| (c.priority, c.router_id))
            .map(|c| c.addr)
    };
    let not_dr = || eligible.iter().filter(|c| c.dr != c.addr);
    let bdr = best(&mut not_dr().filter(|c| c.bdr == c.addr))
        .or_else(|| best(&mut not_dr()))
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let dr = best(&mut eligible.iter().filter(|c| c.dr == c.addr)).unwrap_or(bdr);
    Elected { dr, bdr }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

    fn c(n: u8, priority: u8, dr: Ipv4Addr, bdr: Ipv4Addr) -> Candidate {
        Candidate {
            router_id: Ipv4Addr::new(10, 0, 0, n),
            addr: Ipv4Addr::new(10, 0, 0, n),
            priority,
            dr,
            bdr,
        }
    }

    fn a(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    #[test]
    fn fresh_segment_elects_highest_priority_after_the_repeat() {
        // Nobody declares anything: the best becomes BDR, then DR, and the repeat picks
        // the next best as BDR.
        let me = c(11, 1, NONE, NONE);
        let router = c(1, 100, NONE, NONE);
        let r = elect(me, &[router]);
        assert_eq!(
            r,
            Elected {
                dr: a(1),
                bdr: a(1)
            }
        );
        let r = elect(c(1, 100, NONE, NONE), &[me]);
        assert_eq!(
            r,
            Elected {
                dr: a(1),
                bdr: a(11)
            }
        );
    }

    #[test]
    fn an_existing_dr_is_kept_even_with_lower_priority() {
        let dr = c(5, 1, a(5), a(6));
        let bdr = c(6, 1, a(5), a(6));
        let me = c(9, 200, NONE, NONE);
        let r = elect(me, &[dr, bdr]);
        assert_eq!(
            r,
            Elected {
                dr: a(5),
                bdr: a(6)
            }
        );
        assert_eq!(r.state_of(a(9)), IfState::DrOther);
    }

    #[test]
    fn priority_zero_never_elected_but_learns_the_dr() {
        let me = c(11, 0, NONE, NONE);
        let router = c(1, 100, a(1), NONE);
        let r = elect(me, &[router]);
        assert_eq!(
            r,
            Elected {
                dr: a(1),
                bdr: NONE
            }
        );
        assert_eq!(r.state_of(a(11)), IfState::DrOther);
    }

    #[test]
    fn router_id_breaks_priority_ties_and_bdr_takes_over_from_a_lost_dr() {
        let me = c(11, 1, a(1), a(12));
        let bdr = c(12, 1, a(1), a(12));
        // DR 10.0.0.1 is gone (not a candidate). The BDR sees itself promoted, reruns,
        // and picks 11 as the new BDR.
        let r = elect(bdr, &[me]);
        assert_eq!(
            r,
            Elected {
                dr: a(12),
                bdr: a(11)
            }
        );
        // 11, hearing 12 declare itself DR, agrees and becomes BDR.
        let bdr = c(12, 1, a(12), a(11));
        let r = elect(me, &[bdr]);
        assert_eq!(
            r,
            Elected {
                dr: a(12),
                bdr: a(11)
            }
        );
        assert_eq!(r.state_of(a(11)), IfState::Backup);
    }

    #[test]
    fn lone_eligible_router_becomes_dr() {
        let r = elect(c(11, 1, NONE, NONE), &[]);
        assert_eq!(r.state_of(a(11)), IfState::Dr);
        assert_eq!(r.bdr, NONE);
    }
}
