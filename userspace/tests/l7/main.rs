//! L7 conformance suite: raw sockets on loopback, asserting the exact bytes that reach the
//! backend and the client for routing, header handling, framing defences, balancing,
//! health, retries, timeouts, upgrades, PROXY protocol, HTTP/2, TLS and reloads.

mod coalesce;
mod fast;
mod h1;
mod h2;
mod harness;
mod pools;
#[path = "../ports/mod.rs"]
mod ports;
mod runtime;
mod splice;
mod timeouts;
mod tls;
mod upstream_tls;
mod vtc;
