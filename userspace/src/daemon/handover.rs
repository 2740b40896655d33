//! Handing a node over to a new process without losing a connection (HAProxy's seamless
//! reload, nginx's binary upgrade): the new `portier run --take-over` binds its L7 listeners
//! beside the old process's (SO_REUSEPORT: one group, the kernel spreads new connections over
//! both), then stops the old one (SIGTERM: it closes its listeners, whose queued connections
//! the kernel moves to ours when `net.ipv4.tcp_migrate_req = 1`, and drains its in-flight
//! requests), waits for it to exit and only then starts the parts that must be alone on a node
//! (XDP, VRRP, OSPF, BGP, BFD, the admin API).
//!
//! Who runs the node is told by the pid file beside its admin socket (`/run/portier/<node>.pid`
//! by default): its pid, under an exclusive `flock` held for the process's life (the kernel
//! drops it however the process dies, so a stale file is told apart from a running daemon
//! without trusting the pid). Beside the socket, because that is what names one running
//! daemon: two of one node name (tests, namespaces) have two sockets.

use crate::config::AdminConfig;
use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use tokio::io::unix::AsyncFd;

/// The sysctl that makes a closing listener hand its queued connections to another socket of
/// its SO_REUSEPORT group instead of resetting them (Linux 5.14+).
pub const MIGRATE_SYSCTL: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// The admin socket's path with the extension `pid`.
pub fn pid_path(admin: &AdminConfig, node: &str) -> PathBuf {
    admin.socket_path(node).with_extension("pid")
}

fn open(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

fn try_lock(file: &File) -> bool {
    // SAFETY: flock on a descriptor we own; no memory is shared with the kernel.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// This process runs the node: the pid file, locked until the process ends.
#[derive(Debug)]
pub struct PidFile {
    _file: File,
}

impl PidFile {
    /// Takes the node; fails, naming the running process, when another holds it.
    pub fn acquire(admin: &AdminConfig, node: &str) -> Result<PidFile> {
        let path = pid_path(admin, node);
        let mut file = open(&path)?;
        if !try_lock(&file) {
            let pid = read_pid(&mut file).map_or("?".to_string(), |p| p.to_string());
            bail!(
                "node {node} is already running (pid {pid}, {}); to replace it without losing \
                 a connection: portier run --take-over (or SIGUSR2 to it)",
                path.display()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(PidFile { _file: file })
    }
}

fn read_pid(file: &mut File) -> Option<i32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok().filter(|p| *p > 0)
}

/// The process that runs the node now, held by a pidfd so that neither the signal nor the wait
/// can reach another process that got its pid.
pub struct Predecessor {
    pub pid: i32,
    pidfd: AsyncFd<OwnedFd>,
}

impl Predecessor {
    /// The running daemon of `node`, if there is one (the pid file is locked).
    pub fn find(admin: &AdminConfig, node: &str) -> Result<Option<Predecessor>> {
        let path = pid_path(admin, node);
        if !path.exists() {
            return Ok(None);
        }
        let mut file = open(&path)?;
        if try_lock(&file) {
            // Nobody holds it: what a killed daemon left behind.
            return Ok(None);
        }
        let pid = read_pid(&mut file)
            .with_context(|| format!("{}: locked but holds no pid", path.display()))?;
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            bail!("pidfd_open({pid}) of the running node {node}: {e}");
        }
        // SAFETY: the descriptor was just returned to us and nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // Between the lock test and pidfd_open the daemon may have exited and its pid been
        // reused: the lock, taken only by portier, must still be held.
        if try_lock(&file) {
            return Ok(None);
        }
        // SAFETY: an OwnedFd's descriptor stays open and the same until it is dropped.
        let pidfd = unsafe { AsyncFd::register(owned) }.map_err(|e| e.into_parts().1)?;
        Ok(Some(Predecessor { pid, pidfd }))
    }

    /// SIGTERM: stop accepting, drain, exit.
    pub fn terminate(&self) -> Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// SIGKILL, for a process that outlived its drain.
    pub fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    fn signal(&self, signal: i32) -> Result<()> {
        // SAFETY: pidfd_send_signal(2) with our pidfd, a signal number and no siginfo.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.get_ref().as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            // Already gone: nothing left to stop.
            if e.raw_os_error() != Some(libc::ESRCH) {
                bail!("cannot signal pid {}: {e}", self.pid);
            }
        }
        Ok(())
    }

    /// Resolves once the process has exited (a pidfd polls readable then).
    pub async fn exited(&self) -> Result<()> {
        let mut guard = self.pidfd.readable().await?;
        guard.retain_ready();
        Ok(())
    }
}

/// Turns `net.ipv4.tcp_migrate_req` on in this network namespace when it is off: without it,
/// connections queued on the old process's listeners when it closes them are reset rather
/// than handed to ours. It changes nothing for sockets outside SO_REUSEPORT groups, and
/// for those in one only that a closing listener's queue moves instead of being reset.
pub fn enable_migration() {
    match std::fs::read_to_string(MIGRATE_SYSCTL) {
        Ok(v) if v.trim() == "1" => {}
        Ok(_) => match std::fs::write(MIGRATE_SYSCTL, "1") {
            Ok(()) => tracing::info!("set net.ipv4.tcp_migrate_req = 1 for the hand-over"),
            Err(e) => tracing::warn!(
                "cannot set net.ipv4.tcp_migrate_req = 1 ({e}): connections queued on the old \
                 process's listeners will be reset when it closes them"
            ),
        },
        Err(e) => tracing::warn!(
            "{MIGRATE_SYSCTL}: {e}: queued connections may be reset during the hand-over \
             (Linux 5.14 or later migrates them)"
        ),
    }
}

/// Starts the successor of this process (SIGUSR2): the same binary path it was started by
/// (after a package upgrade, the new binary there), `run --take-over` on the same config.
/// It inherits the log and systemd's notification socket.
pub fn spawn_successor(config: &Path, teardown_on_exit: bool) -> Result<tokio::process::Child> {
    let program = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .map_or_else(std::env::current_exe, Ok)
        .context("the path of the portier binary")?;
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg("run").arg("-c").arg(config).arg("--take-over");
    if teardown_on_exit {
        cmd.arg("--teardown-on-exit");
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {}", program.display()))
}
