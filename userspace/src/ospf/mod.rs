//! OSPFv2 (RFC 2328): announces the VIPs this node should attract to the upstream routers.
//!
//! Pure codecs and state machines (bytes in, decisions out, time passed in); the socket
//! I/O lives in `io`.

pub mod instance;
pub mod interface;
pub mod io;
pub mod lsa;
pub mod lsdb;
pub mod neighbor;
pub mod packet;
pub mod part;
