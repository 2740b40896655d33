//! The neighbour state machine (RFC 2328 10.3) as a pure transition table, and the per
//! neighbour data the exchange and flooding procedures keep.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::Instant;

use serde::Serialize;

use super::lsa::{LsaHeader, LsaKey};
use super::packet::{DbDescription, DdFlags};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NbrState {
    Down,
    Init,
    #[serde(rename = "2-way")]
    TwoWay,
    ExStart,
    Exchange,
    Loading,
    Full,
}

impl NbrState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Init => "init",
            Self::TwoWay => "2-way",
            Self::ExStart => "exstart",
            Self::Exchange => "exchange",
            Self::Loading => "loading",
            Self::Full => "full",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NbrEvent {
    HelloReceived,
    TwoWayReceived,
    OneWayReceived,
    NegotiationDone,
    /// With whether the link state request list is empty.
    ExchangeDone {
        requests_empty: bool,
    },
    BadLsReq,
    LoadingDone,
    AdjOk,
    SeqNumberMismatch,
    KillNbr,
    InactivityTimer,
    LlDown,
}

/// The state after `event` in `state`; `adjacency` is the answer to "should an adjacency be
/// established with this neighbour" (10.4) at the time of the event. Events that do not apply
/// in a state leave it unchanged, as the RFC's table has no entry for them.
pub fn next_state(state: NbrState, event: NbrEvent, adjacency: bool) -> NbrState {
    use NbrEvent as E;
    use NbrState as S;
    match (state, event) {
        (_, E::KillNbr | E::InactivityTimer | E::LlDown) => S::Down,
        (S::Down, E::HelloReceived) => S::Init,
        (_, E::HelloReceived) => state,
        (S::Init, E::TwoWayReceived) => {
            if adjacency {
                S::ExStart
            } else {
                S::TwoWay
            }
        }
        (_, E::TwoWayReceived) => state,
        (S::Down | S::Init, E::OneWayReceived) => state,
        (_, E::OneWayReceived) => S::Init,
        (S::ExStart, E::NegotiationDone) => S::Exchange,
        (S::Exchange, E::ExchangeDone { requests_empty }) => {
            if requests_empty {
                S::Full
            } else {
                S::Loading
            }
        }
        (S::Loading, E::LoadingDone) => S::Full,
        (S::TwoWay, E::AdjOk) if adjacency => S::ExStart,
        (S::ExStart | S::Exchange | S::Loading | S::Full, E::AdjOk) if !adjacency => S::TwoWay,
        (S::Exchange | S::Loading | S::Full, E::BadLsReq | E::SeqNumberMismatch) => S::ExStart,
        _ => state,
    }
}

/// What the retransmission list holds for one LSA: the instance that was sent.
pub type RetransmitList = BTreeMap<LsaKey, LsaHeader>;

#[derive(Debug, Clone)]
pub struct Neighbor {
    pub router_id: Ipv4Addr,
    pub addr: Ipv4Addr,
    pub priority: u8,
    /// As declared in the neighbour's last Hello.
    pub dr: Ipv4Addr,
    pub bdr: Ipv4Addr,
    pub options: u8,
    pub state: NbrState,
    pub inactivity_deadline: Instant,
    /// Whether this router is master of the database exchange.
    pub master: bool,
    pub dd_seq: u32,
    /// Flags, options and sequence of the last DD received, for duplicate detection.
    pub last_rx_dd: Option<(DdFlags, u8, u32)>,
    /// The last DD sent, retransmitted by the master on timer and by the slave on duplicate.
    pub last_tx_dd: Option<DbDescription>,
    pub dd_rxmt_at: Option<Instant>,
    pub summary: VecDeque<LsaHeader>,
    pub requests: BTreeMap<LsaKey, LsaHeader>,
    /// Requests sent in the last LSR, not yet answered.
    pub requests_outstanding: Vec<LsaKey>,
    pub lsr_rxmt_at: Option<Instant>,
    pub retransmit: RetransmitList,
    pub rxmt_at: Option<Instant>,
    /// Highest MD5 sequence number accepted from this neighbour.
    pub crypto_seq: Option<u32>,
    /// When a newer database copy was last sent back for a key (13, step 8).
    pub sent_back: HashMap<LsaKey, Instant>,
    /// When the neighbour last reached Full or left it, for status.
    pub since: Instant,
    /// We are its graceful-restart helper (RFC 3623 3) until then.
    pub helping: Option<Helping>,
}

