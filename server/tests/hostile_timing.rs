//! Attacks whose test has a time bound (issue 9): a binary of its own, so the rest of the
//! suite cannot starve them, and each test holds [`serial`] so they run one at a time.

mod common;

#[path = "hostile_timing/api_connections.rs"]
mod api_connections;
#[path = "hostile_timing/dns.rs"]
mod dns;
#[path = "hostile_timing/push_isolation.rs"]
mod push_isolation;

/// Held for the whole of each test of this binary.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
