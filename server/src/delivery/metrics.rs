//! The scheduler's counters, its latency summary and histogram, and their Prometheus text;
//! and [`render_histogram`], which every fixed-bucket histogram of `/metrics` goes
//! through.

use std::fmt::Write as _;
use std::time::Duration;

use engine::histogram::HistogramSnapshot;
use hdrhistogram::Histogram;

/// Event-to-push latency quantiles, microseconds, for delivered new-mail
/// pushes. A coalesced push counts from its oldest event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: u64,
    pub sum_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// A snapshot of the scheduler's counters.
///
/// Per attempt: `delivered`, `gone`, `too_large`, `rate_limited`, `retried`
/// (5xx or network error, tried again) and `redirect`. Per job that ended
/// without delivery: `failed`, `coalesced`, `dropped`, `undelivered`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    pub delivered: u64,
    pub gone: u64,
    pub too_large: u64,
    pub rate_limited: u64,
    pub retried: u64,
    pub redirect: u64,
    pub failed: u64,
    /// New-mail jobs merged into a newer pending push.
    pub coalesced: u64,
    /// Pending new mail dropped by a reconnect, `forget` or `Gone`.
    pub dropped: u64,
    /// Jobs still queued or in flight when shutdown's grace ran out.
    pub undelivered: u64,
    /// Offers handed back because `queue_max` jobs were outstanding (the core offers them
    /// again).
    pub offers_refused: u64,
    /// Jobs accepted and not yet finished (gauge).
    pub queue_depth: u64,
    pub latency: LatencySummary,
    /// New mail, first attempts: from the engine reading EXISTS
    /// ([`engine::Event::NewMail`]'s `read_at`) to the request leaving the worker.
    pub exists_to_push: HistogramSnapshot,
}

impl DeliveryStats {
    /// [`DeliveryStats::render_prometheus`] into a new string.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        self.render_prometheus(&mut out);
        out
    }

    /// Appends the Prometheus text exposition (format 0.0.4). Counters are
    /// `imap_push_delivery_*_total`; the latency is a *summary* (quantiles
    /// 0.5, 0.9, 0.99, 0.999 plus `_sum` and `_count`, in seconds) because
    /// the HDR histogram already holds exact quantiles and buckets would
    /// have to be chosen up front.
    pub fn render_prometheus(&self, out: &mut String) {
        let outcomes = [
            ("delivered", self.delivered),
            ("gone", self.gone),
            ("too_large", self.too_large),
            ("rate_limited", self.rate_limited),
            ("retried", self.retried),
            ("redirect", self.redirect),
        ];
        let _ = writeln!(
            out,
            "# HELP imap_push_delivery_attempts_total Push requests by outcome.\n\
             # TYPE imap_push_delivery_attempts_total counter"
        );
        for (outcome, value) in outcomes {
            let _ = writeln!(
                out,
                "imap_push_delivery_attempts_total{{outcome=\"{outcome}\"}} {value}"
            );
        }
        let ends = [
            ("failed", self.failed),
            ("coalesced", self.coalesced),
            ("dropped", self.dropped),
            ("undelivered", self.undelivered),
        ];
        let _ = writeln!(
            out,
            "# HELP imap_push_delivery_jobs_unsent_total Jobs that ended without their own delivery.\n\
             # TYPE imap_push_delivery_jobs_unsent_total counter"
        );
        for (end, value) in ends {
            let _ = writeln!(
                out,
                "imap_push_delivery_jobs_unsent_total{{end=\"{end}\"}} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP imap_push_delivery_offers_refused_total Offers handed back on a full queue, to be offered again.\n\
             # TYPE imap_push_delivery_offers_refused_total counter\n\
             imap_push_delivery_offers_refused_total {}\n\
             # HELP imap_push_delivery_queue_depth Jobs accepted and not yet finished.\n\
             # TYPE imap_push_delivery_queue_depth gauge\n\
             imap_push_delivery_queue_depth {}",
            self.offers_refused, self.queue_depth
        );
        self.render_latency(out);
        render_histogram(
            out,
            "imap_push_exists_to_push_seconds",
            "New mail, first attempt: the engine reading EXISTS to the push request leaving.",
            &self.exists_to_push,
        );
    }

    fn render_latency(&self, out: &mut String) {
        const NAME: &str = "imap_push_delivery_latency_seconds";
        let l = &self.latency;
        let _ = writeln!(
            out,
            "# HELP {NAME} Engine reading EXISTS to 2xx from the push service, new mail only.\n\
             # TYPE {NAME} summary"
        );
        for (q, us) in [
            ("0.5", l.p50_us),
            ("0.9", l.p90_us),
            ("0.99", l.p99_us),
            ("0.999", l.p999_us),
        ] {
            let _ = writeln!(out, "{NAME}{{quantile=\"{q}\"}} {}", seconds(us));
        }
        let _ = writeln!(out, "{NAME}_sum {}", seconds(l.sum_us));
        let _ = writeln!(out, "{NAME}_count {}", l.count);
    }
}

