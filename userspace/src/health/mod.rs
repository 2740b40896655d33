//! Active health checks shared by the L4 and L7 parts: a pure rise/fall tracker and the
//! probes (TCP connect, HTTP GET) that feed it.

mod probe;
mod tracker;

pub use probe::{Probe, run_probe};
pub use tracker::Tracker;
