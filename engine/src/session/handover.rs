//! A session reduced to a [`SessionState`] at a handover point, and rebuilt from one (see
//! [`crate::handover`]).

use std::sync::Arc;

use imap_codec_lite::Framer;

use super::caps::Caps;
use super::events::Outbox;
use super::fetch::FetchPlan;
use super::mailboxes::Other;
use super::phase::{AfterDone, Phase};
use super::timer::{TimerKind, Timers};
use super::transmit::TxQueue;
use super::{Session, SessionConfig};
use crate::handover::{tick_to_unix_ms, unix_ms_to_tick, HandoverPhase, SessionState};
use crate::reason::{EndReason, Waiting};
use crate::spec::{Security, WatchOptions};
use crate::time::Tick;

impl Session {
    /// The session's state if it stands at a handover point: in IDLE with the `+`
    /// received, or waiting for its next NOOP; nothing queued, half-read, fetched or
    /// unreported. `None` otherwise (a command in flight finishes
    /// first: ask again on a later turn). `unix_now_ms` is the wall clock at `now`.
    pub fn export(&self, now: Tick, unix_now_ms: u64) -> Option<SessionState> {
        let phase = match self.phase {
            Phase::Idling if self.after_done == AfterDone::Idle => HandoverPhase::Idling,
            Phase::PollWait => HandoverPhase::PollWait,
            _ => return None,
        };
        let quiet = self.tx.front().is_none()
            && self.pending.is_none()
            && !self.skipping
            && !self.fetch_wanted
            && self.held_ready.is_none()
            && self.events.is_empty()
            && self.setup.is_none();
        if !quiet || !self.was_ready {
            return None;
        }
        let options = match self.plan.as_deref() {
            // A fetch under way: not a handover point.
            Some(plan) => plan.to_options()?,
            None => WatchOptions::default(),
        };
        let at = |kind| tick_to_unix_ms(self.timers.get(kind), now, unix_now_ms);
        Some(SessionState {
            phase,
            security: self.security,
            caps: self.caps.bits(),
            tag: self.tag,
            next_tag: self.next_tag,
            exists: self.exists,
            uidvalidity: self.uidvalidity,
            uidnext: self.uidnext,
            notify_active: self.notify_active,
            refresh_jitter_ms: self.refresh_jitter_ms,
            idle_refresh_unix_ms: at(TimerKind::IdleRefresh),
            poll_unix_ms: at(TimerKind::Poll),
            others: self
                .others
                .as_deref()
                .map_or_else(Vec::new, |o| o.iter().map(Other::to_state).collect()),
            options,
        })
    }

    /// A session that goes on from `state` (written by [`Session::export`], maybe by
    /// another process): it answers and sends exactly as the exported one would have.
    pub fn adopted(
        now: Tick,
        cfg: Arc<SessionConfig>,
        state: &SessionState,
        unix_now_ms: u64,
    ) -> Session {
        let mut timers = Timers::default();
        let refresh = unix_ms_to_tick(state.idle_refresh_unix_ms, now, unix_now_ms);
        let poll = unix_ms_to_tick(state.poll_unix_ms, now, unix_now_ms);
        timers.set(TimerKind::IdleRefresh, refresh);
        timers.set(TimerKind::Poll, poll);
        let (phase, waiting) = match state.phase {
            HandoverPhase::Idling => (Phase::Idling, Waiting::IdleAccepted),
            HandoverPhase::PollWait => (Phase::PollWait, Waiting::Noop),
        };
        Session {
            phase,
            security: state.security,
            tls_active: state.security != Security::DangerousPlain,
            caps: Caps::from_bits(state.caps),
            caps_fresh: false,
            auth: super::auth::AuthMechanism::Login,
            auth_parts: 1,
            auth_next_part: 0,
            tag: state.tag,
            next_tag: state.next_tag.max(1),
            waiting,
            exists: state.exists,
            uidvalidity: state.uidvalidity,
            uidnext: state.uidnext,
            since: None,
            examined: true,
            held_ready: None,
            was_ready: true,
            logout_reason: EndReason::Unwatched,
            refresh_jitter_ms: state.refresh_jitter_ms,
            others: match state.others.is_empty() {
                true => None,
                false => Some(state.others.iter().map(Other::from_state).collect()),
            },
            notify_active: state.notify_active,
            plan: FetchPlan::new(state.options.filter.as_ref(), state.options.preview)
                .map(Box::new),
            fetch_wanted: false,
            after_done: AfterDone::Idle,
            timers,
            cfg,
            tx: TxQueue::default(),
            events: Outbox::default(),
            framer: Framer::new(),
            skipping: false,
            setup: None,
            pending: None,
        }
    }
}
