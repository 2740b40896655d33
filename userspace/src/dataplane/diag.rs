//! The XDP programs' opt-in diagnostics, userspace half: which program is attached (the plain
//! one, or its debug twin, see `dataplane_common::diag`), and the reader that turns their
//! aya-log records into tracing events.
//!
//! Two budgets keep a flood of drops out of the journal: the kernel side writes at most
//! `RECORDS_PER_CPU_SECOND` records per CPU per second (and says how many it refused), and
//! this reader passes at most [`LINES_PER_SECOND`] lines per second for the whole node,
//! counting the rest in one summary line per second.

use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya_log::EbpfLogger;
use dataplane_common::diag::{
    BALANCER_DEBUG, DECAP_DEBUG, EVENT_DECAP_DROP, EVENT_NEW_FLOW, EVENT_SUPPRESSED, event_name,
};
use dataplane_common::{DecapReason, Reason, programs};

use super::{Dataplane, DataplaneError, Decapsulator, persist, xdp_mut};

/// Lines the reader passes to tracing per second, whatever the CPU count.
pub const LINES_PER_SECOND: u32 = 100;

/// One record of a debug program, as the kernel wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpEvent {
    /// `drop`, `new_flow`, `decap_drop` or `suppressed`.
    pub event: &'static str,
    /// The counter's name (`drop_no_backend`, `conntrack_new`, ...); empty for `suppressed`.
    pub reason: &'static str,
    pub ifindex: u32,
    pub len: u32,
    pub proto: u8,
    pub src: Option<IpAddr>,
    pub sport: u16,
    pub dst: Option<IpAddr>,
    pub dport: u16,
    /// A new flow's next hop: the backend's MAC (DSR) or the router's towards it (IPIP).
    pub next_hop_mac: Option<String>,
    /// `suppressed`: records this CPU refused in its last second.
    pub count: u64,
}

impl XdpEvent {
    /// Reads one record's text (`event=1 reason=8 ifindex=2 ...`); `None` for anything else.
    pub fn parse(text: &str) -> Option<XdpEvent> {
        let mut e = XdpEvent {
            event: "",
            reason: "",
            ifindex: 0,
            len: 0,
            proto: 0,
            src: None,
            sport: 0,
            dst: None,
            dport: 0,
            next_hop_mac: None,
            count: 0,
        };
        let mut code = None;
        let mut reason = None;
        for field in text.split_whitespace() {
            let (k, v) = field.split_once('=')?;
            match k {
                "event" => code = Some(v.parse::<u32>().ok()?),
                "reason" => reason = Some(v.parse::<u32>().ok()?),
                "ifindex" => e.ifindex = v.parse().ok()?,
                "len" => e.len = v.parse().ok()?,
                "proto" => e.proto = v.parse().ok()?,
                "src" => e.src = Some(v.parse().ok()?),
                "sport" => e.sport = v.parse().ok()?,
                "dst" => e.dst = Some(v.parse().ok()?),
                "dport" => e.dport = v.parse().ok()?,
                "mac" => e.next_hop_mac = Some(v.to_string()),
                "count" => e.count = v.parse().ok()?,
                _ => return None,
            }
        }
        let code = code?;
        e.event = event_name(code);
        if e.event == "unknown" {
            return None;
        }
        if code != EVENT_SUPPRESSED {
            let r = reason?;
            e.reason = if code == EVENT_DECAP_DROP {
                DecapReason::ALL.get(r as usize)?.name()
            } else {
                Reason::from_index(r)?.name()
            };
        }
        if code != EVENT_NEW_FLOW {
            e.next_hop_mac = None;
        }
        Some(e)
    }

