//! VRRP (RFC 5798 / RFC 9568, and RFC 3768 for v2): the codec and the pure state machine;
//! the I/O task that runs instances in the daemon.

pub mod announce;
pub mod machine;
pub mod packet;
