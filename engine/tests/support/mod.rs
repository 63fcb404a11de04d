//! The transcript driver shared by the session tests: a session against scripted server
//! bytes in virtual time, with the server bytes fed whole, byte by byte or in random chunks.
#![allow(dead_code)] // Each test file uses its own subset.

use std::sync::Arc;

use engine::pool::BufPool;
use engine::session::{Session, SessionConfig, SessionEvent, TX_BUF_LEN};
use engine::{Tick, WatchSpec};

#[derive(Clone, Copy, Debug)]
pub enum Split {
    Whole,
    Bytes,
    Random(u64),
}

pub struct Driver {
    pub session: Session,
    pub now: Tick,
    pub pool: BufPool,
    pub sent: Vec<u8>,
    pub events: Vec<SessionEvent>,
    pub split: Split,
    pub rng: u64,
    pub tx: Vec<u8>,
}

impl Driver {
    pub fn new(spec: WatchSpec, cfg: SessionConfig, split: Split) -> Driver {
        Driver::with_session(Session::new(Tick::ZERO, Arc::new(cfg), spec, 7), split)
    }

    /// Drives `session`, created at `Tick::ZERO`.
    pub fn with_session(session: Session, split: Split) -> Driver {
        let now = Tick::ZERO;
        let mut d = Driver {
            session,
            now,
            pool: BufPool::new(),
            sent: Vec::new(),
            events: Vec::new(),
            split,
            rng: match split {
                Split::Random(seed) => seed | 1,
                _ => 1,
            },
            tx: vec![0; TX_BUF_LEN],
        };
        d.session.handle_connected(now);
        d.collect();
        d
    }

    pub fn collect(&mut self) {
        loop {
            let n = self.session.poll_transmit(&mut self.tx);
            if n == 0 {
                break;
            }
            self.sent.extend_from_slice(&self.tx[..n]);
            self.tx[..n].fill(0);
        }
        while let Some(e) = self.session.poll_event() {
            self.events.push(e);
        }
    }

    pub fn next_chunk(&mut self, left: usize) -> usize {
        match self.split {
            Split::Whole => left,
            Split::Bytes => 1,
            Split::Random(_) => {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                1 + (self.rng as usize % left.min(17))
            }
        }
    }

    /// Feeds server bytes.
    pub fn s(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = self.next_chunk(rest.len());
            self.session
                .handle_input(self.now, &rest[..n], &mut self.pool);
            self.collect();
            rest = &rest[n..];
        }
    }

    /// Checks (and clears) what the client sent.
    pub fn c(&mut self, expected: &[u8]) {
        assert_eq!(
            String::from_utf8_lossy(&self.sent),
            String::from_utf8_lossy(expected),
            "client bytes at {:?}",
            self.now
        );
        self.sent.clear();
    }

    pub fn take_events(&mut self) -> Vec<SessionEvent> {
        std::mem::take(&mut self.events)
    }

    /// Jumps the clock to the next deadline (or `limit`, whichever is first) and handles it.
    pub fn run_to_next_deadline(&mut self, limit: Tick) -> Tick {
        let deadline = self.session.poll_timeout().min(limit);
        assert!(deadline >= self.now, "deadline in the past");
        self.now = deadline;
        self.session.handle_timeout(self.now);
        self.collect();
        deadline
    }
}

pub const SPLITS: [Split; 4] = [
    Split::Whole,
    Split::Bytes,
    Split::Random(0x9e37_79b9),
    Split::Random(12345),
];
