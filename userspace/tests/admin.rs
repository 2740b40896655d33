//! The admin surface of a real `portier run`: only the operator may change the node (the
//! socket's permissions, the TCP listener refusing every change), every command answers
//! (unknown parts and verbs too), and slow clients cannot hold the server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod ports;

const WAIT: Duration = Duration::from_secs(20);

/// A daemon with an L7 listener (the part every machine can run) and both admin doors.
struct Node {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    tcp: SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Node {
    fn start(name: &str) -> Node {
        let dir = std::env::temp_dir().join(format!("portier-admin-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let socket = dir.join("admin.sock");
        let [admin, http] = ports::daemon_ports(2)[..] else {
            unreachable!()
        };
        let tcp: SocketAddr = format!("127.0.0.1:{admin}").parse().expect("addr");
        let config = format!(
            "[node]\nname = \"{name}\"\n[admin]\nlisten = \"{tcp}\"\nsocket = \"{}\"\n\
             [[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:{http}\"\n\
             [[l7.route]]\nhost = \"*\"\npool = \"p\"\n\
             [[l7.pool]]\nname = \"p\"\nservers = [{{ address = \"127.0.0.1:9\" }}]\n",
            socket.display()
        );
        let file = dir.join("portier.toml");
        std::fs::write(&file, config).expect("config");
        let child = Command::new(env!("CARGO_BIN_EXE_portier"))
            .args(["run", "--config"])
            .arg(&file)
            .stderr(Stdio::null())
            .spawn()
            .expect("portier run");
        let node = Node {
            child,
            dir,
            socket,
            tcp,
        };
        let deadline = Instant::now() + WAIT;
        while !node.socket.exists() || TcpStream::connect(node.tcp).is_err() {
            assert!(Instant::now() < deadline, "daemon not up");
            std::thread::sleep(Duration::from_millis(20));
        }
        node
    }

    /// The CLI, as root or as another user; (success, stdout + stderr).
    fn cli(&self, uid: Option<u32>, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portier"));
        cmd.args(args).arg("--socket").arg(&self.socket);
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        let out = cmd.output().expect("portier cli");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn socket_request(&self, method: &str, path: &str) -> Result<String, String> {
        let target = portier::admin::client::Target::Socket(self.socket.clone());
        portier::admin::client::request(&target, method, path).map_err(|e| format!("{e:#}"))
    }
}

/// One raw HTTP exchange over TCP: the whole answer.
fn tcp_exchange(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

const NOBODY: u32 = 65534;

#[test]
fn only_root_changes_the_node_and_tcp_only_reads() {
    let node = Node::start("adm-perm");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&node.socket)
            .expect("socket")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let drain = ["drain", "--pool", "p", "--server", "127.0.0.1:9"];
    let (ok, out) = node.cli(Some(NOBODY), &drain);
    assert!(!ok, "nobody drained a server: {out}");
    assert!(out.contains("Permission denied"), "{out}");
    let (ok, out) = node.cli(Some(NOBODY), &["reload"]);
    assert!(!ok, "nobody reloaded: {out}");

    // The TCP listener refuses every change, from anyone, and says where changes go.
    let answer = tcp_exchange(
        node.tcp,
        "POST /command/l7/weight?pool=p&server=127.0.0.1:9&weight=7 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer.contains("admin socket"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("allow: get, head"),
        "{answer}"
    );
    let answer = tcp_exchange(
        node.tcp,
        "POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    // Reads are served there.
    let answer = tcp_exchange(
        node.tcp,
        "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let status: serde_json::Value =
        serde_json::from_str(answer.split_once("\r\n\r\n").expect("body").1).expect("json");
    assert_eq!(status["l7"]["pools"]["p"]["servers"][0]["weight"], 1);

    // Root's CLI can.
    let (ok, out) = node.cli(None, &drain);
    assert!(ok, "{out}");
    assert!(out.contains("\"weight\": 0"), "{out}");
}

#[test]
fn every_command_answers_unknown_ones_with_404() {
    let node = Node::start("adm-verbs");
    let start = Instant::now();
    let e = node
        .socket_request("POST", "/command/ospf/clear")
        .unwrap_err();
    assert!(e.contains("404") && e.contains("not running"), "{e}");
    assert!(e.contains("l7"), "the running parts are listed: {e}");
    let e = node.socket_request("POST", "/command/l7/kill").unwrap_err();
    assert!(
        e.contains("404") && e.contains("drain, undrain, weight"),
        "{e}"
    );
    let e = node
        .socket_request("POST", "/command/l7/drain?pool=p&server=127.0.0.1:1")
        .unwrap_err();
    assert!(
        e.contains("404") && e.contains("pool p has no server"),
        "{e}"
    );
    let e = node
        .socket_request(
            "POST",
            "/command/l7/weight?pool=p&server=127.0.0.1:9&weight=999",
        )
        .unwrap_err();
    assert!(
        e.contains("400") && e.contains("weight must be 0..=256"),
        "{e}"
    );
    let e = node
        .socket_request("POST", "/command/nope/drain")
        .unwrap_err();
    assert!(e.contains("404"), "{e}");
    // Each answer above came at once; the deadline for any command is one second.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let ok = node
        .socket_request(
            "POST",
            "/command/l7/weight?pool=p&server=127.0.0.1:9&weight=3",
        )
        .expect("weight");
    assert!(ok.contains("\"weight\": 3"), "{ok}");
}

#[test]
fn slow_clients_cannot_hold_the_admin_server() {
    let node = Node::start("adm-slow");
    // More half-sent requests than the server serves at once.
    let mut slow: Vec<TcpStream> = (0..80)
        .map(|_| {
            let mut s = TcpStream::connect(node.tcp).expect("connect");
            s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n")
                .expect("write");
            s
        })
        .collect();
    // The server cuts each of them (header read timeout, or at once beyond the cap): every
    // read ends, none hangs.
    for s in &mut slow {
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut buf = Vec::new();
        let r = s.read_to_end(&mut buf);
        // Closed (EOF), or reset when cut before its bytes were read; never still waiting.
        assert!(
            !matches!(&r, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
            "a slow client was held: {r:?}"
        );
        let text = String::from_utf8_lossy(&buf);
        assert!(!text.contains("200 OK"), "{text}");
    }
    // And the node answers again.
    let answer = tcp_exchange(
        node.tcp,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(node.socket_request("GET", "/status").is_ok());
}

/// Opens `/events` on the TCP listener and reads until the first status document; the open
/// stream is returned so it stays counted.
fn open_stream(addr: SocketAddr) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\ndata: ")
        && !String::from_utf8_lossy(&got).starts_with("HTTP/1.1 503")
    {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    (s, String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn the_dashboard_is_self_contained_and_its_streams_are_bounded() {
    let node = Node::start("adm-dash");
    // The page and its two files, under a policy that allows nothing from elsewhere.
    let page = tcp_exchange(
        node.tcp,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let lower = page.to_ascii_lowercase();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        lower.contains("content-security-policy: default-src 'self'"),
        "{page}"
    );
    assert!(page.contains("<script src=\"dashboard.js\""), "{page}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing from elsewhere: {page}"
    );
    for file in ["dashboard.js", "dashboard.css"] {
        let answer = tcp_exchange(
            node.tcp,
            &format!("GET /{file} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{file}: {answer}");
        assert!(
            !answer.contains("http://") && !answer.contains("https://"),
            "{file} loads nothing from elsewhere"
        );
    }

    // A stream carries the /status document, node entry included. The L7 part publishes
    // its status once it has applied the config, and a stream starts from the last
    // document made (once a second): read events until one shows the pool.
    let (mut first, head) = open_stream(node.tcp);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    let mut text = head;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        let complete: Vec<serde_json::Value> = text
            .split("\ndata: ")
            .skip(1)
            .filter_map(|d| d.split_once('\n').map(|(line, _)| line))
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        if let Some(doc) = complete
            .iter()
            .find(|d| d["l7"]["pools"]["p"]["servers"][0]["state"] == "active")
        {
            break doc.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no event showed the L7 pool active: {text}"
        );
        let mut buf = [0u8; 4096];
        let n = first.read(&mut buf).expect("read");
        assert!(n > 0, "stream closed: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    };
    assert_eq!(status["node"]["name"], "adm-dash");

    // 16 streams at once; the 17th is refused (503, counted) until one closes.
    let mut streams = vec![first];
    for _ in 1..16 {
        let (s, head) = open_stream(node.tcp);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        streams.push(s);
    }
    let (_, refused) = open_stream(node.tcp);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let metrics = node.socket_request("GET", "/metrics").expect("metrics");
    assert!(
        metrics.contains("portier_admin_event_streams 16\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portier_admin_event_streams_refused_total 1\n"),
        "{metrics}"
    );
    drop(streams.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let (_s, head) = open_stream(node.tcp);
        if head.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed stream's slot never came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
