//! A reactor's part of a handover (see [`crate::handover`]): handing sessions over as they
//! reach a handover point, and going on with handed-over ones.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::Sender;
use mio::net::TcpStream;
use mio::Interest;

use super::{token_for, Reactor, Slot};
use crate::handover::{unix_ms_now, Handover};
use crate::reason::EndReason;
use crate::session::Session;
use crate::time::Tick;
use crate::tls::Tls;

/// During a handover, how often a reactor looks again for sessions that reached a
/// handover point (a command in flight finishing) without any socket event.
pub(super) const EXPORT_RECHECK: Duration = Duration::from_millis(5);

/// A handover under way in one reactor.
pub(super) struct Exporting {
    pub(super) until: Tick,
    pub(super) reply: Sender<Vec<Handover>>,
    pub(super) done: Vec<Handover>,
}

impl Reactor {
    /// During a handover: hands over every session at a handover point; at the deadline
    /// (or when none is left) replies with them. The others stay and are served on.
    pub(super) fn export_ready(&mut self, now: Tick) {
        let Some(exporting) = self.exporting.as_mut() else {
            return;
        };
        let unix_now_ms = unix_ms_now();
        let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
        for key in keys {
            let slot = &self.slots[key];
            if slot.deferred || slot.parked.is_some() || !slot.connected {
                continue;
            }
            let Some(state) = slot.session.export(now, unix_now_ms) else {
                continue;
            };
            let tls = match &slot.tls {
                Some(tls) => match tls.export() {
                    Some(t) => Some(t),
                    None => continue,
                },
                None => None,
            };
            let mut slot = self.slots.remove(key);
            let _ = self.poll.registry().deregister(&mut slot.sock);
            if let Some(tls) = slot.tls.as_mut() {
                tls.release(&mut self.records);
                self.shared
                    .counters
                    .tls_compact
                    .fetch_sub(1, Ordering::Relaxed);
            }
            slot.session.release(&mut self.pool);
            self.ids.remove(&slot.id);
            self.shared
                .counters
                .sessions
                .fetch_sub(1, Ordering::Relaxed);
            self.shared.live_sessions.fetch_sub(1, Ordering::Relaxed);
            let fd = std::os::fd::IntoRawFd::into_raw_fd(slot.sock);
            exporting.done.push(Handover::new(slot.id, fd, state, tls));
        }
        if self.slots.is_empty() || now >= exporting.until {
            if let Some(exporting) = self.exporting.take() {
                // The engine waits for the reply; if it gave up, the sessions close.
                let _ = exporting.reply.send(exporting.done);
            }
        }
    }

    /// Goes on with a handed-over session: its socket registered, its deadlines filed,
    /// and whatever arrived meanwhile read.
    pub(super) fn adopt(&mut self, now: Tick, handover: Handover) {
        let (fd, id, state, tls_state) = handover.into_fd();
        // SAFETY: the handover owned `fd` alone and gave it up to us.
        let std_sock = unsafe { <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let session = Session::adopted(now, self.shared.config.clone(), &state, unix_ms_now());
        let mut session = session;
        if let Err(e) = set_cloexec(fd).and_then(|()| std_sock.set_nonblocking(true)) {
            session.handle_transport_closed(now, EndReason::Io(e.kind()));
            return self.emit_end(id, session);
        }
        let tls = tls_state.map(Tls::adopted);
        let compact = tls.is_some();
        let entry = self.slots.vacant_entry();
        let key = entry.key();
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let mut slot = Slot {
            id,
            generation,
            session,
            sock: TcpStream::from_std(std_sock),
            tls,
            dialer: None,
            connected: true,
            parked: None,
            filed: Tick::NEVER,
            deferred: false,
        };
        let token = token_for(key, generation);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut slot.sock, token, interest)
        {
            slot.session
                .handle_transport_closed(now, EndReason::Io(e.kind()));
            return self.emit_end(id, slot.session);
        }
        entry.insert(slot);
        self.ids.insert(id, key);
        self.shared
            .counters
            .sessions
            .fetch_add(1, Ordering::Relaxed);
        if compact {
            self.shared
                .counters
                .tls_compact
                .fetch_add(1, Ordering::Relaxed);
        }
        if self.shutting_down {
            self.slots[key]
                .session
                .handle_close(now, EndReason::Shutdown);
        } else {
            self.read(now, key);
        }
        self.drive(now, key);
    }
}

/// Sets close-on-exec again on a descriptor that crossed an exec without it.
fn set_cloexec(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; F_SETFD takes an int.
    match unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } {
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}
