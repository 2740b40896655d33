//! `cargo xtask bench l7`: requests/s, p99 latency and CPU time per request of portier's L7
//! proxy against Debian's HAProxy with the same routes, and straight to the backend, in one
//! run on the same cores.
//!
//! Everything runs on loopback. CPU 1 holds the proxy under test (portier with its tokio
//! workers, or HAProxy with one thread); CPU 0 holds the load generator and the backend
//! (nginx, one worker), the same for all three targets, and both proxies send nginx the same
//! request (X-Forwarded-For their only added field). Shapes: `get`, HTTP/1.1 GET with wrk,
//! 64 keep-alive connections; `post`, the same with a 2 KB request body (a wrk Lua script);
//! `h2c`, HTTP/2 with h2load, 64 connections with 10 streams each, prior knowledge.
//! `--baseline PATH` adds another portier binary (an earlier build) as a fourth target, so a
//! change is measured before and after in one run; `--shapes post,get` picks shapes;
//! `--portier PATH` measures that binary instead of building the tree.
//!
//! `--matrix` runs the rows of issue 17 instead (`--shapes get1k-close,get1k-256` picks
//! among them by name), each on portier and HAProxy (and the
//! baseline if given; no direct run) in rounds whose order turns, 7 s per run, about eight
//! minutes in all with three rounds: GET and POST 2 KB with 64 keep-alive connections, GET 1 KB with 256, GET
//! 1 KB with a connection per request, TLS (a self-signed ECDSA P-256 certificate made with
//! openssl) keep-alive and with a handshake per request, a 64 KB response, a 1 MB upload,
//! HTTP/2 over TLS and h2c. It prints a Markdown table of the medians, then each round's
//! portier / HAProxy ratios. The table's load columns are CPU 0's (the client's and nginx's)
//! time per request and busy share in each proxy's runs, from /proc/stat: a row whose load
//! CPU is busy near 100% is bound by the load, not by the proxy under test. `--rounds N` sets the number of rounds (3).
//!
//! `--proxy-cpu PCT` caps each proxy at PCT% of CPU 1 (see cpu_budget.rs): without it, in
//! the HTTP/1 shapes CPU 0 runs out first and requests/s follows the load generator.

use crate::cpu_budget::CpuBudget;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BACKEND_H1: u16 = 18080;
const BACKEND_H2: u16 = 18081;
const PORTIER_H1: u16 = 28080;
const PORTIER_H2: u16 = 28081;
const PORTIER_TLS: u16 = 28443;
const BASELINE_H1: u16 = 28082;
const BASELINE_H2: u16 = 28083;
const BASELINE_TLS: u16 = 28444;
const HAPROXY_H1: u16 = 38080;
const HAPROXY_H2: u16 = 38081;
const HAPROXY_TLS: u16 = 38443;
const PROXY_CPU: &str = "1";
const LOAD_CPU: &str = "0";
/// Seconds per run of the plain bench and of the matrix (ten rows, which must fit in about
/// ten minutes).
const DURATION_S: u32 = 10;
const MATRIX_DURATION_S: u32 = 7;
/// The request body of the `post` shape.
const POST_BYTES: usize = 2048;

/// What one run of the load generator does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    /// wrk, HTTP/1.1: GETs of `path`, or POSTs to `/` of a body of `post` bytes (a Lua
    /// script); `close` sends `Connection: close`, so each request has its own connection.
    Wrk {
        tls: bool,
        path: &'static str,
        connections: u32,
        post: Option<usize>,
        close: bool,
    },
    /// h2load, 10 streams on each connection: h2c by prior knowledge, or h2 by TLS ALPN.
    H2load { tls: bool, connections: u32 },
}

#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    title: &'static str,
    load: Load,
}

const fn wrk_shape(
    name: &'static str,
    title: &'static str,
    tls: bool,
    path: &'static str,
    connections: u32,
    post: Option<usize>,
    close: bool,
) -> Shape {
    Shape {
        name,
        title,
        load: Load::Wrk {
            tls,
            path,
            connections,
            post,
            close,
        },
    }
}

