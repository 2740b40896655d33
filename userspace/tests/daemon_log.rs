//! What the daemon writes to its log: with `[log] format = "json"` every line is one JSON
//! object with the event's fields as keys, the access log included, so journald and log
//! shippers keep them structured; and what clients do wrong in a TLS handshake never writes a
//! line, so no client can flood the log.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod ports;

/// A `portier run` of a config of this test's own, in a directory of its own; killed and its
/// directory removed when dropped, so a failed assertion leaves nothing behind.
struct Daemon {
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl Daemon {
    /// Writes `config` (which may name files `files` puts in the directory first) and starts
    /// the daemon on it; returns once it logs that it is ready.
    fn start(
        name: &str,
        files: impl FnOnce(&std::path::Path),
        config: impl FnOnce(&std::path::Path) -> String,
    ) -> Daemon {
        let dir = std::env::temp_dir().join(format!("portier-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        files(&dir);
        let file = dir.join("portier.toml");
        std::fs::write(&file, config(&dir)).expect("config");
        let child = Command::new(env!("CARGO_BIN_EXE_portier"))
            .args(["run", "--config"])
            .arg(&file)
            .env_remove("RUST_LOG")
            .stderr(std::fs::File::create(dir.join("stderr.log")).expect("log file"))
            .stdout(Stdio::null())
            .spawn()
            .expect("portier run");
        let daemon = Daemon { dir, child };
        daemon.wait_for("portier ready", "not ready");
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Until the log holds `text` (20 s at most, else the test fails with `what`).
    fn wait_for(&self, text: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(text) {
            assert!(Instant::now() < deadline, "{what}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the daemon; what it logged.
    fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn json_log_lines_carry_structured_fields() {
    let [http, listen] = ports::daemon_ports(2)[..] else {
        unreachable!()
    };
    let mut daemon = Daemon::start(
        "logjson",
        |_| {},
        |dir| {
            format!(
                "[node]\nname = \"logjson\"\n[log]\nformat = \"json\"\n[admin]\nsocket = \"{}\"\n\
                 listen = \"127.0.0.1:{listen}\"\n\
                 [[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:{http}\"\naccess_log = true\n\
                 [[l7.route]]\nhost = \"*\"\npool = \"p\"\n\
                 [[l7.pool]]\nname = \"p\"\nservers = [{{ address = \"127.0.0.1:9\" }}]\n",
                dir.join("admin.sock").display()
            )
        },
    );
    // One request through the listener: the server refuses, the proxy answers, and the
    // access log says so.
    let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /x HTTP/1.1\r\nHost: todo.example\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    daemon.wait_for("portier::access", "no access line");
    let text = daemon.stop();

    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ready = lines
        .iter()
        .find(|l| l["message"] == "portier ready")
        .expect("the ready line");
    assert_eq!(ready["level"], "INFO");
    assert_eq!(ready["node"], "logjson", "{ready}");
    let access = lines
        .iter()
        .find(|l| l["target"] == "portier::access")
        .expect("the access line");
    assert_eq!(access["path"], "/x", "{access}");
    assert_eq!(access["host"], "todo.example", "{access}");
    assert_eq!(access["pool"], "p", "{access}");
    assert!(
        access["status"].as_u64().is_some_and(|s| s >= 500),
        "{access}"
    );
    assert!(access["timestamp"].is_string(), "{access}");
}

/// wrk and curl send an IP address as SNI, which rustls warns about (and it warns of every
/// fatal alert it sends): one line per connection, at any rate a client likes. They must not
/// reach the log; failed handshakes are counted (`portier_l7_listener_tls_errors`).
#[test]
fn tls_client_missteps_write_no_log_line() {
    let [tls, listen] = ports::daemon_ports(2)[..] else {
        unreachable!()
    };
    let mut daemon = Daemon::start(
        "logtls",
        |dir| {
            let signed = rcgen::generate_simple_self_signed(vec!["todo.example".to_owned()])
                .expect("certificate");
            std::fs::write(dir.join("cert.pem"), signed.cert.pem()).expect("cert");
            std::fs::write(dir.join("key.pem"), signed.signing_key.serialize_pem()).expect("key");
        },
        |dir| {
            format!(
                "[node]\nname = \"logtls\"\n[admin]\nsocket = \"{admin}\"\n\
                 listen = \"127.0.0.1:{listen}\"\n\
                 [[l7.listener]]\nname = \"tls\"\nbind = \"127.0.0.1:{tls}\"\n\
                 [[l7.listener.certificate]]\ncert = \"{dir}/cert.pem\"\nkey = \"{dir}/key.pem\"\n\
                 [[l7.route]]\nhost = \"*\"\npool = \"p\"\n\
                 [[l7.pool]]\nname = \"p\"\nservers = [{{ address = \"127.0.0.1:9\" }}]\n",
                admin = dir.join("admin.sock").display(),
                dir = dir.display(),
            )
        },
    );
    // A whole handshake with an IP address as SNI, then one the server must refuse (TLS 1.2
    // with a CBC cipher suite rustls does not offer): each made rustls warn before.
    let handshake = |extra: &[&str]| {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{tls}")])
            .args(["-servername", "127.0.0.1"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("openssl s_client (Debian openssl)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let whole = handshake(&[]);
    assert!(whole.contains("TLSv1.3"), "handshake:\n{whole}");
    handshake(&["-tls1_2", "-cipher", "AES128-SHA"]);
    // Both connections are over once openssl returns; a line, if any, is written by then.
    let admin = portier::admin::client::Target::Socket(daemon.dir.join("admin.sock"));
    let failures = || -> Option<String> {
        let text = portier::admin::client::request(&admin, "GET", "/metrics").ok()?;
        text.lines()
            .find(|l| l.starts_with("portier_l7_listener_tls_errors"))
            .map(str::to_owned)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut counted = failures();
    while counted.as_deref().is_none_or(|l| l.ends_with(" 0")) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        counted = failures();
    }
    let text = daemon.stop();
    assert!(
        counted.as_deref().is_some_and(|l| !l.ends_with(" 0")),
        "the refused handshake is not counted: {counted:?}"
    );
    assert!(
        !text.contains("rustls"),
        "a client's misstep was logged:\n{text}"
    );
}