    /// The line an operator reads: `drop drop_no_backend 198.51.100.10:40000 -> 203.0.113.10:80 tcp`.
    pub fn summary(&self) -> String {
        if self.event == "suppressed" {
            return format!("{} records suppressed by one CPU's budget", self.count);
        }
        let proto = match self.proto {
            6 => "tcp".to_string(),
            17 => "udp".to_string(),
            1 => "icmp".to_string(),
            58 => "icmpv6".to_string(),
            4 => "ipip".to_string(),
            41 => "ip6ip6".to_string(),
            p => format!("proto {p}"),
        };
        let end = |a: Option<IpAddr>, port: u16| match (a, self.proto) {
            (None, _) => "?".to_string(),
            (Some(a), 6 | 17) => std::net::SocketAddr::new(a, port).to_string(),
            (Some(a), _) => a.to_string(),
        };
        let mut s = if self.src.is_some() {
            format!(
                "{} {} {} -> {} {proto}",
                self.event,
                self.reason,
                end(self.src, self.sport),
                end(self.dst, self.dport)
            )
        } else {
            format!(
                "{} {} (not IP, {} bytes)",
                self.event, self.reason, self.len
            )
        };
        if let Some(mac) = &self.next_hop_mac {
            s.push_str(" via ");
            s.push_str(mac);
        }
        s
    }
}

/// Collects what aya-log decodes; the reader takes it after each flush.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<String>>>);

impl log::Log for Collector {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(record.args().to_string());
        }
    }

    fn flush(&self) {}
}

/// The debug programs' ring buffer (aya-log's `AYA_LOGS`), decoded.
pub struct XdpLog {
    logger: EbpfLogger<Collector>,
    lines: Collector,
    /// `portier_lb` or `portier_decap`, for the tracing events.
    program: &'static str,
}

impl std::fmt::Debug for XdpLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpLog")
            .field("program", &self.program)
            .finish()
    }
}

impl AsFd for XdpLog {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.logger.as_fd()
    }
}

impl XdpLog {
    pub(super) fn new(ebpf: &mut aya::Ebpf, program: &'static str) -> Result<Self, DataplaneError> {
        let lines = Collector::default();
        let logger = EbpfLogger::init_with_logger(ebpf, lines.clone())
            .map_err(|e| DataplaneError::Log(e.to_string()))?;
        Ok(Self {
            logger,
            lines,
            program,
        })
    }

    pub fn program(&self) -> &'static str {
        self.program
    }

    /// Every record written since the last call (unparsable ones are skipped).
    pub fn read(&mut self) -> Vec<XdpEvent> {
        self.logger.flush();
        let lines = match self.lines.0.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(_) => return Vec::new(),
        };
        lines.iter().filter_map(|l| XdpEvent::parse(l)).collect()
    }

    /// Passes the records to tracing as they arrive, within `budget`; returns when the ring
    /// buffer's descriptor fails.
    pub async fn run(mut self) {
        let program = self.program;
        let registered = self.as_fd().try_clone_to_owned().and_then(|owned| {
            // SAFETY: the AsyncFd owns this duplicate of the ring buffer's descriptor; nothing
            // else closes or replaces it.
            unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    owned,
                    tokio::io::Interest::READABLE,
                )
            }
            .map_err(|e| e.into_parts().1)
        });
        let fd = match registered {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(program, "XDP debug log reader: {e}");
                return;
            }
        };
        let mut budget = LineBudget::new(LINES_PER_SECOND);
        let mut flush = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                ready = fd.readable() => match ready {
                    Ok(mut guard) => {
                        for e in self.read() {
                            if budget.admit(Instant::now()) {
                                emit(program, &e);
                            }
                        }
                        guard.clear_ready();
                    }
                    Err(e) => {
                        tracing::warn!(program, "XDP debug log reader: {e}");
                        return;
                    }
                },
                _ = flush.tick() => {}
            }
            if let Some(n) = budget.refused_summary(Instant::now()) {
                tracing::info!(target: "portier::xdp", program, suppressed = n,
                    "{n} XDP debug records suppressed in the last second (reader budget {LINES_PER_SECOND}/s)");
            }
        }
    }
}

/// One tracing event per record, with the fields as fields (JSON logs keep them).
fn emit(program: &'static str, e: &XdpEvent) {
    tracing::info!(
        target: "portier::xdp",
        program,
        event = e.event,
        reason = e.reason,
        ifindex = e.ifindex,
        len = e.len,
        proto = e.proto,
        src = e.src.map(|a| a.to_string()),
        sport = e.sport,
        dst = e.dst.map(|a| a.to_string()),
        dport = e.dport,
        next_hop_mac = e.next_hop_mac.as_deref(),
        "xdp {}",
        e.summary()
    );
}

