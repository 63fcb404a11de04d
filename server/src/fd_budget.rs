//! The descriptor budget: how many IMAP sessions the process can hold without starving
//! its API, its pushes or itself of file descriptors.
//!
//! Every IMAP session holds one socket. When descriptors run out, the failure is not the
//! next registration's alone: accept() fails for every API client and every new push
//! socket fails too. So the budget hands the descriptor limit out to named consumers
//! first (API connections, push connections, the journal, DNS, the process's own fixed
//! descriptors, a margin) and gives IMAP sessions what is left. Past that capacity a
//! registration gets `503 at_capacity`, and everything else keeps its share.
//!
//! [`plan`] is pure; [`raise_nofile_limit`] and [`nofile_limit`] are the only system calls.

/// Descriptors the process holds whatever its load: stdio, the API listener, an epoll
/// instance and a waker per reactor and for httpd, the VAPID key being read, the
/// journal's writer. Measured: 13 for a started, idle server with two reactors; the rest
/// is headroom for more reactors and resolver threads.
pub const FIXED_RESERVE: usize = 48;
/// The journal's database file and what redb opens beside it.
pub const JOURNAL_RESERVE: usize = 8;
/// Name resolution: each resolver thread may hold a UDP socket, a TCP socket (a
/// truncated answer) and /etc/hosts or resolv.conf for a moment.
pub const DNS_RESERVE: usize = 32;
/// Re-registrations in progress at full capacity: a replacement logs in beside the
/// session it replaces, so it briefly holds a second socket for one key.
pub const REPLACEMENT_RESERVE: usize = 16;
/// API connections get at most this fraction (1/N) of the limit, so that a small limit
/// still leaves room for sessions; `connections_max` is lowered to fit.
pub const API_SHARE_DIVISOR: usize = 4;
/// Headroom for what no reserve names (a log file, a library's descriptor): 1/N of the
/// limit, and at least [`MARGIN_MIN`].
pub const MARGIN_DIVISOR: usize = 20;
pub const MARGIN_MIN: usize = 16;

/// What the other consumers want, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    /// httpd's `connections_max`.
    pub api_connections: usize,
    /// Push sockets: one per sender thread in use plus the idle keep-alive pool.
    pub push_connections: usize,
    /// `limits.sessions_max`.
    pub sessions_max: usize,
}

/// How the descriptor limit is handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The soft RLIMIT_NOFILE the plan was made for.
    pub nofile: u64,
    /// API connections, at most the configured `connections_max`.
    pub api_connections: usize,
    /// Subscriptions (keys) the server takes: min(what the descriptors allow,
    /// `sessions_max`). One more registration gets `503 at_capacity`.
    pub sessions_capacity: usize,
    /// The engine's ceiling of IMAP sockets: the capacity plus [`REPLACEMENT_RESERVE`].
    pub engine_sessions_max: usize,
}

/// Why no budget fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooFewDescriptors {
    pub nofile: u64,
    /// Descriptors the reserves take before the first session.
    pub reserved: usize,
}

impl std::fmt::Display for TooFewDescriptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the descriptor limit ({}) leaves no room for IMAP sessions: the reserves take {}; \
             raise `ulimit -n` (RLIMIT_NOFILE)",
            self.nofile, self.reserved
        )
    }
}

impl std::error::Error for TooFewDescriptors {}

/// Hands `nofile` descriptors out: the reserves first, IMAP sessions get the rest.
pub fn plan(nofile: u64, demand: Demand) -> Result<Budget, TooFewDescriptors> {
    let limit = usize::try_from(nofile).unwrap_or(usize::MAX);
    let api_connections = demand.api_connections.min(limit / API_SHARE_DIVISOR).max(1);
    let margin = (limit / MARGIN_DIVISOR).max(MARGIN_MIN);
    let reserved = [
        FIXED_RESERVE,
        JOURNAL_RESERVE,
        DNS_RESERVE,
        REPLACEMENT_RESERVE,
        margin,
        api_connections,
        demand.push_connections,
    ]
    .iter()
    .fold(0usize, |sum, n| sum.saturating_add(*n));
    let left = limit.saturating_sub(reserved);
    if left == 0 {
        return Err(TooFewDescriptors { nofile, reserved });
    }
    let sessions_capacity = left.min(demand.sessions_max);
    Ok(Budget {
        nofile,
        api_connections,
        sessions_capacity,
        engine_sessions_max: sessions_capacity.saturating_add(REPLACEMENT_RESERVE),
    })
}

/// The soft and hard RLIMIT_NOFILE.
// `rlim_t` is u64 on Linux but not everywhere: the casts are for the other platforms.
#[allow(clippy::unnecessary_cast)]
pub fn nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((limit.rlim_cur as u64, limit.rlim_max as u64))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (a process may, unprivileged) and
/// returns (before, after). Descriptors are the ceiling of sessions; a soft limit of 1024
/// (the usual default) would hold a thousand.
#[allow(clippy::unnecessary_cast)]
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let (soft, hard) = nofile_limit()?;
    if soft >= hard {
        return Ok((soft, soft));
    }
    let limit = libc::rlimit {
        rlim_cur: hard as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads one rlimit struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((soft, nofile_limit()?.0))
}

#[cfg(test)]
mod tests {
    //! Only the public API.
    use super::*;

    fn demand() -> Demand {
        Demand {
            api_connections: 1024,
            push_connections: 72,
            sessions_max: 1_000_000,
        }
    }

    #[test]
    fn sessions_get_what_the_reserves_leave() {
        let b = plan(20_000, demand()).unwrap();
        assert_eq!(b.api_connections, 1024);
        let reserved =
            FIXED_RESERVE + JOURNAL_RESERVE + DNS_RESERVE + REPLACEMENT_RESERVE + 1000 + 1024 + 72;
        assert_eq!(b.sessions_capacity, 20_000 - reserved);
        assert_eq!(
            b.engine_sessions_max,
            b.sessions_capacity + REPLACEMENT_RESERVE
        );
        // Every descriptor the engine may use is within the limit, reserves apart.
        assert!(b.engine_sessions_max + reserved - REPLACEMENT_RESERVE <= 20_000);
    }

    #[test]
    fn a_small_limit_shrinks_the_api_share_and_sessions_max_caps() {
        let b = plan(300, demand()).unwrap();
        assert_eq!(b.api_connections, 75, "a quarter of 300");
        assert_eq!(b.sessions_capacity, 300 - (48 + 8 + 32 + 16 + 16 + 75 + 72));
        let small = Demand {
            sessions_max: 10,
            ..demand()
        };
        assert_eq!(plan(300, small).unwrap().sessions_capacity, 10);
    }

    #[test]
    fn a_limit_the_reserves_eat_is_refused() {
        let e = plan(200, demand()).unwrap_err();
        assert_eq!(e.nofile, 200);
        assert!(e.reserved >= 200, "{e}");
        assert!(plan(0, demand()).is_err());
        // The first limit past the reserves gives exactly one session.
        let first = (200..1000).find_map(|n| plan(n, demand()).ok()).unwrap();
        assert_eq!(first.sessions_capacity, 1, "{first:?}");
        assert!(plan(first.nofile - 1, demand()).is_err());
    }
}
