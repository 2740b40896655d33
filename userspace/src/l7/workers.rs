//! The proxy's threads: each runs its own single-threaded event loop and accepts on its own
//! SO_REUSEPORT socket of every listener, so a connection, its requests and the upstream
//! connections they use stay on one thread. No task migrates and no wake-up crosses
//! threads on the request path (the model of HAProxy's and nginx's workers).

use crate::l7::coalesce::Coalesce;
use std::cell::Cell;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the proxy worker running this code, if it is one.
pub fn current() -> Option<usize> {
    WORKER.with(Cell::get)
}

struct Worker {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Tasks run between two looks at the sockets: tokio's default. 16 was chosen on
/// 2026-11-26 to keep HTTP/2 events from waiting behind hundreds of ready streams; on
/// 2026-12-03 four matrix runs with the two settings as portier and baseline gave 61 the
/// same or lower CPU per request in every row they had (HTTP/2 0.88-0.99 of 16's, 256
/// keep-alive 0.91-0.99) at no higher p99: fewer epoll_wait calls, more events each.
const EVENT_INTERVAL: u32 = 61;

pub struct Workers {
    workers: Vec<Worker>,
}

impl Workers {
    /// Starts `count` workers; 0 means one per CPU this process may use.
    pub fn start(count: u32, coalesce: Arc<Coalesce>) -> std::io::Result<Workers> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            let coalesce = coalesce.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .event_interval(EVENT_INTERVAL)
                .on_thread_park(move || coalesce.before_park())
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            // Logs go where the starting thread's go (a scoped subscriber in tests, the
            // global one in the daemon).
            let dispatch = tracing::dispatcher::get_default(Clone::clone);
            let thread = std::thread::Builder::new()
                .name(format!("l7-worker-{index}"))
                .spawn(move || {
                    let _log = tracing::dispatcher::set_default(&dispatch);
                    WORKER.with(|w| w.set(Some(index)));
                    // The loop runs spawned tasks until told to stop; dropping the runtime
                    // then cancels whatever is left (listeners have drained by then).
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            workers.push(Worker {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        tracing::info!(workers = count, "L7 workers started");
        Ok(Workers { workers })
    }

    pub fn handles(&self) -> impl Iterator<Item = &Handle> {
        self.workers.iter().map(|w| &w.handle)
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if let Some(stop) = w.stop.take() {
                let _ = stop.send(());
            }
        }
        // Joining from inside an async context would block its thread; the workers end on
        // their own once told to stop.
        if Handle::try_current().is_err() {
            for w in &mut self.workers {
                if let Some(t) = w.thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_their_worker_and_workers_stop() {
        let workers = Workers::start(2, Coalesce::new(0, 0)).expect("start workers");
        assert_eq!(workers.len(), 2);
        let seen: Vec<Option<usize>> = workers
            .handles()
            .map(|h| {
                let (tx, rx) = std::sync::mpsc::channel();
                h.spawn(async move {
                    let _ = tx.send(current());
                });
                rx.recv().expect("worker answers")
            })
            .collect();
        assert_eq!(seen, [Some(0), Some(1)]);
        assert_eq!(current(), None);
        drop(workers);
    }
}
