//! Client-side helpers for lab tests: plain HTTP/1.1 over std sockets, so a test controls the
//! exact 5-tuple and how a connection ends.

use anyhow::{Context, Result, bail};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A reply from a lab app: which host and container served it, and how many bytes came back.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The host part of the app's name (`host1` of `host1-todo2`).
    pub served_by: String,
    /// The app's full name, e.g. `host1-todo2`.
    pub container: String,
    pub bytes: usize,
}

/// Opens a TCP connection, optionally from a fixed local address and port.
pub fn connect(to: SocketAddr, from: Option<SocketAddr>, timeout: Duration) -> Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(from) = from {
        sock.set_reuse_address(true)?;
        sock.bind(&SockAddr::from(from))
            .with_context(|| format!("bind {from}"))?;
    }
    sock.connect_timeout(&SockAddr::from(to), timeout)
        .with_context(|| format!("connect {to}"))?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// Closes with RST instead of FIN, so the same 5-tuple can be used again at once (no TIME_WAIT).
pub fn abort(s: TcpStream) {
    let sock = Socket::from(s);
    let _ = sock.set_linger(Some(Duration::ZERO));
}

/// Sends one GET on an open connection and reads the reply.
pub fn get_on(s: &mut TcpStream, host: &str, path: &str) -> Result<Reply> {
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")?;
    read_reply(s)
}

/// One request for `todo.example` on a new connection, closed by RST afterwards.
pub fn get(to: SocketAddr, from: Option<SocketAddr>, path: &str) -> Result<Reply> {
    get_host(to, from, crate::lab::TODO_HOST, path)
}

/// One request for `host` on a new connection, closed by RST afterwards.
pub fn get_host(to: SocketAddr, from: Option<SocketAddr>, host: &str, path: &str) -> Result<Reply> {
    let mut s = connect(to, from, Duration::from_secs(3))?;
    let r = get_on(&mut s, host, path);
    abort(s);
    r
}

/// [`get_host`], telling whether the request was written whole before any failure.
/// `think`: a pause between connecting and sending.
fn get_host_sent(to: SocketAddr, host: &str, path: &str, think: Duration) -> (Result<Reply>, bool) {
    let mut s = match connect(to, None, Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) => return (Err(e), false),
    };
    if !think.is_zero() {
        std::thread::sleep(think);
    }
    if let Err(e) = write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n") {
        abort(s);
        return (Err(e.into()), false);
    }
    let r = read_reply(&mut s);
    abort(s);
    (r, true)
}

fn read_reply(s: &mut TcpStream) -> Result<Reply> {
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status)?;
    if !status.starts_with("HTTP/1.1 200") {
        bail!("unexpected status line {status:?}");
    }
    let mut len = 0usize;
    let mut served_by = String::new();
    let mut head_bytes = status.len();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            bail!("connection closed inside the headers");
        }
        head_bytes += line.len();
        let t = line.trim_end();
        if t.is_empty() {
            break;
        }
        if let Some((k, v)) = t.split_once(':') {
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse()?,
                "x-served-by" => served_by = v.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let container = served_by;
    let served_by = container.split('-').next().unwrap_or_default().to_string();
    Ok(Reply {
        served_by,
        container,
        bytes: head_bytes + len,
    })
}

/// One request of a [`Traffic`] run.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the request was sent.
    pub started: std::time::Instant,
    /// When it completed.
    pub at: std::time::Instant,
    /// The host that answered, or the error.
    pub result: std::result::Result<String, String>,
    /// The container that answered (`host1-todo2`), when one did.
    pub container: Option<String>,
    /// Whether the request had been written whole when it failed (or succeeded): a failure
    /// before that (refused, reset) is one a client may retry without risk.
    pub sent: bool,
}

