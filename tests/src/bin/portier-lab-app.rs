//! The lab's stand-in workload: a tiny HTTP/1.1 server whose response body names it, plus a
//! UDP responder. It runs inside lab namespaces only.
//!
//! `GET /?size=N` pads the body to N bytes so tests can tell reply traffic apart from requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::thread;

fn main() {
    let mut name = String::from("app");
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
    eprintln!("portier-lab-app {name} ready");
    for h in handles {
        let _ = h.join();
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
        let size = request_line
            .split_whitespace()
            .nth(1)
            .and_then(|path| path.split_once("size="))
            .and_then(|(_, n)| n.split('&').next()?.parse::<usize>().ok())
            .unwrap_or(0);
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
