//! Test harness for the L7 conformance suite: scripted raw-socket backends that record the
//! exact bytes of every request they receive, raw-socket clients, and a proxy started from a
//! TOML text. Everything listens on 127.0.0.1 with kernel-chosen ports.

use portier::l7::L7;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub const WAIT: Duration = Duration::from_secs(5);

/// How a backend answers one request (given its raw bytes).
pub type Reply = Arc<dyn Fn(&[u8]) -> Action + Send + Sync>;

pub enum Action {
    /// Write these bytes and keep the connection.
    Send(Vec<u8>),
    /// Write these bytes, then close.
    SendClose(Vec<u8>),
    /// Wait, then write.
    Delay(Duration, Vec<u8>),
    /// Close without answering.
    Close,
    /// Write these bytes, then splice: echo whatever arrives afterwards (upgrades).
    Echo(Vec<u8>),
}

pub struct Backend {
    pub addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Vec<u8>>,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn ok(name: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Backend: {name}\r\n\r\n{name}",
        name.len()
    )
    .into_bytes()
}

impl Backend {
    /// A backend that answers every request with 200 and its name as the body.
    pub async fn named(name: &str) -> Backend {
        let n = name.to_owned();
        Backend::scripted(name, Arc::new(move |_| Action::Send(ok(&n)))).await
    }

    pub async fn scripted(_name: &str, reply: Reply) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Backend::on(listener, reply)
    }

    pub fn on(listener: TcpListener, reply: Reply) -> Backend {
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, tx.clone(), reply.clone()));
            }
        });
        Backend {
            addr,
            requests: rx,
            connections,
            task,
        }
    }

    /// The next complete request this backend received, byte for byte.
    pub async fn request(&mut self) -> String {
        let bytes = tokio::time::timeout(WAIT, self.requests.recv())
            .await
            .expect("backend got no request in time")
            .expect("backend gone");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Asserts that no further request arrives within a short while.
    pub async fn no_request(&mut self) {
        if let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(200), self.requests.recv()).await
        {
            panic!("unexpected request: {:?}", String::from_utf8_lossy(&r));
        }
    }

    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while self.requests.try_recv().is_ok() {
            n += 1;
        }
        n
    }
}

async fn serve(stream: TcpStream, tx: mpsc::UnboundedSender<Vec<u8>>, reply: Reply) {
    let mut r = BufReader::new(stream);
    loop {
        let Some(req) = read_message(&mut r, false).await else {
            return;
        };
        let _ = tx.send(req.clone());
        let action = reply(&req);
        let s = r.get_mut();
        match action {
            Action::Send(b) => {
                if s.write_all(&b).await.is_err() {
                    return;
                }
            }
            Action::SendClose(b) => {
                let _ = s.write_all(&b).await;
                return;
            }
            Action::Delay(d, b) => {
                tokio::time::sleep(d).await;
                if s.write_all(&b).await.is_err() {
                    return;
                }
            }
            Action::Close => return,
            Action::Echo(b) => {
                if s.write_all(&b).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                loop {
                    let n = match r.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if r.get_mut().write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, out: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    let n = r.read_until(b'\n', &mut line).await.ok()?;
    if n == 0 {
        return None;
    }
    out.extend_from_slice(&line);
    Some(line)
}

/// Reads one HTTP/1 message (head and body, framing by Content-Length or chunked) and
/// returns its raw bytes. `response`: a message without framing runs to EOF.
pub async fn read_message<R: AsyncBufRead + Unpin>(r: &mut R, response: bool) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut length = None;
    let mut chunked = false;
    let mut no_body = false;
    let first = read_line(r, &mut out).await?;
    if response {
        let text = String::from_utf8_lossy(&first);
        let code = text.split_whitespace().nth(1).unwrap_or("");
        no_body = code.starts_with('1') || code == "204" || code == "304";
    }
    loop {
        let line = read_line(r, &mut out).await?;
        if line == b"\r\n" {
            break;
        }
        let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
        if let Some(v) = text.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
        if text.starts_with("transfer-encoding:") && text.contains("chunked") {
            chunked = true;
        }
    }
    if no_body {
        return Some(out);
    }
    if chunked {
        loop {
            let line = read_line(r, &mut out).await?;
            let size_text = String::from_utf8_lossy(&line);
            let size = usize::from_str_radix(size_text.trim().split(';').next()?, 16).ok()?;
            if size == 0 {
                loop {
                    let t = read_line(r, &mut out).await?;
                    if t == b"\r\n" {
                        return Some(out);
                    }
                }
            }
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk).await.ok()?;
            out.extend_from_slice(&chunk);
        }
    }
    match length {
        Some(n) => {
            let mut body = vec![0u8; n];
            r.read_exact(&mut body).await.ok()?;
            out.extend_from_slice(&body);
        }
        None if response => {
            r.read_to_end(&mut out).await.ok()?;
        }
        None => {}
    }
    Some(out)
}

/// A client connection speaking raw bytes.
pub struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).await.unwrap();
        Client {
            r: BufReader::new(s),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).await.unwrap();
    }

    /// The next response, raw; panics on timeout or close.
    pub async fn response(&mut self) -> String {
        let m = tokio::time::timeout(WAIT, read_message(&mut self.r, true))
            .await
            .expect("no response in time")
            .expect("connection closed before a response");
        String::from_utf8_lossy(&m).into_owned()
    }

    /// Whether the proxy closed the connection (EOF within the wait).
    pub async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(WAIT, self.r.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    pub fn stream(&mut self) -> &mut BufReader<TcpStream> {
        &mut self.r
    }
}

