//! Control orders from the [`crate::Handle`]: faults, deliveries and
//! snapshots, applied by the worker between turns of its poll loop.

use super::*;

impl Worker {
    /// Answers every queued control order. Returns true on shutdown.
    pub(super) fn handle_orders(&mut self) -> bool {
        while let Ok(req) = self.rx.try_recv() {
            let answer = match req.order {
                Order::Shutdown => {
                    let _ = req.reply.send(Answer::Affected(self.slots.len()));
                    return true;
                }
                Order::Count => Answer::Count {
                    sessions: self.slots.len(),
                    selected: self.slots.iter().filter(|(_, s)| eligible(s)).count(),
                },
                Order::Timestamps => Answer::Timestamps(std::mem::take(&mut self.timestamps)),
                Order::Stats => Answer::Stats(self.snapshot()),
                Order::Reports => Answer::Reports(self.reports.iter().copied().collect()),
                Order::Quirk(user, quirk) => {
                    self.set_quirk(user, quirk);
                    Answer::Affected(0)
                }
                Order::User(user) => Answer::User(self.tally(user)),
                order => Answer::Affected(self.apply(order)),
            };
            let _ = req.reply.send(answer);
        }
        false
    }

    fn snapshot(&self) -> Stats {
        let mut s = self.stats;
        s.sessions = self.slots.len() as u64;
        for (_, slot) in &self.slots {
            s.idling += u64::from(slot.session.is_idling());
            s.selected += u64::from(slot.session.state() == State::Selected);
            s.tls_sessions += u64::from(slot.tls.is_some());
            s.stalled += u64::from(slot.stalled);
        }
        s.buffers_lent = self.pool.lent;
        s.timestamps_pending = self.timestamps.len() as u64;
        s
    }

    /// Applies a fault or delivery order; returns how many sessions it hit
    /// (`still-here` skips held sessions and does not count them).
    fn apply(&mut self, order: Order) -> usize {
        let target = match order {
            Order::Exists(t)
            | Order::Bye(t)
            | Order::StillHere(t)
            | Order::Stall(t, _)
            | Order::Garbage(t, _)
            | Order::HugeLine(t, _)
            | Order::Stream(t, _)
            | Order::Close(t) => t,
            Order::Count
            | Order::Timestamps
            | Order::Stats
            | Order::Reports
            | Order::Quirk(..)
            | Order::User(_)
            | Order::Shutdown => return 0,
        };
        let keys = self.resolve(target);
        let mut hit = keys.len();
        for &key in &keys {
            match order {
                Order::Exists(_) => self.deliver(key),
                Order::Bye(_) => {
                    self.out
                        .extend_from_slice(b"* BYE mock-imapd: bye from control\r\n");
                    if let Err(end) = self
                        .send_then_close(key, End::Bye)
                        .and_then(|()| self.flush(key))
                    {
                        self.close(key, end);
                    }
                }
                Order::StillHere(_) => {
                    if self.slots.get(key).is_some_and(|s| !s.held()) {
                        self.out.extend_from_slice(b"* OK Still here\r\n");
                        self.stats.still_here_sent += 1;
                        self.send_or_close(key);
                    } else {
                        hit -= 1;
                    }
                }
                Order::Stall(_, on) => self.stall(key, on),
                Order::Garbage(_, n) => {
                    let rng = &mut self.rng;
                    self.out.extend((0..n).map(|_| xorshift(rng) as u8));
                    self.send_or_close(key);
                }
                Order::HugeLine(_, n) => {
                    self.out.extend_from_slice(b"* OK ");
                    self.out.resize(self.out.len() + n.saturating_sub(7), b'x');
                    self.out.extend_from_slice(b"\r\n");
                    self.send_or_close(key);
                }
                Order::Stream(_, spec) => {
                    if !self.start_stream(key, spec) {
                        hit -= 1;
                    }
                }
                Order::Close(_) => self.close(key, End::Reset),
                Order::Count
                | Order::Timestamps
                | Order::Stats
                | Order::Reports
                | Order::Quirk(..)
                | Order::User(_)
                | Order::Shutdown => {}
            }
        }
        hit
    }

    /// One new message for `key`: announced now when the session may hear
    /// it unasked and is not held, else on its next NOOP or IDLE.
    fn deliver(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        slot.session.handle_exists();
        if !slot.held() {
            self.announce(key);
        }
    }

    fn announce(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let e = slot.session.poll_announce(&mut self.out);
        slot.unflushed_exists = slot.unflushed_exists.saturating_add(e.announced as u16);
        self.send_or_close(key);
    }

    fn stall(&mut self, key: usize, on: bool) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let was = slot.stalled;
        slot.stalled = on;
        if was && !on {
            // Catch up: news held back first (it was due while the client
            // still idled), then the input that arrived meanwhile, which
            // edge-triggered sockets will not report again.
            self.announce(key);
            if self.slots.get(key).is_some_and(|s| s.read_ready) {
                self.on_readable(key);
            }
        }
    }

    fn resolve(&mut self, target: Target) -> Vec<usize> {
        match target {
            Target::All => self.slots.iter().map(|(k, _)| k).collect(),
            Target::Named { index, user } => {
                if let Some(&key) = index.and_then(|i| self.by_index.get(&i)) {
                    return vec![key];
                }
                self.by_user
                    .range((user, 0)..=(user, usize::MAX))
                    .map(|&(_, k)| k)
                    .collect()
            }
            Target::Random(k) => {
                let mut keys: Vec<usize> = self
                    .slots
                    .iter()
                    .filter(|(_, s)| eligible(s))
                    .map(|(k, _)| k)
                    .collect();
                let k = k.min(keys.len());
                // Partial Fisher-Yates: the first k are a uniform sample.
                for i in 0..k {
                    let j = i + (xorshift(&mut self.rng) % (keys.len() - i) as u64) as usize;
                    keys.swap(i, j);
                }
                keys.truncate(k);
                keys
            }
        }
    }
}

/// A session `random` may pick: a mailbox is selected, not closing.
fn eligible(s: &Slot) -> bool {
    s.session.state() == State::Selected && s.closing.is_none()
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}