/// Appends `histogram` as a Prometheus histogram named `name` (seconds): cumulative
/// `_bucket{le=..}` lines ending in `+Inf`, then `_sum` and `_count`.
pub fn render_histogram(out: &mut String, name: &str, help: &str, histogram: &HistogramSnapshot) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (le, n) in histogram.cumulative() {
        match le {
            Some(le) => writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}"),
            None => writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}"),
        }
        .unwrap_or(());
    }
    let sum = histogram.sum_ns as f64 / 1e9;
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {}", histogram.count());
}

fn seconds(us: u64) -> f64 {
    // Exact for any latency below 2^53 µs (285 years).
    us as f64 / 1e6
}

/// Latencies above a day are recorded as a day.
const LATENCY_US_MAX: u64 = 86_400_000_000;

/// Significant digits of the latency quantiles: 1 % is plenty for a p50 or a p99, and the
/// histogram is ~18 KB instead of the ~220 KB three digits take, with a tenth of the walk
/// for each `/metrics` answer (four quantiles walk every bucket).
const LATENCY_DIGITS: u8 = 2;

// The scheduler's counters: owned by the one thread that owns the scheduler, so plain
// integers.

#[derive(Default, Debug)]
pub(super) struct Counters {
    pub(super) delivered: u64,
    pub(super) gone: u64,
    pub(super) too_large: u64,
    pub(super) rate_limited: u64,
    pub(super) retried: u64,
    pub(super) redirect: u64,
    pub(super) failed: u64,
    pub(super) coalesced: u64,
    pub(super) dropped: u64,
    pub(super) undelivered: u64,
    pub(super) offers_refused: u64,
}

pub(super) struct Metrics {
    pub(super) counters: Counters,
    latency: Histogram<u64>,
    latency_sum_us: u64,
    /// See [`DeliveryStats::exists_to_push`].
    exists_to_push: engine::histogram::Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    pub(super) fn new() -> Self {
        let latency = Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_DIGITS)
            .expect("constant histogram bounds are valid");
        Self {
            counters: Counters::default(),
            latency,
            latency_sum_us: 0,
            exists_to_push: engine::histogram::Histogram::default(),
        }
    }

    pub(super) fn add(&mut self, counter: impl Fn(&mut Counters) -> &mut u64, n: u64) {
        let c = counter(&mut self.counters);
        *c = c.saturating_add(n);
    }

    pub(super) fn record_latency(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(us.max(1));
        self.latency_sum_us = self.latency_sum_us.saturating_add(us);
    }

    pub(super) fn record_exists_to_push(&mut self, latency: Duration) {
        self.exists_to_push.record(latency);
    }

    pub(super) fn snapshot(&self, queue_depth: usize) -> DeliveryStats {
        let c = &self.counters;
        let h = &self.latency;
        let latency = LatencySummary {
            count: h.len(),
            sum_us: self.latency_sum_us,
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        };
        DeliveryStats {
            delivered: c.delivered,
            gone: c.gone,
            too_large: c.too_large,
            rate_limited: c.rate_limited,
            retried: c.retried,
            redirect: c.redirect,
            failed: c.failed,
            coalesced: c.coalesced,
            dropped: c.dropped,
            undelivered: c.undelivered,
            offers_refused: c.offers_refused,
            queue_depth: queue_depth as u64,
            latency,
            exists_to_push: self.exists_to_push.snapshot(),
        }
    }
}
