//! Debian's FRR (zebra + ospfd) in a namespace, with its own config, pid files and sockets in
//! a private directory so several can run side by side. Dropping it stops both daemons.

use anyhow::{Context, Result, bail};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::netns::{run, spawn_in};

pub struct Frr {
    pub dir: PathBuf,
    children: Vec<Child>,
    names: Vec<String>,
    ns: String,
    name: String,
}

impl Frr {
    /// Starts zebra and ospfd in `ns` with `config` (frr.conf syntax). `name` must be unique
    /// among running FRR instances (it is the pathspace).
    pub fn start(ns: &str, name: &str, config: &str) -> Result<Frr> {
        Self::start_daemons(ns, name, config, &["zebra", "ospfd"])
    }

    /// Starts zebra and then each of `daemons` (`ospfd`, `bfdd`, `bgpd`) in `ns`.
    pub fn start_daemons(ns: &str, name: &str, config: &str, daemons: &[&str]) -> Result<Frr> {
        let dir = dir(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        // The daemons drop to user frr (root is not in the frrvty group they insist on).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
        let conf = dir.join("frr.conf");
        std::fs::write(&conf, config)?;
        let mut frr = Frr {
            dir: dir.clone(),
            children: Vec::new(),
            names: Vec::new(),
            ns: ns.to_string(),
            name: name.to_string(),
        };
        for &daemon in daemons {
            frr.spawn(daemon)?;
        }
        Ok(frr)
    }

    /// Starts `daemon` (again, after `kill`: as a router's restart).
    pub fn spawn(&mut self, daemon: &str) -> Result<()> {
        let (ns, name, dir) = (self.ns.clone(), self.name.clone(), self.dir.clone());
        let conf = dir.join("frr.conf");
        let frr = self;
        {
            let program = Path::new("/usr/lib/frr").join(daemon);
            let pid = dir.join(format!("{daemon}.pid"));
            let zsock = dir.join("zserv.api");
            let args = [
                "-N",
                &name,
                "-f",
                path_str(&conf)?,
                "-i",
                path_str(&pid)?,
                "-z",
                path_str(&zsock)?,
                "--vty_socket",
                path_str(&dir)?,
                "-u",
                "frr",
                "-g",
                "frr",
            ];
            let log = dir.join(format!("{daemon}.log"));
            let ready = if daemon == "zebra" {
                zsock.clone()
            } else {
                dir.join(format!("{daemon}.vty"))
            };
            let _ = std::fs::remove_file(&ready);
            let child = spawn_in(&ns, &program, &args, &log)?;
            match frr.names.iter().position(|n| n == daemon) {
                Some(i) => frr.children[i] = child,
                None => {
                    frr.children.push(child);
                    frr.names.push(daemon.to_string());
                }
            }
            // The others need zebra's socket; wait for it rather than sleeping.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !ready.exists() {
                if Instant::now() > deadline {
                    bail!("{daemon} did not start; see {}", log.display());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// `vtysh -c C1 -c C2 ...`: a configuration change in one session.
    pub fn vtysh_lines(&self, commands: &[&str]) -> Result<String> {
        let mut args = vec!["--vty_socket", path_str(&self.dir)?];
        for c in commands {
            args.extend(["-c", c]);
        }
        run("vtysh", &args)
    }

    /// `vtysh -c COMMAND` against this instance.
    pub fn vtysh(&self, command: &str) -> Result<String> {
        run(
            "vtysh",
            &["--vty_socket", path_str(&self.dir)?, "-c", command],
        )
    }

    /// Neighbour states by router ID, from `show ip ospf neighbor json`.
    pub fn neighbor_state(&self, router_id: &str) -> Result<Option<String>> {
        let text = self.vtysh("show ip ospf neighbor json")?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("vtysh said: {text}"))?;
        let entry = &json["neighbors"][router_id];
        // FRR 8.4 lists neighbours as an array per router ID.
        let first = if entry.is_array() { &entry[0] } else { entry };
        Ok(first["nbrState"].as_str().map(str::to_owned))
    }

    /// Kills one daemon at once (SIGKILL): it goes silent, as a crashed router would.
    pub fn kill(&mut self, daemon: &str) -> Result<()> {
        let i = self
            .names
            .iter()
            .position(|n| n == daemon)
            .with_context(|| format!("{daemon} is not running"))?;
        self.children[i].kill()?;
        self.children[i].wait()?;
        Ok(())
    }

    pub fn log(&self, daemon: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{daemon}.log"))).unwrap_or_default()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the instance `name` keeps its config, pid files, sockets and logs.
pub fn dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("portier-frr-{name}"))
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

/// Interface config lines for OSPF with the lab timers.
pub fn interface_config(ifname: &str, p2p: bool, priority: u8, md5: Option<&str>) -> String {
    let mut c = format!(
        "interface {ifname}\n ip ospf hello-interval 1\n ip ospf dead-interval 4\n ip ospf retransmit-interval 2\n ip ospf priority {priority}\n"
    );
    if p2p {
        c.push_str(" ip ospf network point-to-point\n");
    }
    if let Some(key) = md5 {
        c.push_str(&format!(
            " ip ospf authentication message-digest\n ip ospf message-digest-key 1 md5 {key}\n"
        ));
    }
    c.push_str("!\n");
    c
}
