//! BIRD 2 in a namespace, its control socket and log in a private directory: the second
//! reference implementation the protocol tests run against (BFD, BGP).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns::{run, spawn_in};

pub struct Bird {
    dir: PathBuf,
    child: std::process::Child,
}

impl Bird {
    /// Starts `bird -f` in `ns` on `config`; waits for its control socket. `name` keeps
    /// instances apart (its directory is `$TMPDIR/portier-bird-NAME`).
    pub fn start(ns: &str, name: &str, config: &str) -> Result<Bird> {
        let dir = std::env::temp_dir().join(format!("portier-bird-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("bird.conf");
        std::fs::write(&conf, config)?;
        let sock = dir.join("bird.ctl");
        let child = spawn_in(
            ns,
            Path::new("/usr/sbin/bird"),
            &[
                "-f",
                "-c",
                &conf.to_string_lossy(),
                "-s",
                &sock.to_string_lossy(),
                "-P",
                &dir.join("bird.pid").to_string_lossy(),
            ],
            &dir.join("bird.log"),
        )?;
        let b = Bird { dir, child };
        crate::wait::until("bird control socket", Duration::from_secs(10), || {
            Ok(sock.exists())
        })?;
        Ok(b)
    }

    /// `birdc WHAT` (words split on spaces), its output.
    pub fn show(&self, what: &str) -> Result<String> {
        let sock = self.dir.join("bird.ctl");
        let mut args = vec!["-s", sock.to_str().context("path")?];
        args.extend(what.split(' '));
        run("birdc", &args)
    }

    /// What BIRD logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("bird.log")).unwrap_or_default()
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
