//! The one shape every part of the daemon has (L4, decap, L7, VRRP, OSPF, and later BFD and
//! BGP), and the one loop that drives it.
//!
//! A part is built from the first config ([`Part::start`]) and then only reacts: to a new
//! config ([`Part::apply`]), a typed operator command ([`Part::command`]), an event another
//! part put on the bus ([`Part::event`]), something of its own it waits for ([`Part::wake`]),
//! and a periodic tick. After each of these the driver asks it to publish its status and
//! metrics. On shutdown the driver calls [`Part::stop`], where the part does its graceful exit
//! (withdraw routes, resign VRRP, drain requests).
//!
//! The driver ([`driver::drive`]) owns everything around that: acknowledging each config
//! generation to the orchestrator, answering commands, shutdown, and bus lag. Parts never see
//! the orchestrator (`daemon/`), and the orchestrator only builds parts and routes messages.

pub mod board;
pub mod command;
pub mod control;
pub mod driver;
pub mod prometheus;

use crate::bus::{Bus, Event};
use crate::config::Config;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use board::StatusBoard;
pub use command::{Command, CommandError, Reply};
pub use control::Control;

/// A configuration as handed to the parts: `generation` counts applied loads.
#[derive(Debug, Clone)]
pub struct ConfigUpdate {
    pub generation: u64,
    pub config: Arc<Config>,
}

/// What a part may use besides its config: the bus to tell the others, and how the process
/// was started.
#[derive(Debug, Clone)]
pub struct Env {
    pub bus: Bus,
    /// Undo everything in the kernel on exit (XDP programs, pins) instead of leaving the
    /// dataplane running for the next instance.
    pub teardown_on_exit: bool,
}

/// Why a part could not apply a config; the running config stays in force.
pub type ApplyError = Box<dyn std::error::Error + Send + Sync>;

/// What became of a part after a config: most keep running; a part whose section was removed
/// and that has nothing left to do retires (the driver stops it gracefully).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Running,
    Retired,
}

/// One part of the daemon. Every method but `start` runs on the driver's task, one at a time,
/// so a part needs no locking of its own state.
pub trait Part: Sized + Send + 'static {
    /// The name in `/status`, `/metrics`, logs and `/command/<name>/...`.
    const NAME: &'static str;
    /// How often [`Part::tick`] runs.
    const TICK: Duration;
    /// What [`Part::wake`] resolves with.
    type Wake: Send;

    /// Whether a config asks for this part at all.
    fn wanted(config: &Config) -> bool;

    /// Builds the part and applies the first config.
    fn start(
        env: Env,
        config: &Arc<Config>,
    ) -> impl Future<Output = Result<Self, ApplyError>> + Send;

    /// Applies a reloaded config. On error the part keeps what it ran before.
    fn apply(
        &mut self,
        config: &Arc<Config>,
    ) -> impl Future<Output = Result<Applied, ApplyError>> + Send;

    /// A runtime command from the operator. The default knows none.
    fn command(
        &mut self,
        command: Command,
    ) -> impl Future<Output = Result<Reply, CommandError>> + Send {
        async move {
            Err(CommandError::Unsupported {
                part: Self::NAME,
                verb: command.verb(),
            })
        }
    }

    /// Another part's news.
    fn event(&mut self, _event: &Event) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Something the part itself waits for (health transitions, a task's status). Must be
    /// cancel-safe: the driver drops it whenever something else comes first.
    fn wake(&mut self) -> impl Future<Output = Self::Wake> + Send {
        std::future::pending()
    }

    fn woken(&mut self, _wake: Self::Wake) -> impl Future<Output = ()> + Send {
        async {}
    }

    fn tick(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Writes the part's status (JSON) and metrics (`prometheus::Metrics` text) to the board.
    fn publish(&mut self, board: &board::PartBoard);

    /// The graceful exit: the daemon is stopping, or the part retired.
    fn stop(self) -> impl Future<Output = ()> + Send;
}
