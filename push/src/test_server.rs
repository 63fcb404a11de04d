//! A tiny HTTP/1.1 server on 127.0.0.1 for sender tests.
//!
//! The last path segment picks the answer: `/201`, `/404`, `/410`, `/413`,
//! `/429` (with `Retry-After: 7`), `/429date` (with an HTTP-date),
//! `/500`, `/301` (with `Location: /201`), `/slow` (answers after 2 s).
//! Every request is recorded for the test to inspect. Connections are kept
//! alive, and the number accepted is counted, to observe pooling.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// The IMF-fixdate `/429date` answers with, and its Unix time.
pub(crate) const RETRY_DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
pub(crate) const RETRY_DATE_UNIX: u64 = 784_111_777;

#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub method: String,
    pub path: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) struct TestServer {
    pub addr: SocketAddr,
    requests: Receiver<Recorded>,
    connections: Arc<AtomicUsize>,
}

impl TestServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = mpsc::channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                thread::spawn(move || serve(stream, tx));
            }
        });
        Self {
            addr,
            requests: rx,
            connections,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request recorded so far. The sender has read the response
    /// before this is called, and the server records before it answers, so
    /// nothing is in flight.
    pub fn take(&self) -> Vec<Recorded> {
        self.requests.try_iter().collect()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, tx: Sender<Recorded>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        let response = respond(&request.path);
        if tx.send(request).is_err() {
            return;
        }
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Recorded> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        method,
        path,
        headers,
        body,
    })
}

fn respond(path: &str) -> String {
    let last = path.rsplit('/').next().unwrap_or("");
    let (status, extra) = match last {
        "201" => ("201 Created", String::new()),
        "404" => ("404 Not Found", String::new()),
        "410" => ("410 Gone", String::new()),
        "413" => ("413 Content Too Large", String::new()),
        "429" => ("429 Too Many Requests", "Retry-After: 7\r\n".to_owned()),
        "429date" => (
            "429 Too Many Requests",
            format!("Retry-After: {RETRY_DATE}\r\n"),
        ),
        "500" => ("500 Internal Server Error", String::new()),
        "301" => ("301 Moved Permanently", "Location: /201\r\n".to_owned()),
        "slow" => {
            thread::sleep(Duration::from_secs(2));
            ("201 Created", String::new())
        }
        _ => ("400 Bad Request", String::new()),
    };
    let body = "ok";
    format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}
