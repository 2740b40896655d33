//! VRRP (RFC 5798 / RFC 9568, and RFC 3768 for v2): the codec and the pure state machine;
//! the daemon part that runs the configured instances, feeds them tracked-object changes,
//! and publishes their state and counters.

pub mod announce;
pub mod instance;
pub mod io;
pub mod machine;
pub mod no_accept;
pub mod packet;
pub mod part;
