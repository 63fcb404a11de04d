//! Micro-benchmarks of the engine's per-event work: the timing wheel with 100k entries,
//! and one `* N EXISTS` line handled by an idling session.
//!
//! `cargo bench -p engine` (short: `-- --warm-up-time 1 --measurement-time 2`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use engine::pool::BufPool;
use engine::session::{Phase, Session, SessionConfig, SessionEvent, TX_BUF_LEN};
use engine::wheel::{Entry, Wheel};
use engine::{Secret, Security, Tick, WatchSpec};
use zeroize::Zeroizing;

const ENTRIES: u64 = 100_000;

/// Deadlines spread over 30 minutes, like IDLE refreshes with jitter.
fn deadline(i: u64) -> Tick {
    Tick::from_ms(1_000 + (i.wrapping_mul(2_654_435_761) % 1_800_000))
}

fn wheel(c: &mut Criterion) {
    let mut g = c.benchmark_group("wheel");
    g.throughput(Throughput::Elements(ENTRIES));
    g.bench_function("insert_100k", |b| {
        b.iter_batched(
            || Wheel::new(Tick::ZERO),
            |mut w| {
                for i in 0..ENTRIES {
                    w.insert(i, deadline(i));
                }
                w
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("expire_100k", |b| {
        b.iter_batched(
            || {
                let mut w = Wheel::new(Tick::ZERO);
                for i in 0..ENTRIES {
                    w.insert(i, deadline(i));
                }
                (w, Vec::<Entry>::with_capacity(2048))
            },
            |(mut w, mut out)| {
                // Walk the clock one slot at a time across the 30 minutes, as a reactor would.
                let mut fired = 0usize;
                let mut now = 0;
                while now <= 1_801_000 {
                    while w.expire(Tick::from_ms(now), &mut out, |_| true) {
                        fired += out.len();
                        out.clear();
                    }
                    fired += out.len();
                    out.clear();
                    now += 100;
                }
                assert_eq!(fired as u64, ENTRIES);
                w
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// A session driven to `Idling` through the public sans-IO API, as the transcript tests do.
fn idling_session(pool: &mut BufPool) -> Session {
    let spec = WatchSpec {
        host: "imap.example.org".into(),
        port: 993,
        security: Security::Tls,
        username: "alice".into(),
        secret: Secret::Password(Zeroizing::new(b"secret".to_vec())),
        mailboxes: vec!["INBOX".into()],
        since: None,
    };
    let now = Tick::ZERO;
    let mut s = Session::new(now, Arc::new(SessionConfig::default()), spec, 7);
    let mut tx = vec![0u8; TX_BUF_LEN];
    s.handle_connected(now);
    for server in [
        &b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ IDLE AUTH=PLAIN] ready\r\n"[..],
        b"A1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n",
        b"* 3 EXISTS\r\n* OK [UIDVALIDITY 1700000000] ok\r\n* OK [UIDNEXT 4] ok\r\nA2 OK [READ-ONLY] done\r\n",
        b"+ idling\r\n",
    ] {
        while s.poll_transmit(&mut tx) > 0 {}
        s.handle_input(now, server, pool);
        while s.poll_event().is_some() {}
    }
    while s.poll_transmit(&mut tx) > 0 {}
    assert_eq!(s.phase(), Phase::Idling, "the script must reach IDLE");
    s
}

fn session(c: &mut Criterion) {
    let mut pool = BufPool::new();
    let mut s = idling_session(&mut pool);
    let now = Tick::from_ms(1_000);
    s.handle_input(now, b"* 5 EXISTS\r\n", &mut pool);
    assert!(matches!(
        s.poll_event(),
        Some(SessionEvent::NewMail { exists: 5, .. })
    ));
    c.bench_function("session/idle_exists", |b| {
        b.iter(|| {
            s.handle_input(now, black_box(b"* 5 EXISTS\r\n"), &mut pool);
            black_box(s.poll_event())
        })
    });
    assert_eq!(pool.lent(), 0, "an idle session holds no buffer");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    targets = wheel, session
}
criterion_main!(benches);
