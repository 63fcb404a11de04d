//! Registrations per client: a token bucket each, in a bounded table.
//!
//! A client is an IPv4 address or an IPv6 /64 ([`client_key`]): one IPv6 host is
//! routinely given a whole /64 (2^64 addresses), so keying on the full address would
//! give it as many buckets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most client addresses tracked; past it, buckets that are full again are dropped.
pub const CLIENTS_MAX: usize = 100_000;
/// The prefix length under which IPv6 addresses are one client.
pub const IPV6_CLIENT_PREFIX_LEN: u32 = 64;

/// The identity limits apply to: an IPv4 address as is (also when IPv4-mapped), an IPv6
/// address reduced to its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mask = u128::MAX << (128 - IPV6_CLIENT_PREFIX_LEN);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        },
    }
}

#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute: per_minute.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `ip`'s client ([`client_key`]), or says how long until one is
    /// free.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let ip = client_key(ip);
        let capacity = f64::from(self.per_minute);
        let rate = capacity / 60.0;
        if self.buckets.len() >= CLIENTS_MAX && !self.buckets.contains_key(&ip) {
            self.buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < capacity);
        }
        let bucket = self.buckets.entry(ip).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_past_the_limit_waits_for_a_token() {
        let mut limiter = RateLimiter::new(60);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..60 {
            limiter.check(ip, t0).unwrap();
        }
        let wait = limiter.check(ip, t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        limiter.check(ip, t0 + Duration::from_secs(1)).unwrap();
        // Other clients are not affected.
        limiter.check("192.0.2.2".parse().unwrap(), t0).unwrap();
    }

    #[test]
    fn an_ipv6_64_is_one_client() {
        let mut limiter = RateLimiter::new(1);
        let t0 = Instant::now();
        limiter.check("2a00:1:2:3::1".parse().unwrap(), t0).unwrap();
        let same_64 = "2a00:1:2:3:ffff:ffff:ffff:ffff".parse().unwrap();
        assert!(limiter.check(same_64, t0).is_err());
        limiter.check("2a00:1:2:4::1".parse().unwrap(), t0).unwrap();
        // IPv4-mapped is the IPv4 client.
        limiter.check("192.0.2.9".parse().unwrap(), t0).unwrap();
        assert!(limiter
            .check("::ffff:192.0.2.9".parse().unwrap(), t0)
            .is_err());
    }

    #[test]
    fn client_keys() {
        let key = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(key("2a00:1:2:3:4:5:6:7"), "2a00:1:2:3::");
        assert_eq!(key("::ffff:10.1.2.3"), "10.1.2.3");
        assert_eq!(key("10.1.2.3"), "10.1.2.3");
        assert_eq!(key("::1"), "::");
    }
}