const GET: Shape = wrk_shape("get", "HTTP/1.1 GET (wrk)", false, "/", 64, None, false);
const POST: Shape = wrk_shape(
    "post",
    "HTTP/1.1 POST, 2 KB body (wrk + Lua)",
    false,
    "/",
    64,
    Some(POST_BYTES),
    false,
);
const H2C: Shape = Shape {
    name: "h2c",
    title: "HTTP/2 h2c (h2load, 10 streams)",
    load: Load::H2load {
        tls: false,
        connections: 64,
    },
};

/// The plain `bench l7` shapes (`--shapes` picks among them).
const PLAIN: [Shape; 3] = [GET, POST, H2C];

/// `bench l7 --matrix`: the shapes of issue 17, each against HAProxy.
const MATRIX: [Shape; 10] = [
    wrk_shape("get", "GET, 64 keep-alive", false, "/", 64, None, false),
    wrk_shape(
        "post",
        "POST 2 KB body, 64 keep-alive",
        false,
        "/",
        64,
        Some(POST_BYTES),
        false,
    ),
    wrk_shape(
        "get1k-256",
        "GET 1 KB body, 256 keep-alive",
        false,
        "/1k",
        256,
        None,
        false,
    ),
    wrk_shape(
        "get1k-close",
        "GET 1 KB body, a connection per request",
        false,
        "/1k",
        64,
        None,
        true,
    ),
    wrk_shape(
        "tls",
        "TLS (ECDSA P-256) GET, 64 keep-alive",
        true,
        "/",
        64,
        None,
        false,
    ),
    wrk_shape(
        "tls-close",
        "TLS GET, a handshake per request",
        true,
        "/",
        64,
        None,
        true,
    ),
    wrk_shape(
        "get64k",
        "GET 64 KB body, 64 keep-alive",
        false,
        "/64k",
        64,
        None,
        false,
    ),
    wrk_shape(
        "upload1m",
        "POST 1 MB body, 16 keep-alive",
        false,
        "/",
        16,
        Some(1 << 20),
        false,
    ),
    Shape {
        name: "h2-tls",
        title: "HTTP/2 over TLS, 64 x 10 streams (h2load)",
        load: Load::H2load {
            tls: true,
            connections: 64,
        },
    },
    Shape {
        name: "h2c",
        title: "HTTP/2 h2c, 64 x 10 streams (h2load)",
        load: Load::H2load {
            tls: false,
            connections: 64,
        },
    },
];

/// Where one target listens; `tls` only for the proxies of the matrix.
#[derive(Clone, Copy)]
struct Ports {
    h1: u16,
    h2c: u16,
    tls: u16,
}

impl Shape {
    fn port(&self, ports: Ports) -> u16 {
        match self.load {
            Load::Wrk { tls: true, .. } | Load::H2load { tls: true, .. } => ports.tls,
            Load::H2load { tls: false, .. } => ports.h2c,
            Load::Wrk { tls: false, .. } => ports.h1,
        }
    }

    fn tls(&self) -> bool {
        matches!(
            self.load,
            Load::Wrk { tls: true, .. } | Load::H2load { tls: true, .. }
        )
    }

    fn run(&self, port: u16, dir: &Path, seconds: u32) -> Result<Result1> {
        match self.load {
            Load::Wrk {
                tls,
                path,
                connections,
                post,
                close,
            } => {
                let script = post.map(|bytes| dir.join(format!("post-{bytes}.lua")));
                let scheme = if tls { "https" } else { "http" };
                let url = format!("{scheme}://127.0.0.1:{port}{path}");
                wrk(&url, connections, seconds, script.as_deref(), close)
            }
            Load::H2load { tls, connections } => {
                let scheme = if tls { "https" } else { "http" };
                let url = format!("{scheme}://127.0.0.1:{port}/");
                h2load(&url, connections, seconds, dir)
            }
        }
    }
}

struct Proc {
    name: &'static str,
    child: Child,
}

impl Drop for Proc {
    /// SIGTERM first: nginx's master stops its worker then (a SIGKILL would leave the worker
    /// listening on the backend port, serving the next run in place of its nginx).
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &'static str, dir: &Path, cpu: &str, program: &str, args: &[&str]) -> Result<Proc> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = Command::new("taskset")
        .args(["-c", cpu, program])
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    Ok(Proc { name, child })
}

