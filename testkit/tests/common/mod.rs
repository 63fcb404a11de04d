//! A deliberately tiny, hand-written IMAP client for the harness' own tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Imap<S: Read + Write> {
    io: BufReader<S>,
    next_tag: u32,
}

pub fn connect_plain(port: u16) -> Imap<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    Imap::new(s)
}

impl<S: Read + Write> Imap<S> {
    pub fn new(stream: S) -> Self {
        Imap {
            io: BufReader::new(stream),
            next_tag: 1,
        }
    }

    pub fn stream(&mut self) -> &mut S {
        self.io.get_mut()
    }

    pub fn into_inner(self) -> S {
        assert!(self.io.buffer().is_empty(), "unread data in buffer");
        self.io.into_inner()
    }

    /// One response line including CRLF, as text (lossy).
    pub fn read_line(&mut self) -> String {
        let mut buf = Vec::new();
        let n = self.io.read_until(b'\n', &mut buf).expect("read line");
        assert!(n > 0, "connection closed by server");
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Read a line, but return None on EOF or error (for disconnect tests).
    pub fn try_read_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.io.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
        }
    }

    pub fn send(&mut self, data: &[u8]) {
        let s = self.io.get_mut();
        s.write_all(data).expect("write");
        s.flush().expect("flush");
    }

    pub fn greeting(&mut self) -> String {
        let g = self.read_line();
        assert!(g.starts_with("* OK"), "greeting: {g:?}");
        g
    }

    fn tag(&mut self) -> String {
        let t = format!("t{}", self.next_tag);
        self.next_tag += 1;
        t
    }

    /// Send `cmd` with a fresh tag; return all lines up to and including
    /// the tagged one.
    pub fn command(&mut self, cmd: &str) -> Vec<String> {
        let tag = self.tag();
        self.send(format!("{tag} {cmd}\r\n").as_bytes());
        self.read_until_tagged(&tag)
    }

    pub fn command_ok(&mut self, cmd: &str) -> Vec<String> {
        let lines = self.command(cmd);
        let last = lines.last().unwrap();
        assert!(last.split(' ').nth(1) == Some("OK"), "{cmd}: {lines:?}");
        lines
    }

    pub fn read_until_tagged(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line();
            let done = line.starts_with(&format!("{tag} "));
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// LOGIN with both arguments as synchronizing literals, so the password
    /// may contain anything but NUL. Returns the tagged response line.
    pub fn login_literal(&mut self, user: &[u8], password: &[u8]) -> String {
        let tag = self.tag();
        self.send(format!("{tag} LOGIN {{{}}}\r\n", user.len()).as_bytes());
        self.expect_continuation();
        let mut buf = user.to_vec();
        buf.extend_from_slice(format!(" {{{}}}\r\n", password.len()).as_bytes());
        self.send(&buf);
        self.expect_continuation();
        let mut buf = password.to_vec();
        buf.extend_from_slice(b"\r\n");
        self.send(&buf);
        self.read_until_tagged(&tag).pop().unwrap()
    }

    /// AUTHENTICATE PLAIN with SASL-IR.
    pub fn login_plain(&mut self, user: &str, password: &[u8]) -> String {
        use base64::Engine as _;
        let mut raw = vec![0u8];
        raw.extend_from_slice(user.as_bytes());
        raw.push(0);
        raw.extend_from_slice(password);
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        self.command(&format!("AUTHENTICATE PLAIN {b64}"))
            .pop()
            .unwrap()
    }

    fn expect_continuation(&mut self) {
        let line = self.read_line();
        assert!(line.starts_with('+'), "expected continuation, got {line:?}");
    }

    /// Read lines until one satisfies `pred` or `timeout` passes (the socket
    /// read timeout must be shorter than or equal to TIMEOUT).
    pub fn wait_for_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let line = self.read_line();
            if pred(&line) {
                return line;
            }
            seen.push(line);
        }
        panic!("no matching line within {timeout:?}; saw {seen:?}");
    }
}

/// The capability atoms in a `* CAPABILITY ...` or `[CAPABILITY ...]` line.
pub fn capabilities_in(line: &str) -> Vec<String> {
    let start = if let Some(i) = line.find("[CAPABILITY ") {
        i + "[CAPABILITY ".len()
    } else if let Some(rest) = line.strip_prefix("* CAPABILITY ") {
        line.len() - rest.len()
    } else {
        panic!("no capability list in {line:?}");
    };
    let rest = &line[start..];
    let end = rest.find(']').unwrap_or(rest.len());
    rest[..end].split_whitespace().map(str::to_string).collect()
}