/// One request on a fresh connection.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut c = Client::connect(addr).await;
    c.send(bytes).await;
    c.response().await
}

pub fn get(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

pub fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

pub fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// The value of the first sample of `family` (with its suffix, any labels) in the proxy's
/// metrics text: for families with one series in the test's proxy.
pub fn metric(p: &L7, family: &str) -> u64 {
    p.metrics()
        .lines()
        .find(|l| l.starts_with(family))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {family}"))
}

/// Starts a proxy from an `[l7]` TOML text (the `[node]` section is added).
pub fn proxy(l7: &str) -> (L7, SocketAddr) {
    let text = format!("[node]\nname = \"t\"\n\n{l7}");
    let config = portier::config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    let mut p = L7::new();
    p.apply(config.l7.as_ref().expect("no [l7]")).unwrap();
    let first = config.l7.as_ref().unwrap().listeners[0].name.clone();
    let addr = p.local_addr(&first).unwrap();
    (p, addr)
}

pub fn reconfigure(p: &mut L7, l7: &str) {
    let text = format!("[node]\nname = \"t\"\n\n{l7}");
    let config = portier::config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    p.apply(config.l7.as_ref().unwrap()).unwrap();
}

/// A listener plus one pool named `p` with `servers` and routes for `*`.
pub fn simple(servers: &[&Backend], pool_extra: &str, listener_extra: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|b| format!("{{ address = \"{}\" }}", b.addr))
        .collect();
    format!(
        "[[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n{listener_extra}\n\
         [[l7.route]]\nhost = \"*\"\npool = \"p\"\n\n\
         [[l7.pool]]\nname = \"p\"\nservers = [{}]\n{pool_extra}\n",
        list.join(", ")
    )
}

/// Sends `body` while reading: what came back until the proxy closed, as text. The client
/// keeps sending what the proxy takes, as curl does, so an answer before the body's end
/// reaches it.
pub async fn send_reading(c: &mut Client, body: &[u8]) -> String {
    let (mut rd, mut wr) = c.stream().get_mut().split();
    let send = async {
        let _ = wr.write_all(body).await;
    };
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, rd.read_to_end(&mut got));
    let (_, r) = tokio::join!(send, read);
    // The proxy closes with the rest of the upload unread: the close may be a reset, after
    // the answer.
    let _ = r.expect("the client connection stayed open");
    String::from_utf8_lossy(&got).into_owned()
}
