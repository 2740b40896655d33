//! A real browser for tests and the demo: Debian's headless Chromium, driven over the
//! DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages separated by NUL on
//! file descriptors 3 and 4). A pipe needs no port, no websocket client, and works from any
//! network namespace, while the browser itself runs in the namespace of the page it shows.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Debian's package `chromium` (installed by `cargo xtask setup`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// A DevTools call that takes longer has failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A headless Chromium with one page open; dropping it kills the browser and removes its
/// profile.
pub struct Browser {
    child: Child,
    to: File,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    profile: PathBuf,
}

/// The two ends the browser gets: it reads commands from fd 3 and writes answers to fd 4.
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")
}

impl Browser {
    /// Starts Chromium (in namespace `ns` if given, so `127.0.0.1` is that namespace's) and
    /// opens `url` in a page of `width` x `height` CSS pixels.
    pub fn open(ns: Option<&str>, url: &str, width: u32, height: u32) -> Result<Browser> {
        if !Path::new(CHROMIUM).exists() {
            bail!("{CHROMIUM} is missing: `cargo xtask setup` installs Debian's chromium");
        }
        let profile = std::env::temp_dir().join(format!(
            "portier-chromium-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        // Chromium's singleton socket goes to a directory of its own under TMPDIR, which a
        // killed browser leaves behind: inside the profile it goes with it.
        let tmp = profile.join("t");
        std::fs::create_dir_all(&tmp)?;
        let (cmd_read, cmd_write) = pipe()?;
        let (ans_read, ans_write) = pipe()?;
        let mut command = match ns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(CHROMIUM);
                c
            }
            None => Command::new(CHROMIUM),
        };
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (r, w) = (cmd_read.as_raw_fd(), ans_write.as_raw_fd());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec. The ends
        // are first moved above 10 so that placing one on 3 cannot overwrite the other.
        unsafe {
            command.pre_exec(move || {
                let r2 = libc::fcntl(r, libc::F_DUPFD, 10);
                let w2 = libc::fcntl(w, libc::F_DUPFD, 10);
                if r2 < 0 || w2 < 0 || libc::dup2(r2, 3) < 0 || libc::dup2(w2, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // A group of its own, so that dropping the browser can kill its helpers (zygote,
        // renderers) too: left alone they outlive it for a moment and write into the profile
        // after it was removed.
        command.process_group(0);
        let child = command.spawn().context("cannot start chromium")?;
        drop(cmd_read);
        drop(ans_write);
        let (tx, rx) = mpsc::channel();
        let reader = File::from(ans_read);
        std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            let mut buf = Vec::new();
            while r.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&buf)
                    && tx.send(v).is_err()
                {
                    return;
                }
                buf.clear();
            }
        });
        let mut b = Browser {
            child,
            to: File::from(cmd_write),
            from: rx,
            next_id: 0,
            session: String::new(),
            profile,
        };
        let target = b.call("Target.createTarget", json!({ "url": "about:blank" }))?;
        let target_id = target["targetId"]
            .as_str()
            .ok_or_else(|| anyhow!("no targetId in {target}"))?
            .to_string();
        let attached = b.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        )?;
        b.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no sessionId in {attached}"))?
            .to_string();
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )?;
        b.call("Page.navigate", json!({ "url": url }))?;
        Ok(b)
    }

    /// One DevTools command (on the page once attached); its `result`.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(0);
        self.to
            .write_all(&bytes)
            .with_context(|| format!("{method}: the browser is gone"))?;
        let deadline = std::time::Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .map_err(|_| anyhow!("{method}: no answer from the browser"))?;
            if v["id"] != json!(id) {
                continue; // an event
            }
            if let Some(e) = v.get("error") {
                bail!("{method}: {e}");
            }
            return Ok(v["result"].clone());
        }
    }

    /// Evaluates `expression` in the page; its value (JSON-serialisable).
    pub fn eval(&mut self, expression: &str) -> Result<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expression}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// The page's visible text, as rendered (`innerText` of the body).
    pub fn text(&mut self) -> Result<String> {
        Ok(self
            .eval("document.body ? document.body.innerText : ''")?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Makes the page see `prefers-color-scheme: dark` (or light).
    pub fn prefer_dark(&mut self, dark: bool) -> Result<()> {
        let value = if dark { "dark" } else { "light" };
        self.call(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": value }] }),
        )?;
        Ok(())
    }

    /// Writes a PNG of the whole page (beyond the window when it is longer) to `path`.
    pub fn screenshot(&mut self, path: &Path) -> Result<()> {
        let r = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        )?;
        let data = r["data"]
            .as_str()
            .ok_or_else(|| anyhow!("no screenshot data"))?;
        let png = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data)
            .context("screenshot data is not base64")?;
        std::fs::write(path, png).with_context(|| format!("cannot write {}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        // Killed helpers are reaped by init a moment later; until the group is empty one of
        // them can still create files in the profile.
        for _ in 0..250 {
            let _ = std::fs::remove_dir_all(&self.profile);
            let empty = nix::sys::signal::kill(group, None) == Err(nix::errno::Errno::ESRCH);
            if empty && !self.profile.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
