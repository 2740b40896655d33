//! One BFD session in asynchronous mode (RFC 5880 §6.8), pure: packets and the current time
//! in, packets to send and state changes out. No echo, no demand mode.
//!
//! While the session is not Up the desired transmit interval advertised is at least one
//! second (§6.8.3); going Up starts a poll sequence to the configured intervals, and any later
//! change of them does too. A slower transmit interval and a shorter detection time take
//! effect only when the poll sequence completes, as §6.8.3 requires.

use std::time::{Duration, Instant};

use super::packet::{self, Auth, Control, Diag, Discard, State};

/// Advertised while the session is not Up (§6.8.3).
const SLOW_TX: Duration = Duration::from_secs(1);

/// What a session is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub detect_mult: u8,
    pub auth: Option<Auth>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes to the peer now.
    Send(Vec<u8>),
    /// The session changed state (old, new, the local diagnostic).
    Changed { from: State, to: State, diag: Diag },
}

/// Counters of one session.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub sent: u64,
    pub received: u64,
    pub up: u64,
    pub down: u64,
    pub discarded: u64,
}

#[derive(Debug, Clone)]
pub struct Session {
    params: Params,
    state: State,
    diag: Diag,
    local_discr: u32,
    remote_discr: u32,
    remote_state: State,
    /// What we advertise now (SLOW_TX when not Up), and what we advertised when the
    /// current poll sequence began: the older values rule until its Final arrives.
    tx_adv: Duration,
    rx_adv: Duration,
    tx_before_poll: Duration,
    rx_before_poll: Duration,
    remote_min_rx: Duration,
    remote_desired_tx: Duration,
    remote_detect_mult: u8,
    polling: bool,
    send_final: bool,
    next_tx: Instant,
    detect_at: Option<Instant>,
    admin_down: bool,
    /// Authentication sequence numbers: ours, and the peer's last accepted.
    xmit_seq: u32,
    rcv_seq: Option<u32>,
    rng: u32,
    up_since: Option<Instant>,
    pub counters: Counters,
}

/// What `portier status` shows of a session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    pub state: State,
    pub remote_state: State,
    pub diag: Diag,
    pub local_discr: u32,
    pub remote_discr: u32,
    /// Negotiated transmit interval and detection time, in milliseconds.
    pub tx_interval_ms: u64,
    pub detect_time_ms: u64,
    pub up_for_ms: Option<u64>,
    pub counters: Counters,
}