fn wait_port(port: u16, proc: &mut Proc, dir: &Path) -> Result<()> {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = proc.child.try_wait() {
            bail!(
                "{} exited ({status}); log:\n{}",
                proc.name,
                std::fs::read_to_string(dir.join(format!("{}.log", proc.name))).unwrap_or_default()
            );
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!("{} does not listen on {port}", proc.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// User + system CPU seconds a process has used so far.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .zip(fields.get(12))
        .and_then(|(u, s)| Some(u.parse::<f64>().ok()? + s.parse::<f64>().ok()?))
        .context("cannot read utime/stime")?;
    Ok(ticks / clock_ticks())
}

/// Ticks per second of /proc's CPU times.
fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

#[derive(Debug, Clone, Copy, Default)]
struct Result1 {
    rps: f64,
    p99_ms: f64,
    requests: f64,
    /// CPU microseconds the proxy spent per request; None for the direct run.
    cpu_us: Option<f64>,
    /// The load CPU (the client and nginx): microseconds per request and the share of the
    /// run it was busy. A busy share near 1 means the load, not the proxy, set requests/s.
    load_us: Option<f64>,
    load_busy: Option<f64>,
}

fn parse_ms(text: &str) -> Option<f64> {
    let t = text.trim();
    let (num, factor) = if let Some(v) = t.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = t.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = t.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (t, 1.0)
    };
    num.parse::<f64>().ok().map(|n| n * factor)
}

/// `script`: a wrk Lua script (the POST shapes'), or none for GETs.
fn wrk(
    url: &str,
    connections: u32,
    seconds: u32,
    script: Option<&Path>,
    close: bool,
) -> Result<Result1> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", LOAD_CPU, "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"));
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd
        .args(["--latency", "-H", "Host: todo.example", url])
        .output()
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))?;
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(parse_ms)
        .with_context(|| format!("no 99% in wrk output:\n{text}"))?;
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"));
    if let Some(e) = errors {
        eprintln!("   wrk: {}", e.trim());
    }
    Ok(Result1 {
        rps,
        p99_ms,
        requests,
        cpu_us: None,
        load_us: None,
        load_busy: None,
    })
}

fn h2load(url: &str, connections: u32, seconds: u32, dir: &Path) -> Result<Result1> {
    let log = dir.join("h2load.tsv");
    // h2load appends to its log: each run must start from an empty one.
    let _ = std::fs::remove_file(&log);
    let out = Command::new("taskset")
        .args(["-c", LOAD_CPU, "h2load", "-t1"])
        .arg(format!("-c{connections}"))
        .args(["-m10", &format!("-D{seconds}")])
        .arg(format!("--log-file={}", log.display()))
        .args(["-H", ":authority: todo.example", url])
        .output()
        .context("cannot run h2load")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|v| v.trim().strip_suffix("req/s"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no req/s in h2load output:\n{text}"))?;
    let mut lat: Vec<f64> = std::fs::read_to_string(&log)?
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse::<f64>().ok())
        .collect();
    if lat.is_empty() {
        bail!("h2load logged no request:\n{text}");
    }
    lat.sort_by(f64::total_cmp);
    let p99_ms = lat[(lat.len() * 99 / 100).min(lat.len() - 1)] / 1000.0;
    if let Some(l) = text.lines().find(|l| l.starts_with("status codes:"))
        && !l.contains(" 0 3xx, 0 4xx, 0 5xx")
    {
        eprintln!("   h2load: {}", l.trim());
    }
    Ok(Result1 {
        rps,
        p99_ms,
        requests: lat.len() as f64,
        cpu_us: None,
        load_us: None,
        load_busy: None,
    })
}

/// Busy and total ticks of one CPU so far, from /proc/stat (busy: all but idle and iowait).
fn cpu_ticks(cpu: &str) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .with_context(|| format!("no {name} in /proc/stat"))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().context("bad /proc/stat field"))
        .collect::<Result<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

