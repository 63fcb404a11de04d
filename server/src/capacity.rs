//! The capacity report of `check-config`: what `limits.sessions_max` asks of the box in
//! descriptors and memory, and each kernel limit that would stop it short.
//!
//! [`assess`] is pure: the kernel's limits come in as a [`Kernel`] value, which
//! [`Kernel::read`] fills from getrlimit and /proc (the only IO in this module). A limit
//! that cannot be read is reported as unknown, never assumed to be large enough.

use crate::fd_budget::{self, Budget, Demand, TooFewDescriptors};
use crate::Config;

/// User-space memory of the whole proxy per idle subscription with compact TLS
/// (`tls_compact = true`, the default), measured: the README's `proxy_density` bench of
/// 2026-12-05 (server RSS slope from 1,000 to 4,000 subscriptions registered through the
/// API, TLS IMAP, Web Push keys): 1,710 B and 1,703 B in two runs, the larger kept. The
/// engine's slab slots are ~700 B of it, the server's live heap ~870 B, the rest pages the
/// allocator holds.
pub const USER_BYTES_PER_SESSION_COMPACT: u64 = 1_710;
/// The same with rustls kept for the session's life (`tls_compact = false`): 7,170 B,
/// measured in the same run as a compact figure of 1,704 B (2026-12-05, after the
/// server's state shrank; 7,870 B before). A longer certificate chain costs more, since
/// rustls keeps the peer's chain for the connection's life.
pub const USER_BYTES_PER_SESSION_RUSTLS: u64 = 7_170;

/// User-space bytes per idle session that `config` asks for.
pub fn user_bytes_per_session(config: &Config) -> u64 {
    if config.tls_compact {
        USER_BYTES_PER_SESSION_COMPACT
    } else {
        USER_BYTES_PER_SESSION_RUSTLS
    }
}
/// Kernel memory per TCP socket end, measured by the density bench: 3,904 B (TCP socket,
/// inode, file, dentry, epoll entry) for an idle connection with empty buffers. A session
/// holds one end on this box; data queued in socket buffers comes on top and is bounded by
/// `net.ipv4.tcp_mem`.
pub const KERNEL_BYTES_PER_SESSION: u64 = 3_904;
/// Memory the projection leaves to everything else (the kernel's own, page cache, the
/// journal, API buffers, a burst of new mail): 1/N of RAM.
pub const MEMORY_HEADROOM_DIVISOR: u64 = 10;
/// Push sockets the sender keeps idle (`push::SenderConfig::idle_connections_max`), as the
/// server plans its descriptors at start.
fn push_idle_connections() -> usize {
    push::SenderConfig::default().idle_connections_max
}

/// The kernel's limits, as read on this box. `None`: could not be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kernel {
    /// Soft and hard RLIMIT_NOFILE of this process. `serve` raises the soft limit to the
    /// hard one at start, so the hard limit is what counts.
    pub nofile: Option<(u64, u64)>,
    /// `fs.nr_open`: the ceiling of any RLIMIT_NOFILE (systemd's LimitNOFILE included).
    pub nr_open: Option<u64>,
    /// `fs.file-max`: open files in the whole system.
    pub file_max: Option<u64>,
    /// `net.ipv4.ip_local_port_range` (also used for IPv6).
    pub port_range: Option<(u32, u32)>,
    /// `MemTotal` of /proc/meminfo.
    pub mem_total_bytes: Option<u64>,
}

impl Kernel {
    /// Reads the limits of this process and box.
    pub fn read() -> Kernel {
        let number =
            |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
        let port_range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|text| parse_port_range(&text));
        let mem_total_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| parse_mem_total(&text));
        Kernel {
            nofile: fd_budget::nofile_limit().ok(),
            nr_open: number("/proc/sys/fs/nr_open"),
            file_max: number("/proc/sys/fs/file-max"),
            port_range,
            mem_total_bytes,
        }
    }
}

