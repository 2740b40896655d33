//! Active health checks, shared by every part that has backends: a pure rise/fall state per
//! target, probes (TCP connect, HTTP request) at the edge, and a checker task per target that
//! reports only transitions.

mod checker;
mod probe;
mod state;

pub use checker::{CheckReport, Checker, Schedule, Transition};
pub use probe::{Probe, ProbeError, run_probe};
pub use state::HealthState;