fn measure(proxy: Option<&Proc>, run: impl Fn() -> Result<Result1>) -> Result<Result1> {
    let pid = proxy.map(|p| p.child.id());
    let before = pid.map(cpu_seconds).transpose()?;
    let load_before = cpu_ticks(LOAD_CPU)?;
    let mut r = run()?;
    let load_after = cpu_ticks(LOAD_CPU)?;
    if let (Some(pid), Some(before)) = (pid, before) {
        let used = cpu_seconds(pid)? - before;
        if r.requests > 0.0 {
            r.cpu_us = Some(used * 1e6 / r.requests);
        }
    }
    let (busy, total) = (
        load_after.0.saturating_sub(load_before.0),
        load_after.1.saturating_sub(load_before.1),
    );
    if r.requests > 0.0 && total > 0 {
        r.load_us = Some(busy as f64 / clock_ticks() * 1e6 / r.requests);
        r.load_busy = Some(busy as f64 / total as f64);
    }
    Ok(r)
}

/// Each of requests/s, p99 and CPU per request is the median of its own values.
fn median(runs: Vec<Result1>) -> Result1 {
    fn mid(values: &mut [f64]) -> f64 {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    }
    let mut rps: Vec<f64> = runs.iter().map(|r| r.rps).collect();
    let mut p99: Vec<f64> = runs.iter().map(|r| r.p99_ms).collect();
    let mid_of = |f: fn(&Result1) -> Option<f64>| {
        let mut v: Vec<f64> = runs.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| mid(&mut v))
    };
    let requests = runs.iter().map(|r| r.requests).sum();
    Result1 {
        rps: mid(&mut rps),
        p99_ms: mid(&mut p99),
        requests,
        cpu_us: mid_of(|r| r.cpu_us),
        load_us: mid_of(|r| r.load_us),
        load_busy: mid_of(|r| r.load_busy),
    }
}

/// The configs of nginx, portier and HAProxy; with `tls`, a self-signed ECDSA P-256
/// certificate and a TLS listener (HTTP/1.1 and h2 by ALPN) on each proxy.
fn write_configs(dir: &Path, tls: bool, posts: &[usize]) -> Result<()> {
    // The static bodies of the matrix, served by nginx from memory-cached open files.
    std::fs::create_dir_all(dir.join("www"))?;
    std::fs::write(dir.join("www/1k"), vec![b'x'; 1024])?;
    std::fs::write(dir.join("www/64k"), vec![b'x'; 64 * 1024])?;
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log stderr warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 10000000;\n\
             sendfile on;\n  open_file_cache max=16;\n  client_max_body_size 2m;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{\n    listen 127.0.0.1:{BACKEND_H1};\n    listen 127.0.0.1:{BACKEND_H2} http2;\n\
             root {d}/www;\n    location = / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
            d = dir.display()
        ),
    )?;
    // Both proxies send nginx the same request: HAProxy's `option forwardfor` adds only
    // `X-Forwarded-For`, so portier's pools add only that of their four default fields.
    let routes = format!(
        "[[l7.route]]\nhost = \"todo.example\"\npool = \"todo\"\n\n\
         [[l7.route]]\nhost = \"shop.example\"\npool = \"shop\"\n\n\
         [[l7.route]]\nhost = \"*\"\npool = \"todo\"\n\n\
         [[l7.pool]]\nname = \"todo\"\nservers = [{{ address = \"127.0.0.1:{BACKEND_H1}\" }}]\n\
         forwarding = [\"x-forwarded-for\"]\n\n\
         [[l7.pool]]\nname = \"shop\"\nservers = [{{ address = \"127.0.0.1:{BACKEND_H1}\" }}]\n\
         forwarding = [\"x-forwarded-for\"]\n"
    );
    let (cert, key, pem) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("haproxy.pem"),
    );
    let (portier_tls, haproxy_tls) = if tls {
        let status = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "30"])
            .args(["-subj", "/CN=todo.example", "-addext"])
            .args([
                "subjectAltName=DNS:todo.example,DNS:shop.example",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("cannot run openssl")?;
        if !status.success() {
            bail!("openssl could not make the benchmark's certificate");
        }
        // HAProxy takes the certificate and its key in one file.
        let both = std::fs::read_to_string(&cert)? + &std::fs::read_to_string(&key)?;
        std::fs::write(&pem, both)?;
        (
            format!(
                "[[l7.listener]]\nname = \"tls\"\nbind = \"127.0.0.1:{PORTIER_TLS}\"\n\
                 protocols = [\"http1\", \"h2\"]\n\
                 [[l7.listener.certificate]]\ncert = \"{}\"\nkey = \"{}\"\n\n",
                cert.display(),
                key.display()
            ),
            format!(
                "  bind 127.0.0.1:{HAPROXY_TLS} ssl crt {} alpn h2,http/1.1\n",
                pem.display()
            ),
        )
    } else {
        (String::new(), String::new())
    };
    std::fs::write(
        dir.join("portier.toml"),
        format!(
            "[node]\nname = \"bench\"\n\n\
             [[l7.listener]]\nname = \"h1\"\nbind = \"127.0.0.1:{PORTIER_H1}\"\n\n\
             [[l7.listener]]\nname = \"h2\"\nbind = \"127.0.0.1:{PORTIER_H2}\"\nprotocols = [\"h2c\"]\n\n\
             {portier_tls}{routes}"
        ),
    )?;
    std::fs::write(
        dir.join("haproxy.cfg"),
        format!(
            "global\n  nbthread 1\n  maxconn 4096\n\n\
             defaults\n  mode http\n  timeout connect 3s\n  timeout client 60s\n  timeout server 60s\n\
             option http-keep-alive\n  option forwardfor\n  http-reuse always\n\n\
             frontend fe\n  bind 127.0.0.1:{HAPROXY_H1}\n  bind 127.0.0.1:{HAPROXY_H2} proto h2\n\
             {haproxy_tls}\
             http-request set-var(txn.host) req.hdr(host),field(1,:),lower\n\
             use_backend todo if {{ var(txn.host) -m str todo.example }}\n\
             use_backend shop if {{ var(txn.host) -m str shop.example }}\n\
             default_backend todo\n\n\
             backend todo\n  balance roundrobin\n  server s1 127.0.0.1:{BACKEND_H1}\n\n\
             backend shop\n  balance roundrobin\n  server s1 127.0.0.1:{BACKEND_H1}\n"
        ),
    )?;
    // The POST shapes: every request carries the same body (nginx's `return` reads and
    // discards it, keeping the connection).
    for bytes in posts {
        std::fs::write(
            dir.join(format!("post-{bytes}.lua")),
            format!(
                "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", {bytes})\n\
                 wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n"
            ),
        )?;
    }
    Ok(())
}

