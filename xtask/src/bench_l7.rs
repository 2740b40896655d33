//! `cargo xtask bench l7`: requests/s, p99 latency and CPU time per request of portier's L7
//! proxy against Debian's HAProxy with the same routes, and straight to the backend, in one
//! run on the same cores.
//!
//! Everything runs on loopback. CPU 1 holds the proxy under test (portier with its tokio
//! workers, or HAProxy with one thread); CPU 0 holds the load generator and the backend
//! (nginx, one worker), the same for all three targets. Shapes: `get`, HTTP/1.1 GET with wrk,
//! 64 keep-alive connections; `post`, the same with a 2 KB request body (a wrk Lua script);
//! `h2c`, HTTP/2 with h2load, 64 connections with 10 streams each, prior knowledge.
//! `--baseline PATH` adds another portier binary (an earlier build) as a fourth target, so a
//! change is measured before and after in one run; `--shapes post,get` picks shapes;
//! `--portier PATH` measures that binary instead of building the tree.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BACKEND_H1: u16 = 18080;
const BACKEND_H2: u16 = 18081;
const PORTIER_H1: u16 = 28080;
const PORTIER_H2: u16 = 28081;
const BASELINE_H1: u16 = 28082;
const BASELINE_H2: u16 = 28083;
const HAPROXY_H1: u16 = 38080;
const HAPROXY_H2: u16 = 38081;
const PROXY_CPU: &str = "1";
const LOAD_CPU: &str = "0";
const DURATION_S: u32 = 10;
const CONNECTIONS: u32 = 64;
const ROUNDS: usize = 3;
/// The request body of the `post` shape.
const POST_BYTES: usize = 2048;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Get,
    Post,
    H2c,
}

impl Shape {
    const ALL: [Shape; 3] = [Shape::Get, Shape::Post, Shape::H2c];

    fn name(self) -> &'static str {
        match self {
            Shape::Get => "get",
            Shape::Post => "post",
            Shape::H2c => "h2c",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Shape::Get => "HTTP/1.1 GET (wrk)",
            Shape::Post => "HTTP/1.1 POST, 2 KB body (wrk + Lua)",
            Shape::H2c => "HTTP/2 h2c (h2load, 10 streams)",
        }
    }
}

struct Proc {
    name: &'static str,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
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
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Ok(ticks / hz)
}

#[derive(Debug, Clone, Copy, Default)]
struct Result1 {
    rps: f64,
    p99_ms: f64,
    requests: f64,
    /// CPU microseconds the proxy spent per request; None for the direct run.
    cpu_us: Option<f64>,
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

/// `script`: a wrk Lua script (the POST shape's), or none for GETs.
fn wrk(port: u16, script: Option<&Path>) -> Result<Result1> {
    let url = format!("http://127.0.0.1:{port}/");
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", LOAD_CPU, "wrk", "-t1"])
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-d{DURATION_S}s"));
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd
        .args(["--latency", "-H", "Host: todo.example", &url])
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
    })
}

fn h2load(port: u16, dir: &Path) -> Result<Result1> {
    let log = dir.join("h2load.tsv");
    // h2load appends to its log: each run must start from an empty one.
    let _ = std::fs::remove_file(&log);
    let url = format!("http://127.0.0.1:{port}/");
    let out = Command::new("taskset")
        .args(["-c", LOAD_CPU, "h2load", "-t1"])
        .arg(format!("-c{CONNECTIONS}"))
        .args(["-m10", &format!("-D{DURATION_S}")])
        .arg(format!("--log-file={}", log.display()))
        .args(["-H", ":authority: todo.example", &url])
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
    })
}

