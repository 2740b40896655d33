//! Upstream connections kept alive between requests: per-worker lists of hyper senders (TLS
//! pools), per-worker lists of plain streams (the fast paths, and hyper for one exchange on
//! plain pools), and the one HTTP/2 connection every request to a server shares.

use crate::l7::body::Body;
use crate::l7::clock::coarse_ms;
use hyper::client::conn::{http1, http2};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;

/// This thread's idle-list shard: tokio workers each get their own, so returning and taking
/// connections rarely contends.
fn shard_index(shards: usize) -> usize {
    use std::cell::Cell;
    if let Some(worker) = crate::l7::workers::current() {
        return worker % shards;
    }
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = Cell::new(NEXT.fetch_add(1, Ordering::Relaxed));
    }
    INDEX.with(Cell::get) % shards
}

pub(super) enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Sender {
    pub(super) fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Polls readiness once: `None` when the connection cannot tell yet.
    pub(super) fn poll_ready_now(&mut self) -> Option<hyper::Result<()>> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let poll = match self {
            Sender::H1(s) => s.poll_ready(&mut cx),
            Sender::H2(s) => s.poll_ready(&mut cx),
        };
        match poll {
            std::task::Poll::Ready(r) => Some(r),
            std::task::Poll::Pending => None,
        }
    }

    pub(super) async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        }
    }
}

struct Idle {
    sender: Sender,
    /// `coarse_ms()` when it was given back.
    since: u64,
}

/// An idle upstream connection of the HTTP/1 fast path: a plain stream between messages.
struct RawIdle {
    stream: TcpStream,
    /// `coarse_ms()` when it was given back.
    since: u64,
}

/// One server's idle connections.
pub(super) struct IdleConnections {
    senders: Box<[Mutex<Vec<Idle>>]>,
    /// Per worker: a stream is registered with the event loop of the worker that opened it,
    /// so it is taken by another worker only when its own list is empty.
    streams: Box<[Mutex<Vec<RawIdle>>]>,
    h2: Mutex<Option<http2::SendRequest<Body>>>,
    /// The bound of each list: the server's connection limit, so every connection a burst
    /// opened comes back for the next burst rather than being closed and opened again (the
    /// server's slots bound how many exist anyway).
    bound: usize,
}

impl IdleConnections {
    pub(super) fn new(bound: usize) -> IdleConnections {
        let shards = std::thread::available_parallelism().map_or(2, |n| n.get());
        IdleConnections {
            senders: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            streams: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            h2: Mutex::new(None),
            bound,
        }
    }

    pub(super) fn clear(&self) {
        for shard in self.senders.iter() {
            if let Ok(mut list) = shard.lock() {
                list.clear();
            }
        }
        for shard in self.streams.iter() {
            if let Ok(mut list) = shard.lock() {
                list.clear();
            }
        }
        if let Ok(mut h2) = self.h2.lock() {
            *h2 = None;
        }
    }

    /// Both kinds of list, every worker (the shared HTTP/2 connection is not idle).
    pub(super) fn count(&self) -> usize {
        fn count<T>(lists: &[Mutex<Vec<T>>]) -> usize {
            lists.iter().map(|l| l.lock().map_or(0, |l| l.len())).sum()
        }
        count(&self.senders) + count(&self.streams)
    }

    /// An idle connection from this worker's shard, else one from another worker's: a
    /// connection driven by another thread costs cross-thread wake-ups but saves the
    /// backend a connection.
    pub(super) fn take(&self, max_idle: Duration) -> Option<Sender> {
        let shards = self.senders.len();
        let own = shard_index(shards);
        let oldest = coarse_ms().saturating_sub(max_idle.as_millis() as u64);
        (0..shards).find_map(|i| {
            let mut list = self.senders[(own + i) % shards].lock().ok()?;
            while let Some(idle) = list.pop() {
                if idle.since > oldest && !idle.sender.is_closed() {
                    return Some(idle.sender);
                }
            }
            None
        })
    }

    pub(super) fn put(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let shard = &self.senders[shard_index(self.senders.len())];
        if let Ok(mut list) = shard.lock()
            && list.len() < self.bound
        {
            list.push(Idle {
                sender,
                since: coarse_ms(),
            });
        }
    }

    /// An idle stream the server has not closed: this worker's first, else another's.
    pub(super) fn take_stream(&self, max_idle: Duration) -> Option<TcpStream> {
        let shards = self.streams.len();
        let own = shard_index(shards);
        let oldest = coarse_ms().saturating_sub(max_idle.as_millis() as u64);
        (0..shards).find_map(|i| {
            let mut list = self.streams[(own + i) % shards].lock().ok()?;
            while let Some(idle) = list.pop() {
                if idle.since <= oldest {
                    continue;
                }
                // No system call: the event loop has marked the stream readable if the
                // server closed it (or, wrongly, sent something) while it was idle.
                let mut probe = [0u8; 1];
                match idle.stream.try_read(&mut probe) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        return Some(idle.stream);
                    }
                    _ => continue,
                }
            }
            None
        })
    }

    pub(super) fn put_stream(&self, stream: TcpStream) {
        let shard = &self.streams[shard_index(self.streams.len())];
        if let Ok(mut list) = shard.lock()
            && list.len() < self.bound
        {
            list.push(RawIdle {
                stream,
                since: coarse_ms(),
            });
        }
    }

    /// The server's HTTP/2 connection, if one is open.
    pub(super) fn shared_h2(&self) -> Option<http2::SendRequest<Body>> {
        let shared = self.h2.lock().ok().and_then(|h| h.clone());
        shared.filter(|s| !s.is_closed())
    }

    pub(super) fn share_h2(&self, sender: &http2::SendRequest<Body>) {
        if let Ok(mut slot) = self.h2.lock() {
            *slot = Some(sender.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l7::pool::testing::h1_sender;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_connection_is_taken_from_another_workers_shard() {
        let idle = std::sync::Arc::new(IdleConnections::new(4));
        let (sender, _peer) = h1_sender().await;
        // Each std thread gets its own shard index.
        let lists = idle.clone();
        std::thread::spawn(move || lists.put(Sender::H1(sender)))
            .join()
            .unwrap();
        let lists = idle.clone();
        let taken = std::thread::spawn(move || lists.take(Duration::from_secs(60)))
            .join()
            .unwrap();
        assert!(taken.is_some(), "an idle connection was left unused");
        assert!(idle.take(Duration::from_secs(60)).is_none());
    }

    #[tokio::test]
    async fn lists_are_bounded_and_cleared() {
        let idle = IdleConnections::new(1);
        let (a, _pa) = h1_sender().await;
        let (b, _pb) = h1_sender().await;
        idle.put(Sender::H1(a));
        idle.put(Sender::H1(b));
        assert_eq!(
            idle.count(),
            1,
            "the list holds at most the server's connection limit"
        );
        idle.clear();
        assert_eq!(idle.count(), 0);
    }
}