/// The shapes of `list` (comma-separated names) among `known`; all of them when absent.
fn shapes(known: &[Shape], list: Option<&str>) -> Result<Vec<Shape>> {
    let Some(list) = list else {
        return Ok(known.to_vec());
    };
    let names: Vec<&str> = known.iter().map(|s| s.name).collect();
    list.split(',')
        .map(|n| {
            known
                .iter()
                .find(|s| s.name == n.trim())
                .copied()
                .with_context(|| format!("unknown shape {n:?} (known: {})", names.join(", ")))
        })
        .collect()
}

/// `cargo xtask bench l7` options.
pub struct Options {
    /// Another portier binary measured as another target.
    pub baseline: Option<PathBuf>,
    /// Comma-separated shape names (of the plain shapes, or of the matrix's rows with
    /// `matrix`); all when absent.
    pub shapes: Option<String>,
    /// The portier binary to measure; the tree's release build when absent.
    pub portier: Option<PathBuf>,
    /// The ten rows of issue 17 against HAProxy (no direct run), instead of the plain shapes.
    pub matrix: bool,
    /// Each proxy capped at this percent of one CPU (its own cgroup), so that requests/s
    /// compares the proxies rather than the load generator's share of its CPU.
    pub proxy_cpu: Option<u32>,
    /// Interleaved rounds per shape.
    pub rounds: usize,
}

/// A process under measurement and where it listens.
struct Target {
    label: &'static str,
    proc: Option<Proc>,
    ports: Ports,
}

