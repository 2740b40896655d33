//! How commands reach the running parts, with a deadline: an operator always gets an answer
//! within [`COMMAND_DEADLINE`], even from a part that is stuck in a long operation.

use super::command::{Command, CommandError, Reply};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a command may take before the operator is told the part is busy. The part still
/// carries out a command it had accepted; the answer just does not wait for it.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(1);

/// A command on its way to a part, with where to send the answer.
#[derive(Debug)]
pub struct Envelope {
    pub command: Command,
    pub reply: oneshot::Sender<Result<Reply, CommandError>>,
}

/// Why a reload was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file is invalid; its problems, one per line. The running config stays.
    #[error("{0}")]
    Refused(String),
    /// A part could not apply it.
    #[error("{0}")]
    Failed(String),
    #[error("the daemon is stopping")]
    Stopping,
}

type ReloadRequest = oneshot::Sender<Result<u64, ReloadError>>;

/// Routes admin commands to parts and reload requests to the orchestrator. Cheap to clone.
#[derive(Clone, Default)]
pub struct Control {
    parts: Arc<Mutex<BTreeMap<&'static str, mpsc::Sender<Envelope>>>>,
    reload: Option<mpsc::Sender<ReloadRequest>>,
}

impl Control {
    /// A control whose reloads arrive on the returned receiver.
    pub fn new() -> (Self, mpsc::Receiver<ReloadRequest>) {
        let (tx, rx) = mpsc::channel(4);
        (
            Self {
                parts: Arc::default(),
                reload: Some(tx),
            },
            rx,
        )
    }

    pub fn register(&self, part: &'static str, commands: mpsc::Sender<Envelope>) {
        if let Ok(mut parts) = self.parts.lock() {
            parts.insert(part, commands);
        }
    }

    pub fn unregister(&self, part: &str) {
        if let Ok(mut parts) = self.parts.lock() {
            parts.remove(part);
        }
    }

    pub fn running(&self) -> Vec<String> {
        self.parts
            .lock()
            .map(|p| p.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }

    /// Sends `command` to `part` and waits up to [`COMMAND_DEADLINE`] for its answer.
    pub async fn command(&self, part: &str, command: Command) -> Result<Reply, CommandError> {
        let tx = self
            .parts
            .lock()
            .ok()
            .and_then(|p| p.get(part).cloned())
            .ok_or_else(|| CommandError::NotRunning {
                part: part.to_string(),
                running: self.running(),
            })?;
        let (reply, rx) = oneshot::channel();
        tx.try_send(Envelope { command, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => CommandError::Busy(part.to_string()),
                mpsc::error::TrySendError::Closed(_) => CommandError::Gone(part.to_string()),
            })?;
        match tokio::time::timeout(COMMAND_DEADLINE, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(CommandError::Gone(part.to_string())),
            Err(_) => Err(CommandError::Busy(part.to_string())),
        }
    }

    /// Reloads the config file, as SIGHUP does; answers with the applied generation.
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        let tx = self.reload.as_ref().ok_or(ReloadError::Stopping)?;
        let (reply, rx) = oneshot::channel();
        tx.send(reply).await.map_err(|_| ReloadError::Stopping)?;
        rx.await.map_err(|_| ReloadError::Stopping)?
    }
}