/// At most `per_second` admissions in each second; counts the refused ones for one summary
/// once their second is over. Time is passed in.
#[derive(Debug)]
pub struct LineBudget {
    per_second: u32,
    start: Option<Instant>,
    used: u32,
    /// Refused in the current second.
    refused: u64,
}

impl LineBudget {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            start: None,
            used: 0,
            refused: 0,
        }
    }

    pub fn admit(&mut self, now: Instant) -> bool {
        let start = *self.start.get_or_insert(now);
        if now.duration_since(start) >= Duration::from_secs(1) && self.refused == 0 {
            self.start = Some(now);
            self.used = 0;
        }
        if self.used >= self.per_second {
            self.refused += 1;
            return false;
        }
        self.used += 1;
        true
    }

    /// The count of refused lines once their second is over; the next second starts then.
    pub fn refused_summary(&mut self, now: Instant) -> Option<u64> {
        let start = self.start?;
        if self.refused == 0 || now.duration_since(start) < Duration::from_secs(1) {
            return None;
        }
        self.start = Some(now);
        self.used = 0;
        Some(std::mem::take(&mut self.refused))
    }
}

/// How a part keeps one program's debug setting: `[dataplane] debug` applies at start and
/// whenever a reload changes it; `portier debug xdp on|off` in between, until then.
#[derive(Debug, Default)]
pub struct DebugSwitch {
    configured: Option<bool>,
    on: bool,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl DebugSwitch {
    /// A config's value: applied when it differs from the previous config's.
    pub fn configure(
        &mut self,
        wanted: bool,
        set: impl FnOnce(bool) -> Result<Option<XdpLog>, DataplaneError>,
    ) -> Result<(), DataplaneError> {
        if self.configured == Some(wanted) {
            return Ok(());
        }
        self.set(wanted, set)?;
        self.configured = Some(wanted);
        Ok(())
    }

    /// The operator's command.
    pub fn set(
        &mut self,
        on: bool,
        set: impl FnOnce(bool) -> Result<Option<XdpLog>, DataplaneError>,
    ) -> Result<(), DataplaneError> {
        if let Some(log) = set(on)? {
            let program = log.program();
            self.reader = Some(tokio::spawn(log.run()));
            tracing::debug!(program, "XDP debug log reader started");
        }
        if on != self.on {
            tracing::info!(
                on,
                "XDP debug {}: {}",
                if on { "on" } else { "off" },
                if on {
                    "each drop and new flow is logged (target portier::xdp), rate-limited"
                } else {
                    "the plain programs are attached again"
                }
            );
        }
        self.on = on;
        Ok(())
    }

    pub fn on(&self) -> bool {
        self.on
    }
}

impl Drop for DebugSwitch {
    fn drop(&mut self) {
        if let Some(r) = self.reader.take() {
            r.abort();
        }
    }
}

/// Loads `name` if it is not yet (the debug programs are verified only when first wanted).
fn ensure_loaded(ebpf: &mut aya::Ebpf, name: &str) -> Result<(), DataplaneError> {
    let prog = xdp_mut(ebpf, name)?;
    if prog.fd().is_err() {
        prog.load().map_err(DataplaneError::program(name))?;
    }
    Ok(())
}

/// Loads the program a switch hands the links to and, the first time debug goes on, makes
/// the reader of the log `program`'s debug copy writes (it stays valid for later toggles).
fn prepare_switch(
    ebpf: &mut aya::Ebpf,
    to: &str,
    on: bool,
    log_taken: &mut bool,
    program: &'static str,
) -> Result<Option<XdpLog>, DataplaneError> {
    ensure_loaded(ebpf, to)?;
    if !on || *log_taken {
        return Ok(None);
    }
    *log_taken = true;
    Ok(Some(XdpLog::new(ebpf, program)?))
}

impl Dataplane {
    /// Attaches `portier_lb_debug` (on) or `portier_lb` (off) in place of the other on every
    /// interface, atomically (`bpf_link_update` of the pinned link, as a restart's adoption
    /// does): no packet goes without a program, the maps are the same. The first time debug
    /// is turned on, returns the reader of its log, which the caller runs
    /// ([`XdpLog::run`]); it stays valid for later toggles.
    pub fn set_debug(&mut self, on: bool) -> Result<Option<XdpLog>, DataplaneError> {
        let name = if on {
            BALANCER_DEBUG
        } else {
            programs::BALANCER
        };
        let log = prepare_switch(
            &mut self.ebpf,
            name,
            on,
            &mut self.log_taken,
            programs::BALANCER,
        )?;
        if on == self.debug {
            return Ok(log);
        }
        if let Some(dir) = self.pin_dir.clone() {
            let names: Vec<String> = self.interfaces.iter().map(|i| i.name.clone()).collect();
            for interface in names {
                let prog = xdp_mut(&mut self.ebpf, name)?;
                persist::repoint(prog, name, &persist::link_pin(&dir, &interface))?;
            }
        }
        self.debug = on;
        Ok(log)
    }

