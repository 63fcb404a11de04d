//! The core's counters and its part of `/metrics` (Prometheus text format).

use std::fmt::Write;
use std::hash::Hash;

use super::Core;
use crate::registry::State as SubState;

/// Counters the core keeps; plain integers, since one thread owns them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub logins_ok: u64,
    pub logins_auth_failed: u64,
    pub logins_failed: u64,
    pub registrations_rejected: u64,
    pub logins_paced: u64,
    pub host_cap_rejections: u64,
    pub sessions_lost: u64,
    /// Subscriptions of lost nodes (or this node's own after a fence) taken over, each
    /// pushed `node_lost`.
    pub subscriptions_claimed: u64,
    /// Sessions ended because another node took their key over or deleted them.
    pub subscriptions_dropped: u64,
    /// Times this node stopped its sessions for want of a heartbeat.
    pub fences: u64,
}

impl<S: Copy + Eq + Hash + std::fmt::Debug, R: std::fmt::Debug> Core<S, R> {
    /// The core's part of `/metrics`, in the order the server has always printed it.
    pub(super) fn metrics_text(&self) -> String {
        let c = &self.counters;
        let r = &self.registry;
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE imap_push_sessions gauge");
        let states = [
            SubState::Pending,
            SubState::Idle,
            SubState::Polling,
            SubState::Verifying,
        ];
        for state in states {
            let (name, n) = (state.as_str(), r.count(state));
            let _ = writeln!(out, "imap_push_sessions{{state=\"{name}\"}} {n}");
        }
        let _ = writeln!(out, "# TYPE imap_push_logins_total counter");
        for (outcome, n) in [
            ("ok", c.logins_ok),
            ("auth_failed", c.logins_auth_failed),
            ("failed", c.logins_failed),
        ] {
            let _ = writeln!(out, "imap_push_logins_total{{outcome=\"{outcome}\"}} {n}");
        }
        let lines = [
            (
                "imap_push_registrations_rejected_total",
                "counter",
                c.registrations_rejected,
            ),
            (
                "imap_push_host_cap_rejections_total",
                "counter",
                c.host_cap_rejections,
            ),
            ("imap_push_logins_paced_total", "counter", c.logins_paced),
            ("imap_push_sessions_lost_total", "counter", c.sessions_lost),
            (
                "imap_push_cluster_claimed_total",
                "counter",
                c.subscriptions_claimed,
            ),
            (
                "imap_push_cluster_dropped_total",
                "counter",
                c.subscriptions_dropped,
            ),
            ("imap_push_cluster_fences_total", "counter", c.fences),
            ("imap_push_pushes_held", "gauge", self.held.len() as u64),
            (
                "imap_push_held_new_mail_dropped_total",
                "counter",
                self.held.dropped,
            ),
            ("imap_push_descriptors_limit", "gauge", self.budget.nofile),
            (
                "imap_push_sessions_capacity",
                "gauge",
                self.budget.sessions_capacity as u64,
            ),
        ];
        for (name, kind, n) in lines {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {n}");
        }
        self.scheduler.stats().render_prometheus(&mut out);
        out
    }
}
