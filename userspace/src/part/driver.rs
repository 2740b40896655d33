//! The one event loop every part runs in.

use super::board::{PartBoard, StatusBoard};
use super::control::Envelope;
use super::{Applied, ApplyError, ConfigUpdate, Env, Part};
use crate::bus::Bus;
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{error, info, warn};

/// A part's acknowledgment of a config generation.
#[derive(Debug)]
pub struct Ack {
    pub part: &'static str,
    pub generation: u64,
    pub result: Result<(), ApplyError>,
}

/// What the orchestrator gives a part's driver.
pub struct Link {
    /// The current config; changes on every accepted reload.
    pub config: watch::Receiver<ConfigUpdate>,
    pub bus: Bus,
    /// Becomes `true` when the daemon stops.
    pub shutdown: watch::Receiver<bool>,
    pub board: StatusBoard,
    pub commands: mpsc::Receiver<Envelope>,
    pub acks: mpsc::UnboundedSender<Ack>,
    pub teardown_on_exit: bool,
}

impl Link {
    fn ack(&self, part: &'static str, generation: u64, result: Result<(), ApplyError>) {
        let _ = self.acks.send(Ack {
            part,
            generation,
            result,
        });
    }
}

/// Starts `P` on the current config and runs it until shutdown (or until it retires).
/// Returns an error only when the part could not start.
pub async fn drive<P: Part>(mut link: Link) -> Result<(), String> {
    let board = PartBoard::new(link.board.clone(), P::NAME);
    // Subscribed before the part starts, so nothing another part says meanwhile is lost.
    let mut bus = link.bus.subscribe();
    let ConfigUpdate { generation, config } = link.config.borrow_and_update().clone();
    let env = Env {
        bus: link.bus.clone(),
        teardown_on_exit: link.teardown_on_exit,
    };
    let mut part = match P::start(env, &config).await {
        Ok(p) => p,
        Err(e) => {
            let why = chain(&*e);
            link.ack(P::NAME, generation, Err(e));
            return Err(why);
        }
    };
    link.ack(P::NAME, generation, Ok(()));
    part.publish(&board);

    let mut tick = tokio::time::interval(P::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = link.config.changed() => {
                if changed.is_err() {
                    break;
                }
                let ConfigUpdate { generation, config } = link.config.borrow_and_update().clone();
                let result = part.apply(&config).await;
                let retired = matches!(result, Ok(Applied::Retired));
                match &result {
                    Ok(_) => info!(part = P::NAME, generation, "configuration applied"),
                    Err(e) => error!(part = P::NAME, "reload failed, the running configuration stays: {}", chain(&**e)),
                }
                link.ack(P::NAME, generation, result.map(|_| ()));
                part.publish(&board);
                if retired {
                    info!(part = P::NAME, "section removed: stopping");
                    break;
                }
            }
            Some(Envelope { command, reply }) = link.commands.recv() => {
                let _ = reply.send(part.command(command).await);
                part.publish(&board);
            }
            event = bus.recv() => match event {
                Ok(e) => part.event(&e).await,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(part = P::NAME, "missed {n} bus events; state catches up with the next ones");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            wake = part.wake() => {
                part.woken(wake).await;
                part.publish(&board);
            }
            _ = tick.tick() => {
                part.tick().await;
                part.publish(&board);
            }
            changed = link.shutdown.changed() => {
                if changed.is_err() || *link.shutdown.borrow() {
                    break;
                }
            }
        }
    }
    // Commands that arrive from here on are answered "gone" by the dropped receiver.
    drop(link.commands);
    part.stop().await;
    Ok(())
}

/// An error with its causes, `a: b: c`, for logs and replies.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
