//! The internal event bus: how the daemon's parts (L4, L7, VRRP, OSPF, BFD) learn about each
//! other without reaching into each other.

use std::net::IpAddr;
use tokio::sync::broadcast;

/// Something one part tells the others. Plain data, cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A VRRP instance became master (owns `vips`) or stopped being master.
    VrrpRole {
        instance: String,
        vips: Vec<IpAddr>,
        master: bool,
    },
    /// A part asks BFD to watch a neighbour on an interface (as FRR's `ip ospf bfd`), or
    /// stops asking. The BFD part keeps a session while any client or `[[bfd.peer]]` wants it.
    BfdWatch {
        client: &'static str,
        peer: IpAddr,
        interface: String,
        watch: bool,
    },
    /// A BFD session went up, or stopped being up (detection time expired, the peer said
    /// down, or the session was removed).
    BfdState {
        peer: IpAddr,
        interface: String,
        up: bool,
        /// Down on purpose, not a failure: this end or the peer went AdminDown, or the
        /// session was removed. Clients keep their sessions then (RFC 5882 §3.2).
        admin: bool,
    },
    /// A service's count of healthy backends changed.
    ServiceHealth {
        service: String,
        vip: Option<IpAddr>,
        healthy: usize,
        total: usize,
    },
}

/// Many publishers, many subscribers; a slow subscriber loses old events (and is told so by
/// `RecvError::Lagged`), never blocks a publisher.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: broadcast::Sender<Event>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self { tx }
    }

    pub fn publish(&self, event: Event) {
        // No subscriber is not an error: a node may run a single part.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_see_events_published_after_they_subscribed() {
        let bus = Bus::new();
        bus.publish(Event::ServiceHealth {
            service: "early".into(),
            vip: None,
            healthy: 0,
            total: 1,
        });
        let mut rx = bus.subscribe();
        let e = Event::VrrpRole {
            instance: "vip51".into(),
            vips: vec!["203.0.113.10".parse().unwrap()],
            master: true,
        };
        bus.publish(e.clone());
        assert_eq!(rx.recv().await.unwrap(), e);
    }
}