pub fn run(root: &Path, options: Options) -> Result<()> {
    let known: &[Shape] = if options.matrix { &MATRIX } else { &PLAIN };
    let shapes = shapes(known, options.shapes.as_deref())?;
    let seconds = if options.matrix {
        MATRIX_DURATION_S
    } else {
        DURATION_S
    };
    let baseline = options.baseline.as_deref();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        bail!("the L7 benchmark needs 2 CPUs (proxy on one, load and backend on the other)");
    }
    let portier_bin: PathBuf = match options.portier {
        Some(p) => p,
        None => {
            crate::cargo(&["build", "--release", "-p", "portier", "--bin", "portier"])?;
            root.join("target/release/portier")
        }
    };
    let dir = PathBuf::from("/tmp/portier-bench-l7");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut posts: Vec<usize> = shapes
        .iter()
        .filter_map(|s| match s.load {
            Load::Wrk { post, .. } => post,
            Load::H2load { .. } => None,
        })
        .collect();
    posts.sort_unstable();
    posts.dedup();
    let tls = shapes.iter().any(Shape::tls);
    write_configs(&dir, tls, &posts)?;

    let mut nginx = spawn(
        "nginx",
        &dir,
        LOAD_CPU,
        "nginx",
        &[
            "-p",
            &dir.to_string_lossy(),
            "-e",
            "stderr",
            "-c",
            &dir.join("nginx.conf").to_string_lossy(),
        ],
    )?;
    wait_port(BACKEND_H1, &mut nginx, &dir)?;
    let mut portier = spawn(
        "portier",
        &dir,
        PROXY_CPU,
        &portier_bin.to_string_lossy(),
        &["run", "-c", &dir.join("portier.toml").to_string_lossy()],
    )?;
    wait_port(PORTIER_H1, &mut portier, &dir)?;
    if tls {
        wait_port(PORTIER_TLS, &mut portier, &dir)?;
    }
    let mut haproxy = spawn(
        "haproxy",
        &dir,
        PROXY_CPU,
        "haproxy",
        &["-db", "-f", &dir.join("haproxy.cfg").to_string_lossy()],
    )?;
    wait_port(HAPROXY_H1, &mut haproxy, &dir)?;
    if tls {
        wait_port(HAPROXY_TLS, &mut haproxy, &dir)?;
    }
    // The same config on the baseline's own ports.
    let base = match baseline {
        Some(bin) => {
            let config = std::fs::read_to_string(dir.join("portier.toml"))?
                .replace(&PORTIER_H1.to_string(), &BASELINE_H1.to_string())
                .replace(&PORTIER_H2.to_string(), &BASELINE_H2.to_string())
                .replace(&PORTIER_TLS.to_string(), &BASELINE_TLS.to_string())
                // Its own node name, so its own admin socket.
                .replace("name = \"bench\"", "name = \"bench-baseline\"");
            std::fs::write(dir.join("baseline.toml"), config)?;
            let mut p = spawn(
                "baseline",
                &dir,
                PROXY_CPU,
                &bin.to_string_lossy(),
                &["run", "-c", &dir.join("baseline.toml").to_string_lossy()],
            )?;
            wait_port(BASELINE_H1, &mut p, &dir)?;
            if tls {
                wait_port(BASELINE_TLS, &mut p, &dir)?;
            }
            Some(p)
        }
        None => None,
    };
    let portier_ports = Ports {
        h1: PORTIER_H1,
        h2c: PORTIER_H2,
        tls: PORTIER_TLS,
    };
    let mut targets = vec![
        Target {
            label: "portier",
            proc: Some(portier),
            ports: portier_ports,
        },
        Target {
            label: "portier (baseline)",
            proc: base,
            ports: Ports {
                h1: BASELINE_H1,
                h2c: BASELINE_H2,
                tls: BASELINE_TLS,
            },
        },
        Target {
            label: "haproxy",
            proc: Some(haproxy),
            ports: Ports {
                h1: HAPROXY_H1,
                h2c: HAPROXY_H2,
                tls: HAPROXY_TLS,
            },
        },
    ];
    if targets[1].proc.is_none() {
        targets.remove(1);
    }
    let mut budgets = Vec::new();
    if let Some(percent) = options.proxy_cpu {
        for (i, t) in targets.iter().enumerate() {
            if let Some(p) = &t.proc {
                let name = ["portier", "second", "third"][i.min(2)];
                budgets.push(CpuBudget::new(name, percent, p.child.id())?);
            }
        }
    }
    let budget = options.proxy_cpu.map_or(String::new(), |p| {
        format!(
            "; each proxy capped at {p}% of CPU {PROXY_CPU} (cgroup CPU bandwidth, 10 ms period)"
        )
    });
    let outcome = if options.matrix {
        matrix(&shapes, &targets, &dir, (seconds, options.rounds), &budget)
    } else {
        plain(&shapes, &targets, &dir, (seconds, options.rounds), &budget)
    };
    // The processes first: a cgroup goes only once empty.
    drop(targets);
    drop(budgets);
    drop(nginx);
    outcome
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// The plain bench: each shape on portier, the baseline, HAProxy and straight to nginx.
fn plain(
    shapes: &[Shape],
    targets: &[Target],
    dir: &Path,
    (seconds, rounds): (u32, usize),
    budget: &str,
) -> Result<()> {
    let connections = 64;
    println!(
        "L7 benchmark: {seconds} s per run, {rounds} interleaved rounds (medians), {connections} \
         connections; proxy on CPU {PROXY_CPU}, load generator and nginx backend on CPU \
         {LOAD_CPU}{budget}"
    );
    let direct = Ports {
        h1: BACKEND_H1,
        h2c: BACKEND_H2,
        tls: 0,
    };
    let find = |label: &str| targets.iter().find(|t| t.label == label);
    let (portier, haproxy) = (find("portier").unwrap(), find("haproxy").unwrap());
    let base = find("portier (baseline)");
    let mut table = Vec::new();
    for shape in shapes {
        let (pp, hp, dp) = (
            shape.port(portier.ports),
            shape.port(haproxy.ports),
            shape.port(direct),
        );
        let bp = base.map(|b| shape.port(b.ports));
        // A short warm-up so connection pools and caches are in place for every target.
        for port in [Some(pp), bp, Some(hp), Some(dp)].into_iter().flatten() {
            let _ = std::net::TcpStream::connect(("127.0.0.1", port));
        }
        // Interleaved rounds, medians reported: a slow spell of the shared machine then
        // hits every target alike instead of whichever ran during it.
        let (mut d, mut h, mut p, mut b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            d.push(measure(None, || shape.run(dp, dir, seconds))?);
            h.push(measure(haproxy.proc.as_ref(), || {
                shape.run(hp, dir, seconds)
            })?);
            p.push(measure(portier.proc.as_ref(), || {
                shape.run(pp, dir, seconds)
            })?);
            if let (Some(base), Some(bp)) = (base, bp) {
                b.push(measure(base.proc.as_ref(), || shape.run(bp, dir, seconds))?);
            }
        }
        let b = (!b.is_empty()).then(|| median(b));
        table.push((shape.title, median(p), b, median(h), median(d)));
    }

    println!();
    println!(
        "{:<34} {:>12} {:>10} {:>14}",
        "target", "requests/s", "p99 ms", "CPU us/req"
    );
    for (proto, p, b, h, d) in &table {
        println!("{proto}");
        let rows = [
            ("  portier", Some(p)),
            ("  portier (baseline)", b.as_ref()),
            ("  haproxy", Some(h)),
            ("  direct (nginx)", Some(d)),
        ];
        for (name, r) in rows {
            let Some(r) = r else { continue };
            let cpu = r.cpu_us.map_or("-".to_string(), |c| format!("{c:.1}"));
            println!("{name:<34} {:>12.0} {:>10.2} {:>14}", r.rps, r.p99_ms, cpu);
        }
        if let Some(b) = b {
            println!(
                "  baseline/haproxy requests/s {:.2}, p99 {:.2}, CPU/req {}; portier/baseline requests/s {:.2}",
                b.rps / h.rps,
                b.p99_ms / h.p99_ms,
                ratio(b.cpu_us, h.cpu_us),
                p.rps / b.rps,
            );
        }
        println!(
            "  ratios: portier/haproxy requests/s {:.2}, p99 {:.2}, CPU/req {}; portier/direct requests/s {:.2}, p99 {:.2}",
            p.rps / h.rps,
            p.p99_ms / h.p99_ms,
            ratio(p.cpu_us, h.cpu_us),
            p.rps / d.rps,
            p.p99_ms / d.p99_ms,
        );
    }
    Ok(())
}