impl Session {
    /// A session in Down, starting to send at once. `seed` varies the jitter between
    /// sessions (the discriminator is a fine one).
    pub fn new(params: Params, local_discr: u32, now: Instant) -> Self {
        let rx = params.required_min_rx;
        Session {
            state: State::Down,
            diag: Diag::None,
            local_discr,
            remote_discr: 0,
            remote_state: State::Down,
            tx_adv: SLOW_TX.max(params.desired_min_tx),
            rx_adv: rx,
            tx_before_poll: SLOW_TX.max(params.desired_min_tx),
            rx_before_poll: rx,
            remote_min_rx: Duration::from_micros(1),
            remote_desired_tx: Duration::ZERO,
            remote_detect_mult: 0,
            polling: false,
            send_final: false,
            next_tx: now,
            detect_at: None,
            admin_down: false,
            xmit_seq: local_discr.rotate_left(16),
            rcv_seq: None,
            rng: local_discr | 1,
            up_since: None,
            counters: Counters::default(),
            params,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The state the peer last said it was in.
    pub fn remote_state(&self) -> State {
        self.remote_state
    }

    pub fn local_discr(&self) -> u32 {
        self.local_discr
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The transmit interval in force: the slower of what we want to send and what the peer
    /// wants to receive (§6.8.7), before jitter.
    fn tx_interval(&self) -> Duration {
        // A faster interval applies at once, a slower one once the poll completes.
        let ours = if self.polling {
            self.tx_adv.min(self.tx_before_poll)
        } else {
            self.tx_adv
        };
        ours.max(self.remote_min_rx)
    }

    /// The detection time (§6.8.4): the peer's multiplier times the slower of the interval we
    /// can receive at and the one it sends at.
    fn detect_time(&self) -> Duration {
        let rx = if self.polling {
            self.rx_adv.max(self.rx_before_poll)
        } else {
            self.rx_adv
        };
        rx.max(self.remote_desired_tx) * u32::from(self.remote_detect_mult.max(1))
    }

    /// 75-100% of the interval, 75-90% with a multiplier of 1 (§6.8.7).
    fn jittered(&mut self, interval: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        let span = if self.params.detect_mult == 1 { 15 } else { 25 };
        let pct = 75 + self.rng % (span + 1);
        interval * pct / 100
    }

    /// The earliest time `tick` has something to do.
    pub fn next_deadline(&self) -> Instant {
        match self.detect_at {
            Some(d) if d < self.next_tx => d,
            _ => self.next_tx,
        }
    }

    /// Changes the configured intervals, multiplier or authentication; a change of interval
    /// while Up runs a poll sequence.
    pub fn reconfigure(&mut self, params: Params, now: Instant) -> Vec<Action> {
        if params == self.params {
            return Vec::new();
        }
        self.params = params;
        if self.state == State::Up {
            self.start_poll(self.params.desired_min_tx, self.params.required_min_rx);
        } else {
            self.tx_adv = SLOW_TX.max(self.params.desired_min_tx);
            self.rx_adv = self.params.required_min_rx;
        }
        self.next_tx = now;
        self.tick(now)
    }

    /// AdminDown: tells the peer (diag 7) and stops detecting; `false` starts over in Down.
    pub fn set_admin_down(&mut self, down: bool, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if down == self.admin_down {
            return out;
        }
        self.admin_down = down;
        if down {
            self.change(State::AdminDown, Diag::AdministrativelyDown, &mut out);
            self.detect_at = None;
            self.send(now, &mut out);
        } else {
            self.change(State::Down, Diag::None, &mut out);
            self.next_tx = now;
        }
        out
    }

    fn start_poll(&mut self, tx: Duration, rx: Duration) {
        if !self.polling {
            self.tx_before_poll = self.tx_adv;
            self.rx_before_poll = self.rx_adv;
        }
        self.tx_adv = tx;
        self.rx_adv = rx;
        self.polling = true;
    }

    fn change(&mut self, to: State, diag: Diag, out: &mut Vec<Action>) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.diag = diag;
        match to {
            State::Up => {
                self.counters.up += 1;
                // Now the configured intervals, by a poll sequence.
                self.start_poll(self.params.desired_min_tx, self.params.required_min_rx);
            }
            _ => {
                if from == State::Up {
                    self.counters.down += 1;
                    self.up_since = None;
                }
                self.polling = false;
                self.tx_adv = SLOW_TX.max(self.params.desired_min_tx);
                self.rx_adv = self.params.required_min_rx;
            }
        }
        out.push(Action::Changed { from, to, diag });
    }

    /// A packet for this session (already matched to it by discriminator or address),
    /// with its raw bytes for authentication.
    pub fn receive(
        &mut self,
        now: Instant,
        bytes: &[u8],
        rx: &packet::Received,
    ) -> Result<Vec<Action>, Discard> {
        let c = &rx.control;
        if c.your_discr == 0 && !matches!(self.state, State::Down | State::AdminDown) {
            return Err(Discard::YourDiscriminator);
        }
        if c.your_discr != 0 && c.your_discr != self.local_discr {
            return Err(Discard::NoSession);
        }
        match (&self.params.auth, rx.authenticated) {
            (None, true) | (Some(_), false) => return Err(Discard::AuthMismatch),
            (Some(a), true) => {
                let seq = a.verify(bytes)?;
                if a.kind != packet::AuthType::Simple {
                    if let Some(last) = self.rcv_seq {
                        let window = 3 * u32::from(self.params.detect_mult);
                        let ahead = seq.wrapping_sub(last);
                        let ok = if a.kind.meticulous() {
                            (1..=window).contains(&ahead)
                        } else {
                            ahead <= window
                        };
                        if !ok {
                            return Err(Discard::AuthSequence);
                        }
                    }
                    self.rcv_seq = Some(seq);
                }
            }
            (None, false) => {}
        }
        self.counters.received += 1;
        let mut out = Vec::new();
        self.remote_discr = c.my_discr;
        self.remote_state = c.state;
        self.remote_min_rx = Duration::from_micros(u64::from(c.required_min_rx));
        self.remote_desired_tx = Duration::from_micros(u64::from(c.desired_min_tx));
        self.remote_detect_mult = c.detect_mult;
        if c.fin && self.polling {
            self.polling = false;
        }
        if self.state == State::AdminDown {
            return Ok(out);
        }
        match (self.state, c.state) {
            (State::Up | State::Init, State::AdminDown) | (State::Up, State::Down) => {
                self.change(State::Down, Diag::NeighborSignaledSessionDown, &mut out);
            }
            (State::Down, State::Down) => self.change(State::Init, Diag::None, &mut out),
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                self.change(State::Up, Diag::None, &mut out);
                self.up_since = Some(now);
            }
            _ => {}
        }
        // Only a session that has heard the peer can lose it.
        self.detect_at =
            matches!(self.state, State::Init | State::Up).then(|| now + self.detect_time());
        if c.poll {
            self.send_final = true;
            self.send(now, &mut out);
        } else if matches!(out.first(), Some(Action::Changed { .. })) {
            // A state change is news to the peer: tell it without waiting for the timer.
            self.send(now, &mut out);
        }
        Ok(out)
    }

    /// Timers: detection (the session goes Down, diag 1) and periodic transmission.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(at) = self.detect_at
            && now >= at
        {
            self.detect_at = None;
            if matches!(self.state, State::Init | State::Up) {
                self.change(State::Down, Diag::ControlDetectionTimeExpired, &mut out);
                self.remote_discr = 0;
                self.remote_min_rx = Duration::from_micros(1);
                self.rcv_seq = None;
            }
        }
        if now >= self.next_tx {
            self.send(now, &mut out);
        }
        out
    }

