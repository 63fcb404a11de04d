//! `push-sink`: a stand-in push service for the end-to-end benchmarks.
//!
//! # What it never does
//!
//! - **No TLS, no chunked bodies, no HTTP/2.** Requests are read by
//!   `Content-Length` only; a request it cannot frame closes its connection.
//! - **No unbounded life or memory.** It exits after `--max-secs`, or when its
//!   standard input closes with `--exit-on-stdin-eof`; heads over 64 KiB,
//!   bodies over 1 MiB and connections past 4,096 are refused.
//! - **No threads per connection.** One mio loop serves every keep-alive
//!   connection; decryption (when asked for) runs on that loop too, so it
//!   costs the sink CPU that a benchmark sees.
//!
//! # What it does
//!
//! Answers every request with `--status` (default `201 Created`,
//! `Content-Length: 0`) and keeps the connection open (HTTP/1.1). Each
//! request is recorded, when `--record FILE` is given, as one line
//! `PATH ARRIVAL_UNIX_NS` (`CLOCK_REALTIME` right after the read that
//! completed the request), plus ` ok` or ` undecryptable` when it was
//! decrypted. The file is flushed after every turn of the event loop, so
//! another process can follow it.
//!
//! `--decrypt-keys FILE` holds lines `PATH_PREFIX PRIVATE_KEY AUTH` (the
//! user agent's raw P-256 scalar and auth secret, base64url); an
//! `aes128gcm` body is decrypted (RFC 8291) with the longest matching
//! prefix's keys, every `--decrypt-every N`th one.
//!
//! `GET /_sink/stats` answers the counters as JSON (not recorded), and the
//! same JSON is printed as a `stats {...}` line on exit.

use std::collections::HashMap;
use std::io::{BufWriter, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const USAGE: &str = "\
push-sink: a keep-alive HTTP/1.1 push service stand-in that records arrival times

  --listen ADDR           IP:PORT to listen on (default 127.0.0.1:0; the bound address is printed)
  --status CODE           status answered to every request (default 201)
  --decrypt-keys FILE     lines `PATH_PREFIX PRIVATE_KEY_B64URL AUTH_B64URL`: decrypt aes128gcm bodies
  --decrypt-every N       decrypt only every Nth encrypted request (default 1)
  --record FILE           append `PATH ARRIVAL_UNIX_NS [ok|undecryptable]` per request
  --max-secs S            exit after S seconds (default 3600)
  --exit-on-stdin-eof     exit when standard input closes (for a parent process)
";

const LISTENER: Token = Token(usize::MAX);
const HEAD_BYTES_MAX: usize = 64 * 1024;
const BODY_BYTES_MAX: usize = 1024 * 1024;
const CONNECTIONS_MAX: usize = 4096;
const HEADERS_MAX: usize = 64;
const READ_CHUNK: usize = 16 * 1024;

struct Cli {
    listen: SocketAddr,
    status: u16,
    keys: Vec<KeyEntry>,
    decrypt_every: u64,
    record: Option<String>,
    max_secs: u64,
    exit_on_stdin_eof: bool,
}

struct KeyEntry {
    prefix: String,
    private: [u8; 32],
    auth: [u8; 16],
}

fn b64(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|e| format!("bad base64url {text:?}: {e}"))
}

fn read_keys(path: &str) -> Result<Vec<KeyEntry>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [prefix, private, auth] = f[..] else {
            return Err(format!("{path}: want `PREFIX PRIVATE AUTH`, got {line:?}"));
        };
        keys.push(KeyEntry {
            prefix: prefix.to_string(),
            private: b64(private)?
                .try_into()
                .map_err(|_| "private key must be 32 bytes")?,
            auth: b64(auth)?
                .try_into()
                .map_err(|_| "auth secret must be 16 bytes")?,
        });
    }
    // Longest prefix first, so the first match is the best one.
    keys.sort_by_key(|k| std::cmp::Reverse(k.prefix.len()));
    Ok(keys)
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Cli, String> {
    let mut cli = Cli {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        status: 201,
        keys: Vec::new(),
        decrypt_every: 1,
        record: None,
        max_secs: 3600,
        exit_on_stdin_eof: false,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |v: &str| format!("{flag}: bad value {v:?}");
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                cli.listen = v.parse().map_err(|_| bad(&v))?;
            }
            "--status" => {
                let v = value()?;
                cli.status = v
                    .parse()
                    .ok()
                    .filter(|s| (100..600).contains(s))
                    .ok_or_else(|| bad(&v))?;
            }
            "--decrypt-keys" => cli.keys = read_keys(&value()?)?,
            "--decrypt-every" => {
                let v = value()?;
                cli.decrypt_every = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| bad(&v))?;
            }
            "--record" => cli.record = Some(value()?),
            "--max-secs" => {
                let v = value()?;
                cli.max_secs = v.parse().map_err(|_| bad(&v))?;
            }
            "--exit-on-stdin-eof" => cli.exit_on_stdin_eof = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(cli)
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[derive(Default)]
struct Stats {
    connections: u64,
    requests: u64,
    bytes: u64,
    encrypted: u64,
    decrypted: u64,
    undecryptable: u64,
    refused: u64,
    first_ns: u64,
    last_ns: u64,
}

