//! BGP-4 speaker core (issue 13): announces the VIPs as /32 and /128 routes to edge routers.
//!
//! - [`packet`]: the message codec (RFC 4271, capabilities, RFC 7606 error handling).
//! - [`prefix`]: prefixes and address families.
//! - [`config`]: peer configuration and the routes to announce.
//! - [`session`]: the per-peer session state machine, pure.

pub mod config;
pub mod packet;
pub mod prefix;
pub mod session;
