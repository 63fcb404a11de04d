//! A worker's counters, summed across workers by the control channel.

/// Counters of one worker (summed by the control channel).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stats {
    pub sessions: u64,
    pub idling: u64,
    pub selected: u64,
    pub tls_sessions: u64,
    pub stalled: u64,
    pub accepted: u64,
    pub refused: u64,
    pub accept_errors: u64,
    pub handshakes: u64,
    pub resumed: u64,
    pub commands: u64,
    pub exists_sent: u64,
    pub still_here_sent: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub closed_peer: u64,
    pub closed_reset: u64,
    pub closed_logout: u64,
    pub closed_control: u64,
    pub closed_error: u64,
    pub tls_errors: u64,
    pub stale_events: u64,
    pub buffers_lent: u64,
    pub timestamps_pending: u64,
    pub timestamps_dropped: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        let pairs: [(&mut u64, u64); 25] = [
            (&mut self.sessions, o.sessions),
            (&mut self.idling, o.idling),
            (&mut self.selected, o.selected),
            (&mut self.tls_sessions, o.tls_sessions),
            (&mut self.stalled, o.stalled),
            (&mut self.accepted, o.accepted),
            (&mut self.refused, o.refused),
            (&mut self.accept_errors, o.accept_errors),
            (&mut self.handshakes, o.handshakes),
            (&mut self.resumed, o.resumed),
            (&mut self.commands, o.commands),
            (&mut self.exists_sent, o.exists_sent),
            (&mut self.still_here_sent, o.still_here_sent),
            (&mut self.bytes_in, o.bytes_in),
            (&mut self.bytes_out, o.bytes_out),
            (&mut self.closed_peer, o.closed_peer),
            (&mut self.closed_reset, o.closed_reset),
            (&mut self.closed_logout, o.closed_logout),
            (&mut self.closed_control, o.closed_control),
            (&mut self.closed_error, o.closed_error),
            (&mut self.tls_errors, o.tls_errors),
            (&mut self.stale_events, o.stale_events),
            (&mut self.buffers_lent, o.buffers_lent),
            (&mut self.timestamps_pending, o.timestamps_pending),
            (&mut self.timestamps_dropped, o.timestamps_dropped),
        ];
        for (a, b) in pairs {
            *a += b;
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sessions={} idling={} selected={} tls={} stalled={} accepted={} refused={} \
             accept_errors={} handshakes={} resumed={} commands={} exists_sent={} still_here_sent={} \
             bytes_in={} bytes_out={} closed_peer={} closed_reset={} closed_logout={} closed_control={} \
             closed_error={} tls_errors={} stale_events={} buffers_lent={} \
             timestamps_pending={} timestamps_dropped={}",
            self.sessions,
            self.idling,
            self.selected,
            self.tls_sessions,
            self.stalled,
            self.accepted,
            self.refused,
            self.accept_errors,
            self.handshakes,
            self.resumed,
            self.commands,
            self.exists_sent,
            self.still_here_sent,
            self.bytes_in,
            self.bytes_out,
            self.closed_peer,
            self.closed_reset,
            self.closed_logout,
            self.closed_control,
            self.closed_error,
            self.tls_errors,
            self.stale_events,
            self.buffers_lent,
            self.timestamps_pending,
            self.timestamps_dropped
        )
    }
}
