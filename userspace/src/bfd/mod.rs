//! BFD (RFC 5880, single hop RFC 5881): fast detection of a neighbour that stops forwarding,
//! shared by the routing parts.
//!
//! - `packet`: the control packet codec and its authentication.
//! - `session`: one session's pure state machine (time and packets in, packets out).
//! - `io`: the UDP sockets (port 3784, TTL 255 both ways) and the sessions' timers.
//! - `part`: the part: sessions from `[[bfd.peer]]` and from other parts' requests on the
//!   bus (`Event::BfdWatch`, as FRR's `ip ospf bfd`), whose state changes it announces
//!   (`Event::BfdState`).

pub mod io;
pub mod packet;
pub mod part;
pub mod session;