/// Helper mode for a restarting neighbour: it stays advertised as fully adjacent, its
/// Hellos may not list us, and its inactivity timer does not bring it down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Helping {
    pub until: Instant,
    pub grace_period: u32,
    pub reason: super::lsa::grace::RestartReason,
    /// What its Hellos said before the restart, kept so the DR election does not move.
    pub priority: u8,
    pub dr: Ipv4Addr,
    pub bdr: Ipv4Addr,
}

impl Neighbor {
    pub fn new(router_id: Ipv4Addr, addr: Ipv4Addr, now: Instant) -> Self {
        Self {
            router_id,
            addr,
            priority: 0,
            dr: Ipv4Addr::UNSPECIFIED,
            bdr: Ipv4Addr::UNSPECIFIED,
            options: 0,
            state: NbrState::Down,
            inactivity_deadline: now,
            master: false,
            dd_seq: 0,
            last_rx_dd: None,
            last_tx_dd: None,
            dd_rxmt_at: None,
            summary: VecDeque::new(),
            requests: BTreeMap::new(),
            requests_outstanding: Vec::new(),
            lsr_rxmt_at: None,
            retransmit: BTreeMap::new(),
            rxmt_at: None,
            crypto_seq: None,
            sent_back: HashMap::new(),
            since: now,
            helping: None,
        }
    }

    /// Forgets the exchange: what 10.3 does when an adjacency is torn down or restarted.
    pub fn clear_lists(&mut self) {
        self.summary.clear();
        self.requests.clear();
        self.requests_outstanding.clear();
        self.retransmit.clear();
        self.last_rx_dd = None;
        self.last_tx_dd = None;
        self.dd_rxmt_at = None;
        self.lsr_rxmt_at = None;
        self.rxmt_at = None;
    }

    pub fn exchanging(&self) -> bool {
        matches!(self.state, NbrState::Exchange | NbrState::Loading)
    }
}

#[cfg(test)]
mod tests {
    use super::NbrEvent as E;
    use super::NbrState as S;
    use super::*;

    /// Replays an event sequence, checking the state after each step.
    fn replay(steps: &[(NbrEvent, bool, NbrState)]) {
        let mut state = S::Down;
        for (i, &(event, adjacency, expected)) in steps.iter().enumerate() {
            state = next_state(state, event, adjacency);
            assert_eq!(state, expected, "step {i}: {event:?}");
        }
    }

    #[test]
    fn broadcast_drother_pair_stops_at_two_way_until_adjok() {
        replay(&[
            (E::HelloReceived, false, S::Init),
            (E::OneWayReceived, false, S::Init),
            (E::TwoWayReceived, false, S::TwoWay),
            (E::HelloReceived, false, S::TwoWay),
            (E::TwoWayReceived, false, S::TwoWay),
            (E::AdjOk, false, S::TwoWay),
            (E::AdjOk, true, S::ExStart),
            (E::NegotiationDone, true, S::Exchange),
            (E::AdjOk, false, S::TwoWay),
        ]);
    }

    #[test]
    fn full_adjacency_with_loading_then_loss() {
        replay(&[
            (E::HelloReceived, true, S::Init),
            (E::TwoWayReceived, true, S::ExStart),
            (
                E::ExchangeDone {
                    requests_empty: true,
                },
                true,
                S::ExStart,
            ),
            (E::NegotiationDone, true, S::Exchange),
            (E::LoadingDone, true, S::Exchange),
            (
                E::ExchangeDone {
                    requests_empty: false,
                },
                true,
                S::Loading,
            ),
            (E::BadLsReq, true, S::ExStart),
            (E::NegotiationDone, true, S::Exchange),
            (
                E::ExchangeDone {
                    requests_empty: false,
                },
                true,
                S::Loading,
            ),
            (E::LoadingDone, true, S::Full),
            (E::SeqNumberMismatch, true, S::ExStart),
            (E::NegotiationDone, true, S::Exchange),
            (
                E::ExchangeDone {
                    requests_empty: true,
                },
                true,
                S::Full,
            ),
            (E::OneWayReceived, true, S::Init),
            (E::TwoWayReceived, true, S::ExStart),
            (E::InactivityTimer, true, S::Down),
            (E::OneWayReceived, true, S::Down),
        ]);
    }

    #[test]
    fn seq_mismatch_before_exchange_is_ignored() {
        assert_eq!(
            next_state(S::ExStart, E::SeqNumberMismatch, true),
            S::ExStart
        );
        assert_eq!(next_state(S::TwoWay, E::BadLsReq, true), S::TwoWay);
        assert_eq!(next_state(S::Full, E::KillNbr, true), S::Down);
        assert_eq!(next_state(S::Loading, E::LlDown, true), S::Down);
    }
}