/// `--matrix`: every row on each proxy (portier, the baseline if given, HAProxy), in
/// interleaved rounds whose order turns each round, printed as a Markdown table of medians.
fn matrix(
    shapes: &[Shape],
    targets: &[Target],
    dir: &Path,
    (seconds, rounds): (u32, usize),
    budget: &str,
) -> Result<()> {
    let started = Instant::now();
    println!(
        "L7 matrix: {} rows, {seconds} s per run, {rounds} interleaved rounds (medians); proxy \
         on CPU {PROXY_CPU} (HAProxy one thread, portier one worker), wrk/h2load and nginx on \
         CPU {LOAD_CPU}{budget}",
        shapes.len()
    );
    let mut table = Vec::new();
    for shape in shapes {
        // One second of the shape on each target first: pools, caches, TLS contexts warm.
        for t in targets {
            shape
                .run(shape.port(t.ports), dir, 1)
                .with_context(|| format!("{} warm-up on {}", shape.name, t.label))?;
        }
        let mut runs: Vec<Vec<Result1>> = targets.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for k in 0..targets.len() {
                let i = (round + k) % targets.len();
                let t = &targets[i];
                let r = measure(t.proc.as_ref(), || {
                    shape.run(shape.port(t.ports), dir, seconds)
                })
                .with_context(|| format!("{} on {}", shape.name, t.label))?;
                runs[i].push(r);
            }
        }
        let medians: Vec<Result1> = runs.iter().cloned().map(median).collect();
        eprintln!(
            "  {} done ({:.0} s so far)",
            shape.name,
            started.elapsed().as_secs_f64()
        );
        table.push((shape, medians, runs));
    }
    let haproxy = targets
        .iter()
        .position(|t| t.label == "haproxy")
        .context("no haproxy target")?;
    println!();
    println!(
        "| shape | portier req/s | HAProxy req/s | ratio | p99 ms portier / HAProxy | ratio | CPU us/req portier / HAProxy | ratio | load CPU us/req portier / HAProxy | load CPU busy portier / HAProxy |{}",
        if targets.len() > 2 {
            " baseline req/s | portier / baseline | baseline p99 ms | portier / baseline | baseline CPU us/req | portier / baseline |"
        } else {
            ""
        }
    );
    println!(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|{}",
        if targets.len() > 2 {
            "---:|---:|---:|---:|---:|---:|"
        } else {
            ""
        }
    );
    for (shape, m, _) in &table {
        let (p, h) = (&m[0], &m[haproxy]);
        let cpu = |r: &Result1| r.cpu_us.map_or("-".to_string(), |c| format!("{c:.1}"));
        let load = |r: &Result1| r.load_us.map_or("-".to_string(), |c| format!("{c:.1}"));
        let busy = |r: &Result1| {
            r.load_busy
                .map_or("-".to_string(), |b| format!("{:.0}%", b * 100.0))
        };
        let mut line = format!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} / {:.2} | {:.2} | {} / {} | {} | {} / {} | {} / {} |",
            shape.title,
            p.rps,
            h.rps,
            p.rps / h.rps,
            p.p99_ms,
            h.p99_ms,
            p.p99_ms / h.p99_ms,
            cpu(p),
            cpu(h),
            ratio(p.cpu_us, h.cpu_us),
            load(p),
            load(h),
            busy(p),
            busy(h),
        );
        if targets.len() > 2 {
            let b = &m[1];
            line += &format!(
                " {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
                b.rps,
                p.rps / b.rps,
                b.p99_ms,
                p.p99_ms / b.p99_ms,
                cpu(b),
                ratio(p.cpu_us, b.cpu_us)
            );
        }
        println!("{line}");
    }
    // The ratio of medians hides how far single rounds disagree. A round's runs follow each
    // other within seconds, so its own ratio meets a slow spell of the machine on both sides.
    println!(
        "\nportier / HAProxy in each round (requests/s; p99; CPU per request), to judge the spread:\n"
    );
    println!(
        "| shape | requests/s by round | p99 by round | CPU us/req by round |\n|---|---|---|---|"
    );
    for (shape, _, runs) in &table {
        let each = |f: &dyn Fn(&Result1, &Result1) -> Option<f64>| {
            runs[0]
                .iter()
                .zip(&runs[haproxy])
                .map(|(p, h)| f(p, h).map_or("-".to_string(), |r| format!("{r:.2}")))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "| {} | {} | {} | {} |",
            shape.title,
            each(&|p, h| Some(p.rps / h.rps)),
            each(&|p, h| Some(p.p99_ms / h.p99_ms)),
            each(&|p, h| Some(p.cpu_us? / h.cpu_us?)),
        );
    }
    println!(
        "\n{} rows in {:.0} s",
        table.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
