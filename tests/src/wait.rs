//! Awaiting events instead of sleeping: poll a condition until it holds or a deadline passes.

use anyhow::{Result, bail};
use std::time::{Duration, Instant};

/// Polls `f` every 10 ms until it holds and returns how long that took; an error naming
/// `what` once `timeout` has passed.
pub fn until(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<bool>,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if f()? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
