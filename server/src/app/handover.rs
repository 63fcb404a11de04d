//! The server's side of an in-place upgrade (see [`crate::upgrade`]): handing the owner's
//! state to the next binary, and starting from what the previous one handed over.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use engine::{Engine, Handover, SessionId};

use super::{now, App, Inlets, Owner, ServerCore, Stop};
use crate::config::Config;
use crate::core::{Carried, Input};
use crate::fd_budget::Budget;
use crate::image::{self, Image};
use crate::journal::Record;
use crate::upgrade::{Binary, UpgradeError, PUSH_DRAIN_WAIT};

type Sessions = Vec<(Carried, Handover)>;

/// The image's listener and sessions, apart.
pub(super) fn split(image: Option<Image>) -> (Option<std::net::TcpListener>, Option<Sessions>) {
    match image {
        Some(image) => (image.listener, Some(image.sessions)),
        None => (None, None),
    }
}

/// The API's listener: the one handed over when it listens where the config says, else a
/// new one (the handed one is closed first, so that the address is free again).
pub(super) fn listen(
    config: &Config,
    handed: Option<std::net::TcpListener>,
    httpd_config: httpd::Config,
) -> Result<httpd::Server, httpd::HttpdError> {
    match handed {
        Some(l) if l.local_addr().is_ok_and(|a| a == config.listen) => {
            httpd::Server::from_listener(l, httpd_config)
        }
        other => {
            drop(other);
            httpd::Server::bind(config.listen, httpd_config)
        }
    }
}

/// The core: resumed with the handed-over sessions (adopted into `engine` here), or new.
/// Also returns how many journal records get a `server_restart` push.
pub(super) fn core(
    config: Config,
    budget: Budget,
    vapid_public_key: String,
    leftovers: Vec<Record>,
    sessions: Option<Sessions>,
    engine: &Engine,
) -> (ServerCore, usize) {
    let records = leftovers.len();
    let Some(sessions) = sessions else {
        let core = ServerCore::new(config, budget, vapid_public_key, leftovers, now());
        return (core, records);
    };
    let (carried, handovers): (Vec<_>, Vec<_>) =
        sessions.into_iter().map(|(c, h)| ((c, h.id), h)).unzip();
    let offered = handovers.len();
    let (core, taken) =
        ServerCore::resumed(config, budget, vapid_public_key, leftovers, carried, now());
    let taken: std::collections::HashSet<SessionId> = taken.into_iter().collect();
    // A session whose record is gone is dropped here: its socket closes.
    let adopt: Vec<Handover> = handovers
        .into_iter()
        .filter(|h| taken.contains(&h.id))
        .collect();
    let adopted = adopt.len();
    engine.adopt(adopt);
    let restarts = records - adopted;
    tracing::info!(
        sessions_adopted = adopted,
        sessions_dropped = offered - adopted,
        restart_pushes = restarts,
        "upgrade: resumed the sessions handed over"
    );
    (core, restarts)
}

impl App {
    /// Replaces this process with the binary at `binary`'s path, handing the sessions
    /// over (see [`crate::upgrade`]). Returns only when the upgrade did not happen; the
    /// server then serves on with every session it had.
    pub fn upgrade(&mut self, binary: &Binary) -> UpgradeError {
        if let Err(e) = binary.check() {
            return e;
        }
        let Some(handle) = self.owner.take() else {
            return UpgradeError::NotRunning;
        };
        let started = Instant::now();
        self.draining.store(true, Ordering::Relaxed);
        let _ = self.stop.send(Stop::Handover);
        let Ok((mut owner, inlets)) = handle.join() else {
            return UpgradeError::NotRunning;
        };
        let exported = owner.engine.export(engine::HANDOVER_WAIT);
        // What the engine reported before handing over (new mail, ends) is acted on first.
        for event in inlets.events.try_iter() {
            owner.handle(Input::Session(super::session_event(event)));
        }
        owner.drain_pushes(&inlets, PUSH_DRAIN_WAIT);
        let mut carried = Vec::with_capacity(exported.sessions.len());
        let mut kept = Vec::new();
        for handover in exported.sessions {
            match owner.core.carry(handover.id) {
                Some(c) => carried.push((c, handover)),
                None => kept.push(handover),
            }
        }
        owner.journal.flush();
        tracing::info!(
            sessions = carried.len(),
            not_handed_over = exported.left + kept.len(),
            handover_ms = started.elapsed().as_millis() as u64,
            binary = %binary.path().display(),
            "upgrade: executing the binary"
        );
        let error = self.exec(binary, &carried);
        // Still here: every session goes on in this process.
        owner
            .engine
            .adopt(carried.into_iter().map(|(_, h)| h).chain(kept).collect());
        self.respawn(owner, inlets);
        error
    }

    /// Writes the image, keeps the descriptors across exec and executes. Returns only on
    /// a failure (the image and the listener's copy are closed then).
    fn exec(&self, binary: &Binary, sessions: &Sessions) -> UpgradeError {
        let listener = match self.httpd.as_ref().map(httpd::ServerHandle::dup_listener) {
            Some(Ok(fd)) => Some(fd),
            Some(Err(e)) => return UpgradeError::Descriptor(e),
            None => None,
        };
        let listener_fd = listener.as_ref().map_or(-1, |fd| fd.as_raw_fd());
        let memfd = match image::write(listener_fd, sessions, image::version_to_write()) {
            Ok(fd) => fd,
            Err(e) => return UpgradeError::Image(e),
        };
        let kept = listener
            .iter()
            .map(image::keep_across_exec)
            .chain(std::iter::once(image::keep_across_exec(&memfd)))
            .chain(
                sessions
                    .iter()
                    .map(|(_, h)| image::keep_raw_across_exec(h.fd())),
            )
            .collect::<Result<Vec<()>, _>>();
        if let Err(e) = kept {
            return UpgradeError::Descriptor(e);
        }
        UpgradeError::Exec(binary.exec(memfd.as_raw_fd()))
    }

    /// The exec failed: the owner takes inputs again and the API serves as before.
    fn respawn(&mut self, owner: Owner, inlets: Inlets) {
        match std::thread::Builder::new()
            .name("owner".into())
            .spawn(move || owner.run(inlets))
        {
            Ok(handle) => self.owner = Some(handle),
            Err(e) => tracing::error!(error = %e, "upgrade: the owner thread did not restart"),
        }
        self.draining.store(false, Ordering::Relaxed);
    }
}

impl Owner {
    /// Before the exec: pushes queued or in flight get up to `wait` to be settled (their
    /// reports may take subscriptions out of the journal).
    fn drain_pushes(&mut self, inlets: &Inlets, wait: Duration) {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let idle = self.core.push_stats().queue_depth == 0 && self.core.held_pushes() == 0;
            if idle && inlets.pushes.is_empty() {
                return;
            }
            if let Ok(done) = inlets.pushes.recv_timeout(Duration::from_millis(10)) {
                self.handle(Input::PushDone(done));
            }
            if self
                .core
                .poll_timeout()
                .is_some_and(|at| at <= Instant::now())
            {
                self.handle(Input::Tick);
            }
            self.journal.offer_backlog();
        }
    }
}