    /// Whether the debug program is the one attached.
    pub fn debug(&self) -> bool {
        self.debug
    }

    pub fn attached_program(&self) -> &'static str {
        if self.debug {
            BALANCER_DEBUG
        } else {
            programs::BALANCER
        }
    }
}

impl Decapsulator {
    /// As [`Dataplane::set_debug`], for `portier_decap_debug` / `portier_decap`: each
    /// interface's link is handed from one program to the other (`bpf_link_update`).
    pub fn set_debug(&mut self, on: bool) -> Result<Option<XdpLog>, DataplaneError> {
        let (from, to) = if on {
            (programs::DECAP, DECAP_DEBUG)
        } else {
            (DECAP_DEBUG, programs::DECAP)
        };
        let log = prepare_switch(&mut self.ebpf, to, on, &mut self.log_taken, programs::DECAP)?;
        if on == self.debug {
            return Ok(log);
        }
        for id in std::mem::take(&mut self.links) {
            let link = xdp_mut(&mut self.ebpf, from)?
                .take_link(id)
                .map_err(DataplaneError::program(from))?;
            let id = xdp_mut(&mut self.ebpf, to)?
                .attach_to_link(link)
                .map_err(DataplaneError::program(to))?;
            self.links.push(id);
        }
        self.debug = on;
        Ok(log)
    }

    pub fn debug(&self) -> bool {
        self.debug
    }

    pub fn attached_program(&self) -> &'static str {
        if self.debug {
            DECAP_DEBUG
        } else {
            programs::DECAP
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_to_named_reasons() {
        let e = XdpEvent::parse(
            "event=1 reason=8 ifindex=2 len=60 proto=6 src=198.51.100.10 sport=40000 \
             dst=203.0.113.10 dport=80 mac=00:00:00:00:00:00",
        )
        .unwrap();
        assert_eq!((e.event, e.reason), ("drop", "drop_no_backend"));
        assert_eq!(e.next_hop_mac, None, "a drop has no next hop");
        assert_eq!(
            e.summary(),
            "drop drop_no_backend 198.51.100.10:40000 -> 203.0.113.10:80 tcp"
        );
        let e = XdpEvent::parse(
            "event=2 reason=13 ifindex=2 len=60 proto=17 src=2001:db8:c::10 sport=5353 \
             dst=2001:db8:f::10 dport=53 mac=02:00:00:00:00:21",
        )
        .unwrap();
        assert_eq!(
            e.summary(),
            "new_flow conntrack_new [2001:db8:c::10]:5353 -> [2001:db8:f::10]:53 udp via 02:00:00:00:00:21"
        );
        let e = XdpEvent::parse("event=3 reason=6 ifindex=3 len=20").unwrap();
        assert_eq!((e.event, e.reason), ("decap_drop", "drop_source"));
        let e = XdpEvent::parse("event=4 count=17").unwrap();
        assert_eq!((e.event, e.count), ("suppressed", 17));
        for bad in [
            "event=1 reason=99 ifindex=1 len=1",
            "event=9 count=1",
            "hello",
            "",
        ] {
            assert_eq!(XdpEvent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_reader_budget_caps_each_second_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut b = LineBudget::new(3);
        let admitted = (0..10).filter(|_| b.admit(t0)).count();
        assert_eq!(admitted, 3);
        assert_eq!(b.refused_summary(t0 + Duration::from_millis(500)), None);
        assert_eq!(b.refused_summary(t0 + Duration::from_secs(1)), Some(7));
        assert_eq!(b.refused_summary(t0 + Duration::from_secs(2)), None);
        assert!(b.admit(t0 + Duration::from_millis(1500)));
    }
}
