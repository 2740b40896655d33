//! `[log] format = "json"`: every line the daemon writes is one JSON object with the event's
//! fields as keys, the access log included, so journald and log shippers keep them
//! structured.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod ports;

#[test]
fn json_log_lines_carry_structured_fields() {
    let dir = std::env::temp_dir().join(format!("portier-logjson-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let http = ports::daemon_ports(1)[0];
    let config = format!(
        "[node]\nname = \"logjson\"\n[log]\nformat = \"json\"\n[admin]\nsocket = \"{}\"\n\
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
