//! The reactor's side of streamed faults ([`crate::stream`]): start one on a
//! session, write it as the socket drains, wake for drips and limits, and keep
//! the reports.

use std::io::{self, Write as _};
use std::time::Instant;

use super::{End, Worker};
use crate::stream::{Step, Stream, StreamSpec};

/// Reports kept; older ones are dropped (a report is about 64 bytes).
pub(crate) const REPORTS_MAX: usize = 4096;

impl Worker {
    /// Starts `spec` on `key`; `false` if that session cannot take it (TLS,
    /// closing, or already streaming).
    pub(super) fn start_stream(&mut self, key: usize, spec: StreamSpec) -> bool {
        self.start_stream_with(key, Stream::new(spec, Instant::now()))
    }

    /// Like [`Worker::start_stream`], and the session is closed when the stream
    /// ends.
    pub(super) fn start_stream_then_close(&mut self, key: usize, spec: StreamSpec) -> bool {
        self.start_stream_with(key, Stream::new(spec, Instant::now()).then_close())
    }

    fn start_stream_with(&mut self, key: usize, stream: Stream) -> bool {
        let Some(slot) = self.slots.get_mut(key) else {
            return false;
        };
        if slot.tls.is_some() || slot.streaming || slot.closing.is_some() {
            return false;
        }
        slot.streaming = true;
        self.streams.insert(key, Box::new(stream));
        self.drive_stream(key);
        true
    }

    /// The earliest instant a stream must be looked at without a socket event.
    pub(super) fn stream_wake_at(&self) -> Option<Instant> {
        self.streams.values().map(|s| s.wake_at()).min()
    }

    /// Drives every stream whose drip, limit or stall instant has come.
    pub(super) fn fire_streams(&mut self, now: Instant) {
        let due: Vec<usize> = self
            .streams
            .iter()
            .filter(|(_, s)| s.wake_at() <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.drive_stream(key);
        }
    }

    /// Writes what the stream has due until the socket is full; ends the stream
    /// (and, on a write error, the session) when it is over.
    pub(super) fn drive_stream(&mut self, key: usize) {
        if let Err(end) = self.flush(key) {
            self.close(key, end);
            return;
        }
        let outcome = loop {
            let (Some(slot), Some(stream)) = (self.slots.get(key), self.streams.get_mut(&key))
            else {
                return;
            };
            if slot.tail.is_some() {
                // Parked output goes first; the writable event brings us back.
                return;
            }
            let now = Instant::now();
            match stream.step(now) {
                Step::Write(bytes) => match (&slot.stream).write(bytes) {
                    Ok(0) => break Some(io::ErrorKind::WriteZero),
                    Ok(n) => {
                        stream.wrote(n, now);
                        self.stats.bytes_out += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Some(e.kind()),
                },
                Step::WaitUntil(_) => return,
                Step::Done(error) => {
                    let close = stream.closes_after();
                    self.end_stream(key, error);
                    match error {
                        Some(kind) => self.close(key, End::Io(kind)),
                        None if close => self.close(key, End::Bye),
                        None => self.resume(key),
                    }
                    return;
                }
            }
        };
        if let Some(kind) = outcome {
            self.end_stream(key, Some(kind));
            self.close(key, End::Io(kind));
        }
    }

    /// Removes `key`'s stream and files its report.
    pub(super) fn end_stream(&mut self, key: usize, error: Option<io::ErrorKind>) {
        let Some(stream) = self.streams.remove(&key) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        slot.streaming = false;
        let report = stream.report(slot.index, slot.session.user_hash(), error, Instant::now());
        if self.reports.len() == REPORTS_MAX {
            self.reports.pop_front();
        }
        self.reports.push_back(report);
    }

    /// A stream ended well: the session answers again, input that waited first.
    fn resume(&mut self, key: usize) {
        if self.slots.get(key).is_some_and(|s| s.read_ready) {
            self.on_readable(key);
        }
    }
}
