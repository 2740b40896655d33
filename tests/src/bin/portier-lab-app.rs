//! The lab's stand-in workload: a tiny HTTP/1.1 server whose response body names it, plus a
//! UDP responder. It runs inside lab namespaces only.
//!
//! `GET /?size=N` pads the body to N bytes so tests can tell reply traffic apart from requests;
//! `?delay_ms=N` answers N ms late (a request still in flight when something stops).
//!
//! It depends on nothing but std, so that it also builds as a static binary with `rustc`
//! alone: the docker lab's image is that binary `FROM scratch` (tests/src/lab_docker.rs).
//! Without `--name` it takes the host name (a container's `--hostname`). SIGTERM (`docker
//! stop`) ends it the way a well-behaved app behind a load balancer ends: `/health` answers
//! 503, every request is still served (with `Connection: close`), and it exits once no
//! request has been in flight for [`QUIET`], the window the proxy has to stop sending.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long without requests ends a stopping app.
const QUIET: Duration = Duration::from_millis(300);
/// A stopping app exits after this even if requests keep coming (docker stop waits 10 s).
const STOP_LIMIT: Duration = Duration::from_secs(5);

static STOPPING: AtomicBool = AtomicBool::new(false);
/// Requests (other than `/health`) being served now.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// When the last request (other than `/health`) began or ended: ms since [`epoch`].
static LAST_ACTIVE_MS: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

// std has no signal API and this binary has no dependencies: libc's own `signal`.
unsafe extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
}
const SIGTERM: i32 = 15;

extern "C" fn on_term(_: i32) {
    // Only an atomic store: async-signal-safe.
    STOPPING.store(true, Ordering::SeqCst);
}

fn main() {
    let mut name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| String::from("app"));
    let mut http = Vec::new();
    let mut udp = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--name" => name = v,
            "--http" => http.push(v),
            "--udp" => udp.push(v),
            _ => {
                eprintln!(
                    "usage: portier-lab-app --name NAME [--http ADDR:PORT]... [--udp ADDR:PORT]..."
                );
                std::process::exit(2);
            }
        }
    }
    let mut handles = Vec::new();
    for addr in udp {
        let sock = UdpSocket::bind(&addr).unwrap_or_else(|e| die(&format!("bind udp {addr}: {e}")));
        let name = name.clone();
        handles.push(thread::spawn(move || udp_loop(sock, &name)));
    }
    for addr in http {
        let l = TcpListener::bind(&addr).unwrap_or_else(|e| die(&format!("bind tcp {addr}: {e}")));
        let name = name.clone();
        handles.push(thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let name = name.clone();
                thread::spawn(move || serve(conn, &name));
            }
        }));
    }
    epoch();
    let handler: extern "C" fn(i32) = on_term;
    // SAFETY: the handler only stores to an atomic.
    unsafe { signal(SIGTERM, handler as usize) };
    eprintln!("portier-lab-app {name} ready");
    if handles.is_empty() {
        return;
    }
    let mut stop_at = None;
    loop {
        thread::sleep(Duration::from_millis(20));
        if !STOPPING.load(Ordering::SeqCst) {
            continue;
        }
        let since = *stop_at.get_or_insert_with(|| {
            LAST_ACTIVE_MS.fetch_max(now_ms(), Ordering::SeqCst);
            eprintln!("portier-lab-app {name} stopping");
            Instant::now()
        });
        let quiet = IN_FLIGHT.load(Ordering::SeqCst) == 0
            && now_ms().saturating_sub(LAST_ACTIVE_MS.load(Ordering::SeqCst))
                >= QUIET.as_millis() as u64;
        if quiet || since.elapsed() > STOP_LIMIT {
            eprintln!("portier-lab-app {name} stopped");
            std::process::exit(0);
        }
    }
}

fn die(msg: &str) -> ! {
    eprintln!("portier-lab-app: {msg}");
    std::process::exit(1)
}

fn udp_loop(sock: UdpSocket, name: &str) {
    let mut buf = [0u8; 2048];
    while let Ok((n, peer)) = sock.recv_from(&mut buf) {
        let mut reply = format!("{name} ").into_bytes();
        reply.extend_from_slice(&buf[..n]);
        let _ = sock.send_to(&reply, peer);
    }
}

fn serve(conn: TcpStream, name: &str) {
    let peer = conn.peer_addr().map(|p| p.to_string()).unwrap_or_default();
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut out = write_half;
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut content_length = 0usize;
        let mut close = false;
        let mut host = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let v = v.trim();
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => content_length = v.parse().unwrap_or(0),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    "host" => host = v.to_string(),
                    _ => {}
                }
            }
        }
        if content_length > 0 {
            let mut body = vec![0u8; content_length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        let stopping = STOPPING.load(Ordering::SeqCst);
        if path == "/health" {
            let status = if stopping {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let head = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            if out.write_all(head.as_bytes()).is_err() || close {
                return;
            }
            continue;
        }
        let _active = Active::begin();
        let close = close || stopping;
        let size = query_number(path, "size").unwrap_or(0);
        if let Some(ms) = query_number(path, "delay_ms") {
            thread::sleep(Duration::from_millis(ms as u64));
        }
        let mut body = format!("{name}\n");
        if size > body.len() {
            body.push_str(&".".repeat(size - body.len() - 1));
            body.push('\n');
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Served-By: {name}\r\nX-Client: {peer}\r\nX-Host: {host}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(body.as_bytes()).is_err() {
            return;
        }
        if close {
            return;
        }
    }
}

/// The number `key=N` of the path's query.
fn query_number(path: &str, key: &str) -> Option<usize> {
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|n| n.parse().ok())
}

/// A request being served, for a stopping app's "no request for a while".
struct Active;

impl Active {
    fn begin() -> Active {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        LAST_ACTIVE_MS.fetch_max(now_ms(), Ordering::SeqCst);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        LAST_ACTIVE_MS.fetch_max(now_ms(), Ordering::SeqCst);
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}