/// `"32768\t60999\n"` → (32768, 60999).
pub fn parse_port_range(text: &str) -> Option<(u32, u32)> {
    let mut it = text.split_whitespace().map(str::parse::<u32>);
    let (low, high) = (it.next()?.ok()?, it.next()?.ok()?);
    (low <= high).then_some((low, high))
}

/// The `MemTotal:  16314564 kB` line of /proc/meminfo, in bytes.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A kernel limit that stops the box short of `sessions_max`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// The limit's name, as an operator sets it (`fs.nr_open`, `RLIMIT_NOFILE`).
    pub limit: &'static str,
    /// Its value now, as text.
    pub value: String,
    /// Sessions it allows.
    pub sessions: u64,
    /// What to change.
    pub fix: String,
}

/// Memory at full capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// User-space bytes per idle session ([`user_bytes_per_session`]).
    pub user_bytes_per_session: u64,
    pub user_bytes: u64,
    pub kernel_bytes: u64,
}

impl Memory {
    pub fn total_bytes(self) -> u64 {
        self.user_bytes.saturating_add(self.kernel_bytes)
    }
}

/// What a config asks of this box.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub sessions_max: u64,
    /// The descriptor budget at the hard RLIMIT_NOFILE (what `serve` runs with).
    pub budget: Option<Result<Budget, TooFewDescriptors>>,
    /// The smallest RLIMIT_NOFILE that holds `sessions_max`.
    pub nofile_needed: u64,
    pub memory: Memory,
    /// Limits that stop the box short, in the order an operator meets them.
    pub shortfalls: Vec<Shortfall>,
    /// Limits that could not be read: unknown, so not judged.
    pub unknown: Vec<&'static str>,
}

/// The descriptor demand of `config`, as the server computes it at start.
pub fn demand(config: &Config) -> Demand {
    Demand {
        api_connections: config.limits.api_connections_max,
        push_connections: config
            .sender_threads
            .saturating_add(push_idle_connections()),
        sessions_max: config.limits.sessions_max,
    }
}