impl Stats {
    fn json(&self) -> String {
        format!(
            "{{\"connections\":{},\"requests\":{},\"bytes\":{},\"encrypted\":{},\"decrypted\":{},\"undecryptable\":{},\"refused\":{},\"first_ns\":{},\"last_ns\":{}}}",
            self.connections,
            self.requests,
            self.bytes,
            self.encrypted,
            self.decrypted,
            self.undecryptable,
            self.refused,
            self.first_ns,
            self.last_ns
        )
    }
}

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    /// Response bytes the socket did not take yet.
    output: Vec<u8>,
    closing: bool,
}

/// One complete request taken off a connection's input.
struct Request {
    path: String,
    close: bool,
    encrypted: bool,
    body: Vec<u8>,
}

/// What the framing of a connection's input says.
enum Framed {
    Request(Request, usize),
    Incomplete,
    Malformed,
}

fn frame(input: &[u8]) -> Framed {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() <= HEAD_BYTES_MAX => {
            return Framed::Incomplete
        }
        _ => return Framed::Malformed,
    };
    let mut body_len = 0usize;
    let (mut close, mut encrypted) = (false, false);
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            match value.parse() {
                Ok(n) if n <= BODY_BYTES_MAX => body_len = n,
                _ => return Framed::Malformed,
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Framed::Malformed;
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        } else if h.name.eq_ignore_ascii_case("content-encoding") {
            encrypted = value.eq_ignore_ascii_case("aes128gcm");
        }
    }
    if input.len() < head_len + body_len {
        return Framed::Incomplete;
    }
    let request = Request {
        path: req.path.unwrap_or("/").to_string(),
        close,
        encrypted,
        body: input[head_len..head_len + body_len].to_vec(),
    };
    Framed::Request(request, head_len + body_len)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        410 => "Gone",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

struct Sink {
    status: u16,
    keys: Vec<KeyEntry>,
    decrypt_every: u64,
    /// Encrypted requests to let pass before the next decryption.
    decrypt_skip: u64,
    record: Option<BufWriter<std::fs::File>>,
    stats: Stats,
}

impl Sink {
    /// Records `request` and returns the response bytes.
    fn handle(&mut self, request: &Request, arrival_ns: u64) -> Vec<u8> {
        if request.path == "/_sink/stats" {
            let body = self.stats.json();
            return format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes();
        }
        self.stats.requests += 1;
        self.stats.bytes += request.body.len() as u64;
        if self.stats.first_ns == 0 {
            self.stats.first_ns = arrival_ns;
        }
        self.stats.last_ns = arrival_ns;
        let verdict = self.decrypt(request);
        if let Some(out) = self.record.as_mut() {
            let _ = match verdict {
                Some(true) => writeln!(out, "{} {arrival_ns} ok", request.path),
                Some(false) => writeln!(out, "{} {arrival_ns} undecryptable", request.path),
                None => writeln!(out, "{} {arrival_ns}", request.path),
            };
        }
        let close = if request.close {
            "Connection: close\r\n"
        } else {
            ""
        };
        format!(
            "HTTP/1.1 {} {}\r\nContent-Length: 0\r\n{close}\r\n",
            self.status,
            reason(self.status)
        )
        .into_bytes()
    }

    /// `Some(decrypted?)` when this request was picked for decryption.
    fn decrypt(&mut self, request: &Request) -> Option<bool> {
        if !request.encrypted {
            return None;
        }
        self.stats.encrypted += 1;
        if self.keys.is_empty() {
            return None;
        }
        // Decrypt the 1st, (N+1)th, (2N+1)th... encrypted request.
        if self.decrypt_skip > 0 {
            self.decrypt_skip -= 1;
            return None;
        }
        self.decrypt_skip = self.decrypt_every - 1;
        let ok = self
            .keys
            .iter()
            .find(|k| request.path.starts_with(&k.prefix))
            .is_some_and(|k| push::ece::decrypt(&request.body, &k.private, &k.auth).is_ok());
        if ok {
            self.stats.decrypted += 1;
        } else {
            self.stats.undecryptable += 1;
        }
        Some(ok)
    }