/// Continuous client traffic from a namespace: one request per new connection, back to back,
/// until stopped (and never longer than `limit`, so a forgotten run ends by itself).
pub struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    samples: std::sync::Arc<std::sync::Mutex<Vec<Sample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(ns: &str, to: SocketAddr, limit: Duration) -> Result<Traffic> {
        Self::start_for(ns, to, crate::lab::TODO_HOST, limit)
    }

    /// Like [`Traffic::start`], for the HTTP host name `host`.
    pub fn start_for(ns: &str, to: SocketAddr, host: &str, limit: Duration) -> Result<Traffic> {
        Self::start_paced(ns, to, host, Duration::ZERO, limit)
    }

    /// Like [`Traffic::start_for`], a new request every `every` at most (back to back when a
    /// request takes longer).
    pub fn start_paced(
        ns: &str,
        to: SocketAddr,
        host: &str,
        every: Duration,
        limit: Duration,
    ) -> Result<Traffic> {
        Self::run(ns, to, host, every, Duration::ZERO, limit)
    }

    /// Back-to-back requests from a slow client: each connection waits `think` between
    /// connecting and sending its request (a server's stop must serve what it accepted).
    pub fn start_slow(
        ns: &str,
        to: SocketAddr,
        think: Duration,
        limit: Duration,
    ) -> Result<Traffic> {
        Self::run(ns, to, crate::lab::TODO_HOST, Duration::ZERO, think, limit)
    }

    fn run(
        ns: &str,
        to: SocketAddr,
        host: &str,
        every: Duration,
        think: Duration,
        limit: Duration,
    ) -> Result<Traffic> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s2, samples2) = (stop.clone(), samples.clone());
        let ns = ns.to_string();
        let host = host.to_string();
        let thread = std::thread::spawn(move || {
            let run = crate::netns::in_netns(&ns, || {
                let start = std::time::Instant::now();
                while !s2.load(Ordering::Relaxed) && start.elapsed() < limit {
                    let started = std::time::Instant::now();
                    let (reply, sent) = get_host_sent(to, &host, "/", think);
                    let reply = reply.map_err(|e| format!("{e:#}"));
                    let sample = Sample {
                        started,
                        at: std::time::Instant::now(),
                        container: reply.as_ref().ok().map(|r| r.container.clone()),
                        result: reply.map(|r| r.served_by),
                        sent,
                    };
                    if let Ok(mut v) = samples2.lock() {
                        v.push(sample);
                    }
                    let next = started + every;
                    if let Some(wait) = next.checked_duration_since(std::time::Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            });
            if let Err(e) = run {
                eprintln!("traffic: {e:#}");
            }
        });
        Ok(Traffic {
            stop,
            samples,
            thread: Some(thread),
        })
    }

    /// Samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.samples()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The longest time between two answered requests, counting from `after`: what a client saw of
/// a failover.
pub fn longest_pause_after(samples: &[Sample], after: std::time::Instant) -> Duration {
    let ok: Vec<std::time::Instant> = samples
        .iter()
        .filter(|s| s.result.is_ok())
        .map(|s| s.at)
        .collect();
    ok.windows(2)
        .filter(|w| w[1] > after)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// One reply of a [`UdpProbe`] flow: when it arrived, and the host that answered.
#[derive(Debug, Clone)]
pub struct Echo {
    pub at: std::time::Instant,
    pub host: String,
}

/// Each flow's source port and the replies it got.
pub type Flows = Vec<(u16, Vec<Echo>)>;

/// UDP probes to the lab's UDP service from several source ports (so that ECMP and Maglev
/// spread them), one datagram per flow every `every`, until stopped or `limit`: the failover
/// probe of DESIGN.md. Each flow's replies are kept in order.
pub struct UdpProbe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    flows: std::sync::Arc<std::sync::Mutex<Flows>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpProbe {
    /// One flow from each of `ports` in `ns`.
    pub fn start(
        ns: &str,
        to: SocketAddr,
        ports: &[u16],
        every: Duration,
        limit: Duration,
    ) -> Result<UdpProbe> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let sockets = crate::netns::in_netns(ns, || -> Result<Vec<std::net::UdpSocket>> {
            ports
                .iter()
                .map(|&port| {
                    let s = std::net::UdpSocket::bind(("0.0.0.0", port))?;
                    s.set_nonblocking(true)?;
                    s.connect(to)?;
                    Ok(s)
                })
                .collect()
        })??;
        let ports = sockets
            .iter()
            .map(|s| s.local_addr().map(|a| a.port()))
            .collect::<std::io::Result<Vec<u16>>>()?;
        let flows = std::sync::Arc::new(std::sync::Mutex::new(
            ports.iter().map(|p| (*p, Vec::new())).collect::<Vec<_>>(),
        ));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (stop2, flows2) = (stop.clone(), flows.clone());
        let thread = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let mut seq = 0u64;
            let mut buf = [0u8; 256];
            while !stop2.load(Ordering::Relaxed) && start.elapsed() < limit {
                seq += 1;
                for s in &sockets {
                    let _ = s.send(format!("probe {seq}").as_bytes());
                }
                let until = std::time::Instant::now() + every;
                while std::time::Instant::now() < until {
                    for (i, s) in sockets.iter().enumerate() {
                        while let Ok(n) = s.recv(&mut buf) {
                            let host = String::from_utf8_lossy(&buf[..n])
                                .split_whitespace()
                                .next()
                                .unwrap_or_default()
                                .to_string();
                            if let Ok(mut f) = flows2.lock() {
                                f[i].1.push(Echo {
                                    at: std::time::Instant::now(),
                                    host,
                                });
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        Ok(UdpProbe {
            stop,
            flows,
            thread: Some(thread),
        })
    }

    /// Each flow's source port and its replies so far.
    pub fn flows(&self) -> Flows {
        self.flows.lock().map(|f| f.clone()).unwrap_or_default()
    }

    pub fn stop(mut self) -> Flows {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.flows()
    }
}

impl Drop for UdpProbe {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The longest time without a reply on one flow, among gaps that end after `after` (or that
/// are still open at `end`).
pub fn longest_gap(
    echoes: &[Echo],
    after: std::time::Instant,
    end: std::time::Instant,
) -> Duration {
    let mut times: Vec<std::time::Instant> = echoes.iter().map(|e| e.at).collect();
    times.push(end);
    times
        .windows(2)
        .filter(|w| w[1] > after)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}