/// The smallest descriptor limit whose plan holds every session `demand` asks for.
pub fn nofile_needed(demand: Demand) -> u64 {
    let holds = |nofile: u64| {
        fd_budget::plan(nofile, demand).is_ok_and(|b| b.sessions_capacity >= demand.sessions_max)
    };
    // The plan's capacity grows with the limit, so a binary search finds the first.
    let (mut low, mut high) = (0u64, 1u64 << 40);
    while low < high {
        let mid = low + (high - low) / 2;
        if holds(mid) {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    low
}

/// The report for `config` on a box with `kernel`'s limits.
pub fn assess(config: &Config, kernel: &Kernel) -> Report {
    let demand = demand(config);
    let sessions_max = demand.sessions_max as u64;
    let needed = nofile_needed(demand);
    let per_session = user_bytes_per_session(config);
    let memory = Memory {
        user_bytes_per_session: per_session,
        user_bytes: sessions_max.saturating_mul(per_session),
        kernel_bytes: sessions_max.saturating_mul(KERNEL_BYTES_PER_SESSION),
    };
    let mut report = Report {
        sessions_max,
        budget: kernel.nofile.map(|(_, hard)| fd_budget::plan(hard, demand)),
        nofile_needed: needed,
        memory,
        shortfalls: Vec::new(),
        unknown: Vec::new(),
    };
    descriptor_limits(&mut report, kernel, demand);
    port_limit(&mut report, config, kernel);
    memory_limit(&mut report, kernel);
    report
}

fn sessions_at(nofile: u64, demand: Demand) -> u64 {
    fd_budget::plan(nofile, demand).map_or(0, |b| b.sessions_capacity as u64)
}

fn descriptor_limits(report: &mut Report, kernel: &Kernel, demand: Demand) {
    let needed = report.nofile_needed;
    let descriptor = [
        (
            "RLIMIT_NOFILE",
            kernel.nofile.map(|(_, hard)| hard),
            format!("LimitNOFILE={needed} in the unit (or `ulimit -Hn {needed}`)"),
        ),
        (
            "fs.nr_open",
            kernel.nr_open,
            format!("sysctl fs.nr_open={needed} (the package's sysctl.d drop-in)"),
        ),
        (
            "fs.file-max",
            kernel.file_max,
            format!("sysctl fs.file-max={needed} or more: it counts every process"),
        ),
    ];
    for (limit, value, fix) in descriptor {
        match value {
            None => report.unknown.push(limit),
            Some(value) if value < needed => report.shortfalls.push(Shortfall {
                limit,
                value: value.to_string(),
                sessions: sessions_at(value, demand),
                fix,
            }),
            Some(_) => {}
        }
    }
}

/// One local address reaches one remote address and port through at most the ephemeral
/// port range, so the sessions to one IMAP server address are capped by the range times
/// the bind addresses (one, the system's choice, when none is listed).
fn port_limit(report: &mut Report, config: &Config, kernel: &Kernel) {
    let Some((low, high)) = kernel.port_range else {
        report.unknown.push("net.ipv4.ip_local_port_range");
        return;
    };
    let ports = u64::from(high - low + 1);
    let binds = config.imap_bind_addresses.len().max(1) as u64;
    let per_host = (config.limits.sessions_per_host_max as u64).min(report.sessions_max);
    let reach = ports.saturating_mul(binds);
    if reach < per_host {
        let binds_needed = per_host.div_ceil(ports);
        report.shortfalls.push(Shortfall {
            limit: "net.ipv4.ip_local_port_range",
            value: format!("{low} {high} ({ports} ports) x {binds} bind address(es)"),
            sessions: reach,
            fix: format!(
                "sessions to one IMAP server address: {per_host} wanted \
                 (limits.sessions_per_host_max); widen the range (1024 65535 gives 64512 ports) \
                 and list {binds_needed} or more imap_bind_addresses"
            ),
        });
    }
}

fn memory_limit(report: &mut Report, kernel: &Kernel) {
    let Some(total) = kernel.mem_total_bytes else {
        report.unknown.push("memory (MemTotal)");
        return;
    };
    let usable = total - total / MEMORY_HEADROOM_DIVISOR;
    if report.memory.total_bytes() > usable {
        let per_session = report.memory.user_bytes_per_session + KERNEL_BYTES_PER_SESSION;
        report.shortfalls.push(Shortfall {
            limit: "memory",
            value: format!("{} MemTotal", human_bytes(total)),
            sessions: usable / per_session,
            fix: format!(
                "{} wanted at full capacity, {} usable (a 1/{MEMORY_HEADROOM_DIVISOR} kept \
                 for the rest): add memory or lower limits.sessions_max",
                human_bytes(report.memory.total_bytes()),
                human_bytes(usable)
            ),
        });
    }
}

/// Bytes in GiB or MiB with one decimal, for people.
pub fn human_bytes(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = bytes as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "capacity: limits.sessions_max = {}", self.sessions_max)?;
        match &self.budget {
            Some(Ok(b)) => writeln!(
                f,
                "descriptors: RLIMIT_NOFILE {} (hard; serve raises the soft limit to it): \
                 {} sessions, {} API connections; {} needed for every session",
                b.nofile, b.sessions_capacity, b.api_connections, self.nofile_needed
            )?,
            Some(Err(e)) => writeln!(f, "descriptors: {e}")?,
            None => writeln!(f, "descriptors: RLIMIT_NOFILE unknown")?,
        }
        writeln!(
            f,
            "memory at full capacity: {} ({} user space at {} B and {} \
             kernel at {KERNEL_BYTES_PER_SESSION} B per idle TLS session, measured)",
            human_bytes(self.memory.total_bytes()),
            human_bytes(self.memory.user_bytes),
            self.memory.user_bytes_per_session,
            human_bytes(self.memory.kernel_bytes),
        )?;
        if self.shortfalls.is_empty() {
            writeln!(
                f,
                "kernel limits: none stops this box short of sessions_max"
            )?;
        }
        for s in &self.shortfalls {
            writeln!(
                f,
                "SHORT: {} = {} holds {} sessions: {}",
                s.limit, s.value, s.sessions, s.fix
            )?;
        }
        for limit in &self.unknown {
            writeln!(f, "unknown: {limit} could not be read")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Only the public API, with made-up kernels.
    use super::*;

    fn big_box() -> Kernel {
        Kernel {
            nofile: Some((1024, 1_100_000)),
            nr_open: Some(1_100_000),
            file_max: Some(u64::MAX / 2),
            port_range: Some((1024, 65535)),
            mem_total_bytes: Some(64 << 30),
        }
    }

    fn config(sessions_max: usize, binds: usize) -> Config {
        let mut c = Config::default();
        c.limits.sessions_max = sessions_max;
        c.limits.sessions_per_host_max = sessions_max;
        c.imap_bind_addresses = (0..binds)
            .map(|i| std::net::IpAddr::from([11, 0, 0, i as u8]))
            .collect();
        c
    }

    #[test]
    fn the_descriptors_needed_are_the_first_limit_that_holds_every_session() {
        let d = demand(&config(1_000_000, 0));
        let n = nofile_needed(d);
        assert_eq!(fd_budget::plan(n, d).unwrap().sessions_capacity, 1_000_000);
        assert!(fd_budget::plan(n - 1, d).unwrap().sessions_capacity < 1_000_000);
    }

    #[test]
    fn a_million_sessions_fit_a_prepared_box() {
        let r = assess(&config(1_000_000, 16), &big_box());
        assert!(r.nofile_needed <= 1_100_000, "{r}");
        assert_eq!(r.shortfalls, [], "{r}");
        assert!(r.unknown.is_empty());
        // Compact TLS (the default): 1M x (1710 + 3904) B = 5.2 GiB.
        assert_eq!(r.memory.total_bytes(), 5_614_000_000);
        // rustls kept: 1M x (7170 + 3904) B = 10.3 GiB.
        let rustls = Config {
            tls_compact: false,
            ..config(1_000_000, 16)
        };
        assert_eq!(
            assess(&rustls, &big_box()).memory.total_bytes(),
            11_074_000_000
        );
    }

    #[test]
    fn each_short_limit_is_named_with_the_sessions_it_allows() {
        let kernel = Kernel {
            nofile: Some((1024, 524_288)),
            nr_open: Some(1_048_576),
            file_max: Some(9_000_000),
            port_range: Some((32768, 60999)),
            // 5.2 GiB wanted at a million compact sessions; 4 GiB less a tenth is short.
            mem_total_bytes: Some(4 << 30),
        };
        let r = assess(&config(1_000_000, 0), &kernel);
        let names: Vec<_> = r.shortfalls.iter().map(|s| s.limit).collect();
        assert_eq!(
            names,
            [
                "RLIMIT_NOFILE",
                "fs.nr_open",
                "net.ipv4.ip_local_port_range",
                "memory"
            ],
            "{r}"
        );
        assert_eq!(r.shortfalls[2].sessions, 28_232, "one bind address");
        let memory = &r.shortfalls[3];
        assert_eq!(
            memory.sessions,
            (4u64 << 30) * 9 / 10 / (USER_BYTES_PER_SESSION_COMPACT + KERNEL_BYTES_PER_SESSION)
        );
        let rlimit = &r.shortfalls[0];
        assert_eq!(
            rlimit.sessions,
            fd_budget::plan(524_288, demand(&config(1_000_000, 0)))
                .unwrap()
                .sessions_capacity as u64
        );
    }

    #[test]
    fn unreadable_limits_are_unknown_not_fine() {
        let r = assess(&config(1000, 0), &Kernel::default());
        assert_eq!(r.unknown.len(), 5, "{r}");
        assert!(r.shortfalls.is_empty());
        assert!(r.to_string().contains("unknown: fs.nr_open"));
    }

    #[test]
    fn proc_formats_parse() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("9 8"), None);
        assert_eq!(parse_port_range(""), None);
        let meminfo = "MemTotal:       16314564 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(16_314_564 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB"), None);
    }
}