    fn send(&mut self, now: Instant, out: &mut Vec<Action>) {
        let interval = self.tx_interval();
        let wait = self.jittered(interval);
        self.next_tx = now + wait;
        if self.remote_min_rx.is_zero() {
            return;
        }
        let fin = std::mem::take(&mut self.send_final);
        let c = Control {
            diag: self.diag,
            state: self.state,
            poll: self.polling && !fin,
            fin,
            cpi: true,
            demand: false,
            detect_mult: self.params.detect_mult,
            my_discr: self.local_discr,
            your_discr: self.remote_discr,
            desired_min_tx: micros(self.tx_adv),
            required_min_rx: micros(self.rx_adv),
            required_min_echo_rx: 0,
        };
        let auth = self.params.auth.as_ref().map(|a| {
            if a.kind != packet::AuthType::Simple {
                self.xmit_seq = self.xmit_seq.wrapping_add(1);
            }
            (a, self.xmit_seq)
        });
        out.push(Action::Send(packet::encode(&c, auth)));
        self.counters.sent += 1;
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        Snapshot {
            state: self.state,
            remote_state: self.remote_state,
            diag: self.diag,
            local_discr: self.local_discr,
            remote_discr: self.remote_discr,
            tx_interval_ms: self.tx_interval().as_millis() as u64,
            detect_time_ms: self.detect_time().as_millis() as u64,
            up_for_ms: self
                .up_since
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            counters: self.counters.clone(),
        }
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bfd::packet::{AuthType, Received, decode};

    fn params(ms: u64) -> Params {
        Params {
            desired_min_tx: Duration::from_millis(ms),
            required_min_rx: Duration::from_millis(ms),
            detect_mult: 3,
            auth: None,
        }
    }

    fn sent(actions: &[Action]) -> Vec<Control> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(b) => Some(decode(b).expect("we send valid packets").control),
                _ => None,
            })
            .collect()
    }

    fn changes(actions: &[Action]) -> Vec<(State, State)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Changed { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }

    /// Delivers every packet `from` sends to `to`; returns `to`'s actions.
    fn deliver(now: Instant, actions: &[Action], to: &mut Session) -> Vec<Action> {
        let mut out = Vec::new();
        for a in actions {
            if let Action::Send(b) = a {
                let rx = decode(b).expect("valid");
                out.extend(to.receive(now, b, &rx).expect("accepted"));
            }
        }
        out
    }

    /// Two sessions exchanging packets on their timers until `until`; returns the time.
    fn run(a: &mut Session, b: &mut Session, mut now: Instant, until: Instant) -> Instant {
        while now < until {
            let next = a.next_deadline().min(b.next_deadline()).max(now);
            now = next.min(until);
            let from_a = a.tick(now);
            let back = deliver(now, &from_a, b);
            deliver(now, &back, a);
            let from_b = b.tick(now);
            let back = deliver(now, &from_b, a);
            deliver(now, &back, b);
            now += Duration::from_micros(1);
        }
        now
    }

    #[test]
    fn three_way_handshake_then_fast_timers_by_poll() {
        let t0 = Instant::now();
        let mut a = Session::new(params(50), 1, t0);
        let mut b = Session::new(params(50), 2, t0);
        // Down: one packet a second at most, advertising 1 s.
        let first = a.tick(t0);
        let c = sent(&first)[0];
        assert_eq!(
            (c.state, c.your_discr, c.desired_min_tx),
            (State::Down, 0, 1_000_000)
        );
        let b_acts = deliver(t0, &first, &mut b);
        assert_eq!(changes(&b_acts), vec![(State::Down, State::Init)]);
        let a_acts = deliver(t0, &b_acts, &mut a);
        assert_eq!(changes(&a_acts), vec![(State::Down, State::Up)]);
        // Up: a polls for its configured 50 ms; b answers with Final.
        let poll = sent(&a_acts);
        assert!(poll[0].poll && poll[0].desired_min_tx == 50_000, "{poll:?}");
        let b_acts = deliver(t0, &a_acts, &mut b);
        assert_eq!(changes(&b_acts), vec![(State::Init, State::Up)]);
        assert!(sent(&b_acts).iter().any(|c| c.fin));
        let now = run(&mut a, &mut b, t0, t0 + Duration::from_secs(3));
        assert_eq!((a.state(), b.state()), (State::Up, State::Up));
        let s = a.snapshot(now);
        assert_eq!((s.tx_interval_ms, s.detect_time_ms), (50, 150));
        // In the last second each side sent at 37.5-50 ms, never faster.
        let before = a.counters.sent;
        run(&mut a, &mut b, now, now + Duration::from_secs(1));
        let n = a.counters.sent - before;
        assert!((20..=27).contains(&n), "{n} packets in 1 s at 50 ms");
    }

    #[test]
    fn silence_is_detected_within_the_detection_time() {
        let t0 = Instant::now();
        let mut a = Session::new(params(50), 1, t0);
        let mut b = Session::new(params(50), 2, t0);
        let now = run(&mut a, &mut b, t0, t0 + Duration::from_secs(3));
        assert_eq!(a.state(), State::Up);
        // b goes silent: a declares it down once 3 x 50 ms pass without a packet.
        let mut t = now;
        let mut down_at = None;
        while t < now + Duration::from_secs(1) {
            t = a.next_deadline().max(t);
            let acts = a.tick(t);
            if changes(&acts).contains(&(State::Up, State::Down)) {
                down_at = Some(t);
                assert!(acts.iter().any(|x| matches!(
                    x,
                    Action::Changed {
                        diag: Diag::ControlDetectionTimeExpired,
                        ..
                    }
                )));
                break;
            }
            t += Duration::from_micros(1);
        }
        let gap = down_at.expect("detected") - now;
        assert!(gap <= Duration::from_millis(151), "{gap:?}");
        // Back to slow packets advertising 1 s, with no remote discriminator.
        let c = sent(&a.tick(a.next_deadline()))[0];
        assert_eq!(
            (c.state, c.your_discr, c.desired_min_tx),
            (State::Down, 0, 1_000_000)
        );
    }

    #[test]
    fn peer_signalled_down_and_admin_down() {
        let t0 = Instant::now();
        let mut a = Session::new(params(100), 1, t0);
        let mut b = Session::new(params(100), 2, t0);
        let now = run(&mut a, &mut b, t0, t0 + Duration::from_secs(2));
        let acts = b.set_admin_down(true, now);
        assert_eq!(changes(&acts), vec![(State::Up, State::AdminDown)]);
        let got = deliver(now, &acts, &mut a);
        assert_eq!(changes(&got), vec![(State::Up, State::Down)]);
        assert!(got.iter().any(|x| matches!(
            x,
            Action::Changed {
                diag: Diag::NeighborSignaledSessionDown,
                ..
            }
        )));
        b.set_admin_down(false, now);
        let later = run(&mut a, &mut b, now, now + Duration::from_secs(4));
        assert_eq!((a.state(), b.state()), (State::Up, State::Up));
        assert_eq!(a.snapshot(later).counters.up, 2);
    }

    #[test]
    fn wrong_discriminators_and_auth_are_discarded() {
        let t0 = Instant::now();
        let mut a = Session::new(params(100), 1, t0);
        let mut b = Session::new(params(100), 2, t0);
        let now = run(&mut a, &mut b, t0, t0 + Duration::from_secs(2));
        let mut c = sent(&b.tick(b.next_deadline()))[0];
        c.your_discr = 99;
        let bytes = packet::encode(&c, None);
        let rx = decode(&bytes).unwrap();
        assert_eq!(a.receive(now, &bytes, &rx), Err(Discard::NoSession));
        c.your_discr = 0;
        let bytes = packet::encode(&c, None);
        let rx = decode(&bytes).unwrap();
        assert_eq!(a.receive(now, &bytes, &rx), Err(Discard::YourDiscriminator));
        // Authentication on one side only.
        let key = Auth {
            kind: AuthType::MeticulousSha1,
            key_id: 1,
            key: b"k".to_vec(),
        };
        let mut secured = Session::new(
            Params {
                auth: Some(key.clone()),
                ..params(100)
            },
            3,
            t0,
        );
        let plain = packet::encode(&sent(&Session::new(params(100), 4, t0).tick(t0))[0], None);
        let rx = decode(&plain).unwrap();
        assert_eq!(secured.receive(t0, &plain, &rx), Err(Discard::AuthMismatch));
    }

    #[test]
    fn authenticated_sessions_come_up_and_replays_are_refused() {
        let t0 = Instant::now();
        let key = Auth {
            kind: AuthType::MeticulousMd5,
            key_id: 1,
            key: b"portier-lab".to_vec(),
        };
        let p = Params {
            auth: Some(key),
            ..params(100)
        };
        let mut a = Session::new(p.clone(), 1, t0);
        let mut b = Session::new(p, 2, t0);
        let now = run(&mut a, &mut b, t0, t0 + Duration::from_secs(2));
        assert_eq!((a.state(), b.state()), (State::Up, State::Up));
        let pkt = b.tick(b.next_deadline());
        let Some(Action::Send(bytes)) = pkt.first() else {
            panic!("b sends")
        };
        let rx: Received = decode(bytes).unwrap();
        a.receive(now, bytes, &rx).expect("fresh");
        // The same packet again: a meticulous sequence number must grow.
        assert_eq!(a.receive(now, bytes, &rx), Err(Discard::AuthSequence));
    }
}
