//! Shared test fixtures: a routing test application, a tiny std::net client,
//! and waiting on the server's counters.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use httpd::{Config, Limits, Request, RequestId, Responder, Response, Server, ServerHandle, Stats};

/// How long a test waits for anything before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Routes of the test application:
/// - `/echo`: 200, body echoed, `x-method` and `x-query` headers.
/// - `/async?ms=N`: the same as `/echo`, answered from another thread N ms
///   later.
/// - `/repeat?n=N`: answered N times from inside the handler, before the
///   server thread can apply any answer (the first is served, the rest are stale
///   or find the answer queue full).
/// - `/hold`: not answered; the request is sent to the test instead.
/// - `/invalid`: answered with a response that breaks a rule (CRLF in a
///   header value).
/// - anything else: 404.
pub struct App {
    held: mpsc::Sender<Request>,
}

impl httpd::Handler for App {
    fn handle(&mut self, request: Request, responder: &Responder) {
        match request.path.as_str() {
            "/echo" => responder.respond(request.id, echo(&request)),
            "/async" => {
                let ms: u64 = request
                    .query
                    .as_deref()
                    .and_then(|q| q.strip_prefix("ms="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let responder = responder.clone();
                thread::spawn(move || {
                    thread::sleep(Duration::from_millis(ms));
                    responder.respond(request.id, echo(&request));
                });
            }
            "/repeat" => {
                let n: usize = request
                    .query
                    .as_deref()
                    .and_then(|q| q.strip_prefix("n="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                for _ in 0..n {
                    responder.respond(request.id, echo(&request));
                }
            }
            "/hold" => {
                let _ = self.held.send(request);
            }
            "/invalid" => {
                responder.respond(
                    request.id,
                    Response::empty(200).with_header("x", "a\r\nb: c"),
                );
            }
            _ => responder.respond(request.id, Response::json(404, r#"{"error":"not found"}"#)),
        }
    }
}

fn echo(request: &Request) -> Response {
    Response::empty(200)
        .with_header("x-method", request.method.as_str())
        .with_header("x-query", request.query.clone().unwrap_or_default())
        .with_body(request.body.to_vec())
}

/// A running server with the test application.
pub struct TestServer {
    pub handle: ServerHandle,
    /// Requests to `/hold`.
    pub held: mpsc::Receiver<Request>,
}

impl TestServer {
    pub fn start(limits: Limits) -> TestServer {
        TestServer::start_with(Config {
            limits,
            ..Config::default()
        })
    }

    pub fn start_with(config: Config) -> TestServer {
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), config).expect("bind");
        let (held_tx, held) = mpsc::channel();
        let handle = server.spawn(App { held: held_tx }).expect("spawn");
        TestServer { handle, held }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    pub fn connect(&self) -> Client<TcpStream> {
        Client::connect(self.addr())
    }

    pub fn held_request(&self) -> Request {
        self.held.recv_timeout(PATIENCE).expect("a held request")
    }

    pub fn responder(&self) -> Responder {
        self.handle.responder()
    }

    /// Waits until the published counters satisfy `pred`.
    pub fn wait_stats(&self, what: &str, pred: impl Fn(&Stats) -> bool) -> Stats {
        let start = Instant::now();
        loop {
            let stats = self.handle.stats();
            if pred(&stats) {
                return stats;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for {what}: {stats:#?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn closes(&self) -> bool {
        self.header("connection") == Some("close")
    }
}

/// How reading a response ended without one.
#[derive(Debug, PartialEq, Eq)]
pub enum NoReply {
    Eof,
    Reset,
}

/// A blocking client over any byte stream (TCP or TLS).
pub struct Client<S> {
    pub stream: S,
    buf: Vec<u8>,
}

impl Client<TcpStream> {
    pub fn connect(addr: SocketAddr) -> Client<TcpStream> {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client::new(stream)
    }
}

impl<S: Read + Write> Client<S> {
    pub fn new(stream: S) -> Client<S> {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
        self.stream.flush().expect("flush");
    }

    /// Sends a request and reads its response.
    pub fn exchange(&mut self, request: &[u8]) -> Reply {
        self.send(request);
        self.reply()
    }

    /// The next response, which must come.
    pub fn reply(&mut self) -> Reply {
        self.try_reply(false).expect("a response")
    }

    /// The next response to a HEAD request: fields only.
    pub fn reply_to_head(&mut self) -> Reply {
        self.try_reply(true).expect("a response")
    }

    pub fn try_reply(&mut self, head_only: bool) -> Result<Reply, NoReply> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(len) =
                parsed.parse(&self.buf).expect("valid response")
            {
                let status = parsed.code.expect("status");
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8(h.value.to_vec()).unwrap(),
                        )
                    })
                    .collect();
                let body_len = match headers.iter().find(|(n, _)| n == "content-length") {
                    Some(_) if head_only => 0,
                    Some((_, v)) => v.parse().expect("content-length"),
                    None => 0,
                };
                self.fill_to(len + body_len)?;
                let body = self.buf[len..len + body_len].to_vec();
                self.buf.drain(..len + body_len);
                return Ok(Reply {
                    status,
                    headers,
                    body,
                });
            }
            self.fill_more()?;
        }
    }

    fn fill_to(&mut self, len: usize) -> Result<(), NoReply> {
        while self.buf.len() < len {
            self.fill_more()?;
        }
        Ok(())
    }

    fn fill_more(&mut self) -> Result<(), NoReply> {
        let mut chunk = [0; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(NoReply::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Err(NoReply::Reset),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(NoReply::Eof),
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// Asserts the server closes the connection with nothing more to say.
    pub fn expect_closed(&mut self) {
        let end = self.fill_more();
        assert!(
            end.is_err(),
            "expected close, got {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        assert!(
            self.buf.is_empty(),
            "unread bytes before close: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }
}

pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

pub fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Used by tests that hold a request id past its connection.
pub fn respond_ok(responder: &Responder, id: RequestId) {
    responder.respond(id, Response::text(200, "late"));
}
