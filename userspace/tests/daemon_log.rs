//! What the daemon writes to its log: with `[log] format = "json"` every line is one JSON
//! object with the event's fields as keys, the access log included, so journald and log
//! shippers keep them structured; and what clients do wrong in a TLS handshake never writes a
//! line, so no client can flood the log.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod ports;

#[test]
fn json_log_lines_carry_structured_fields() {
    let dir = std::env::temp_dir().join(format!("portier-logjson-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let [http, listen] = ports::daemon_ports(2)[..] else {
        unreachable!()
    };
    let config = format!(
        "[node]\nname = \"logjson\"\n[log]\nformat = \"json\"\n[admin]\nsocket = \"{}\"\n\
         listen = \"127.0.0.1:{listen}\"\n\
         [[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:{http}\"\naccess_log = true\n\
         [[l7.route]]\nhost = \"*\"\npool = \"p\"\n\
         [[l7.pool]]\nname = \"p\"\nservers = [{{ address = \"127.0.0.1:9\" }}]\n",
        dir.join("admin.sock").display()
    );
    let file = dir.join("portier.toml");
    std::fs::write(&file, config).expect("config");
    let log = dir.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_portier"))
        .args(["run", "--config"])
        .arg(&file)
        .stderr(std::fs::File::create(&log).expect("log file"))
        .stdout(Stdio::null())
        .spawn()
        .expect("portier run");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !read().contains("portier ready") {
        assert!(Instant::now() < deadline, "not ready:\n{}", read());
        std::thread::sleep(Duration::from_millis(20));
    }
    // One request through the listener: the server refuses, the proxy answers, and the
    // access log says so.
    let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /x HTTP/1.1\r\nHost: todo.example\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    while !read().contains("portier::access") {
        assert!(Instant::now() < deadline, "no access line:\n{}", read());
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = read();
    let _ = std::fs::remove_dir_all(&dir);

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
    let dir = std::env::temp_dir().join(format!("portier-logtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let signed =
        rcgen::generate_simple_self_signed(vec!["todo.example".to_owned()]).expect("certificate");
    std::fs::write(dir.join("cert.pem"), signed.cert.pem()).expect("cert");
    std::fs::write(dir.join("key.pem"), signed.signing_key.serialize_pem()).expect("key");
    let [tls, listen] = ports::daemon_ports(2)[..] else {
        unreachable!()
    };
    let config = format!(
        "[node]\nname = \"logtls\"\n[admin]\nsocket = \"{admin}\"\nlisten = \"127.0.0.1:{listen}\"\n\
         [[l7.listener]]\nname = \"tls\"\nbind = \"127.0.0.1:{tls}\"\n\
         [[l7.listener.certificate]]\ncert = \"{dir}/cert.pem\"\nkey = \"{dir}/key.pem\"\n\
         [[l7.route]]\nhost = \"*\"\npool = \"p\"\n\
         [[l7.pool]]\nname = \"p\"\nservers = [{{ address = \"127.0.0.1:9\" }}]\n",
        admin = dir.join("admin.sock").display(),
        dir = dir.display(),
    );
    let file = dir.join("portier.toml");
    std::fs::write(&file, config).expect("config");
    let log = dir.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_portier"))
        .args(["run", "--config"])
        .arg(&file)
        .env_remove("RUST_LOG")
        .stderr(std::fs::File::create(&log).expect("log file"))
        .stdout(Stdio::null())
        .spawn()
        .expect("portier run");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !read().contains("portier ready") {
        assert!(Instant::now() < deadline, "not ready:\n{}", read());
        std::thread::sleep(Duration::from_millis(20));
    }
    // A whole handshake with an IP address as SNI, then one the server must refuse (TLS 1.0
    // only): each made rustls warn before.
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
    let admin = portier::admin::client::Target::Socket(dir.join("admin.sock"));
    let failures = || -> Option<String> {
        let text = portier::admin::client::request(&admin, "GET", "/metrics").ok()?;
        text.lines()
            .find(|l| l.starts_with("portier_l7_listener_tls_errors"))
            .map(str::to_owned)
    };
    let mut counted = failures();
    while counted.as_deref().is_none_or(|l| l.ends_with(" 0")) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        counted = failures();
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = read();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        counted.as_deref().is_some_and(|l| !l.ends_with(" 0")),
        "the refused handshake is not counted: {counted:?}"
    );
    assert!(
        !text.contains("rustls"),
        "a client's misstep was logged:\n{text}"
    );
}