fn measure(proxy: Option<&Proc>, run: impl Fn() -> Result<Result1>) -> Result<Result1> {
    let pid = proxy.map(|p| p.child.id());
    let before = pid.map(cpu_seconds).transpose()?;
    let mut r = run()?;
    if let (Some(pid), Some(before)) = (pid, before) {
        let used = cpu_seconds(pid)? - before;
        if r.requests > 0.0 {
            r.cpu_us = Some(used * 1e6 / r.requests);
        }
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
    let mut cpu: Vec<f64> = runs.iter().filter_map(|r| r.cpu_us).collect();
    let requests = runs.iter().map(|r| r.requests).sum();
    let cpu_us = (!cpu.is_empty()).then(|| mid(&mut cpu));
    Result1 {
        rps: mid(&mut rps),
        p99_ms: mid(&mut p99),
        requests,
        cpu_us,
    }
}

fn write_configs(dir: &Path) -> Result<()> {
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log stderr warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 10000000;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{\n    listen 127.0.0.1:{BACKEND_H1};\n    listen 127.0.0.1:{BACKEND_H2} http2;\n\
             location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
            d = dir.display()
        ),
    )?;
    let routes = format!(
        "[[l7.route]]\nhost = \"todo.example\"\npool = \"todo\"\n\n\
         [[l7.route]]\nhost = \"shop.example\"\npool = \"shop\"\n\n\
         [[l7.route]]\nhost = \"*\"\npool = \"todo\"\n\n\
         [[l7.pool]]\nname = \"todo\"\nservers = [{{ address = \"127.0.0.1:{BACKEND_H1}\" }}]\n\n\
         [[l7.pool]]\nname = \"shop\"\nservers = [{{ address = \"127.0.0.1:{BACKEND_H1}\" }}]\n"
    );
    std::fs::write(
        dir.join("portier.toml"),
        format!(
            "[node]\nname = \"bench\"\n\n\
             [[l7.listener]]\nname = \"h1\"\nbind = \"127.0.0.1:{PORTIER_H1}\"\n\n\
             [[l7.listener]]\nname = \"h2\"\nbind = \"127.0.0.1:{PORTIER_H2}\"\nprotocols = [\"h2c\"]\n\n\
             {routes}"
        ),
    )?;
    std::fs::write(
        dir.join("haproxy.cfg"),
        format!(
            "global\n  nbthread 1\n  maxconn 4096\n\n\
             defaults\n  mode http\n  timeout connect 3s\n  timeout client 60s\n  timeout server 60s\n\
             option http-keep-alive\n  option forwardfor\n  http-reuse always\n\n\
             frontend fe\n  bind 127.0.0.1:{HAPROXY_H1}\n  bind 127.0.0.1:{HAPROXY_H2} proto h2\n\
             http-request set-var(txn.host) req.hdr(host),field(1,:),lower\n\
             use_backend todo if {{ var(txn.host) -m str todo.example }}\n\
             use_backend shop if {{ var(txn.host) -m str shop.example }}\n\
             default_backend todo\n\n\
             backend todo\n  balance roundrobin\n  server s1 127.0.0.1:{BACKEND_H1}\n\n\
             backend shop\n  balance roundrobin\n  server s1 127.0.0.1:{BACKEND_H1}\n"
        ),
    )?;
    // The POST shape: every request carries the same 2 KB body (nginx's `return` reads and
    // discards it, keeping the connection).
    std::fs::write(
        dir.join("post.lua"),
        format!(
            "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", {POST_BYTES})\n\
             wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n"
        ),
    )?;
    Ok(())
}

fn shapes(list: Option<&str>) -> Result<Vec<Shape>> {
    let Some(list) = list else {
        return Ok(Shape::ALL.to_vec());
    };
    list.split(',')
        .map(|n| {
            Shape::ALL
                .into_iter()
                .find(|s| s.name() == n.trim())
                .with_context(|| format!("unknown shape {n:?} (known: get, post, h2c)"))
        })
        .collect()
}

/// `cargo xtask bench l7` options.
pub struct Options {
    /// Another portier binary measured as a fourth target.
    pub baseline: Option<PathBuf>,
    /// Comma-separated shape names; all when absent.
    pub shapes: Option<String>,
    /// The portier binary to measure; the tree's release build when absent.
    pub portier: Option<PathBuf>,
}

pub fn run(root: &Path, options: Options) -> Result<()> {
    let shapes = shapes(options.shapes.as_deref())?;
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
    write_configs(&dir)?;

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
    let mut haproxy = spawn(
        "haproxy",
        &dir,
        PROXY_CPU,
        "haproxy",
        &["-db", "-f", &dir.join("haproxy.cfg").to_string_lossy()],
    )?;
    wait_port(HAPROXY_H1, &mut haproxy, &dir)?;
    // The same config on the baseline's own ports.
    let mut base = match baseline {
        Some(bin) => {
            let config = std::fs::read_to_string(dir.join("portier.toml"))?
                .replace(&PORTIER_H1.to_string(), &BASELINE_H1.to_string())
                .replace(&PORTIER_H2.to_string(), &BASELINE_H2.to_string())
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
            Some(p)
        }
        None => None,
    };

    println!(
        "L7 benchmark: {DURATION_S} s per run, {ROUNDS} interleaved rounds (medians), {CONNECTIONS} \
         connections; proxy on CPU {PROXY_CPU}, load generator and nginx backend on CPU {LOAD_CPU}"
    );
    let script = dir.join("post.lua");
    let mut table = Vec::new();
    for shape in shapes {
        let h2 = shape == Shape::H2c;
        let (pp, bp, hp, dp) = if h2 {
            (PORTIER_H2, BASELINE_H2, HAPROXY_H2, BACKEND_H2)
        } else {
            (PORTIER_H1, BASELINE_H1, HAPROXY_H1, BACKEND_H1)
        };
        let run = |port: u16| match shape {
            Shape::H2c => h2load(port, &dir),
            Shape::Get => wrk(port, None),
            Shape::Post => wrk(port, Some(&script)),
        };
        // A short warm-up so connection pools and caches are in place for every target.
        for port in [pp, bp, hp, dp] {
            let _ = std::net::TcpStream::connect(("127.0.0.1", port));
        }
        // Interleaved rounds, medians reported: a slow spell of the shared machine then
        // hits every target alike instead of whichever ran during it.
        let (mut d, mut h, mut p, mut b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            d.push(measure(None, || run(dp))?);
            h.push(measure(Some(&haproxy), || run(hp))?);
            p.push(measure(Some(&portier), || run(pp))?);
            if let Some(base) = &base {
                b.push(measure(Some(base), || run(bp))?);
            }
        }
        let b = (!b.is_empty()).then(|| median(b));
        table.push((shape.title(), median(p), b, median(h), median(d)));
    }

    println!();
    println!(
        "{:<34} {:>12} {:>10} {:>14}",
        "target", "requests/s", "p99 ms", "CPU us/req"
    );
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", a / b),
        _ => "-".into(),
    };
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
    drop(base.take());
    drop(haproxy);
    drop(portier);
    drop(nginx);
    Ok(())
}