    /// Reads what `conn` has, answers every complete request; `false` when
    /// the connection should go.
    fn on_readable(&mut self, conn: &mut Conn) -> bool {
        let mut chunk = [0u8; READ_CHUNK];
        let mut arrival_ns = 0;
        loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    conn.input.extend_from_slice(&chunk[..n]);
                    arrival_ns = unix_ns();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
            if conn.input.len() > HEAD_BYTES_MAX + BODY_BYTES_MAX {
                return false;
            }
        }
        let mut used = 0;
        loop {
            match frame(&conn.input[used..]) {
                Framed::Request(request, len) => {
                    used += len;
                    let response = self.handle(&request, arrival_ns);
                    conn.output.extend_from_slice(&response);
                    if request.close {
                        conn.closing = true;
                        break;
                    }
                }
                Framed::Incomplete => break,
                Framed::Malformed => return false,
            }
        }
        conn.input.drain(..used);
        flush_output(conn) && !(conn.closing && conn.output.is_empty())
    }
}

/// Writes the parked output; `false` on a broken connection.
fn flush_output(conn: &mut Conn) -> bool {
    while !conn.output.is_empty() {
        match conn.stream.write(&conn.output) {
            Ok(0) => return false,
            Ok(n) => {
                conn.output.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

fn watch_stdin(flag: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
        flag.store(true, Ordering::SeqCst);
    });
}

fn serve(cli: Cli) -> Result<Stats, String> {
    let mut listener = TcpListener::bind(cli.listen).map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let record = match &cli.record {
        Some(path) => Some(BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("{path}: {e}"))?,
        )),
        None => None,
    };
    let mut sink = Sink {
        status: cli.status,
        keys: cli.keys,
        decrypt_every: cli.decrypt_every,
        decrypt_skip: 0,
        record,
        stats: Stats::default(),
    };
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    let stdin_closed = Arc::new(AtomicBool::new(false));
    if cli.exit_on_stdin_eof {
        watch_stdin(Arc::clone(&stdin_closed));
    }
    println!("listening {addr}");
    let _ = std::io::stdout().flush();
    let deadline = Instant::now() + Duration::from_secs(cli.max_secs);
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut next_token = 0usize;
    let mut events = Events::with_capacity(1024);
    while Instant::now() < deadline && !stdin_closed.load(Ordering::SeqCst) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(100))) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept_all(
                    &listener,
                    &poll,
                    &mut conns,
                    &mut next_token,
                    &mut sink.stats,
                );
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(&key) else {
                continue;
            };
            let keep = (!event.is_writable() || flush_output(conn))
                && (!event.is_readable() || sink.on_readable(conn))
                && !(conn.closing && conn.output.is_empty());
            if !keep {
                if let Some(mut gone) = conns.remove(&key) {
                    let _ = poll.registry().deregister(&mut gone.stream);
                }
            }
        }
        if let Some(out) = sink.record.as_mut() {
            out.flush().map_err(|e| format!("record: {e}"))?;
        }
    }
    Ok(sink.stats)
}

fn accept_all(
    listener: &TcpListener,
    poll: &Poll,
    conns: &mut HashMap<usize, Conn>,
    next_token: &mut usize,
    stats: &mut Stats,
) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                if conns.len() >= CONNECTIONS_MAX {
                    stats.refused += 1;
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let token = *next_token;
                *next_token = next_token.wrapping_add(1) % (usize::MAX - 1);
                let interest = Interest::READABLE | Interest::WRITABLE;
                if poll
                    .registry()
                    .register(&mut stream, Token(token), interest)
                    .is_ok()
                {
                    stats.connections += 1;
                    conns.insert(
                        token,
                        Conn {
                            stream,
                            input: Vec::new(),
                            output: Vec::new(),
                            closing: false,
                        },
                    );
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // EMFILE and friends: try again on the next readiness.
            Err(_) => return,
        }
    }
}

fn main() -> ExitCode {
    let cli = match parse_args(std::env::args().skip(1)) {
        Ok(cli) => cli,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("push-sink: {e}\n");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match serve(cli) {
        Ok(stats) => {
            println!("stats {}", stats.json());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("push-sink: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_pipelined_requests_and_partial_bodies() {
        let two = b"POST /n/1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}POST /n/2 HTTP/1.1\r\nContent-Encoding: aes128gcm\r\nContent-Length: 3\r\n\r\nab";
        let Framed::Request(first, used) = frame(two) else {
            panic!("first request");
        };
        assert_eq!(first.path, "/n/1");
        assert_eq!(first.body, b"{}");
        assert!(!first.encrypted);
        assert!(matches!(frame(&two[used..]), Framed::Incomplete));
        assert!(matches!(
            frame(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Framed::Malformed
        ));
    }
}
