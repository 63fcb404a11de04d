//! imap-push-proxy: the server around the engine.
//!
//! What it never does: log, store or echo a password, OAuth2 token, push key or full
//! endpoint URL; follow a redirect; hold more than one IMAP session per subscription.

pub mod accounts;
pub mod api;
pub mod app;
pub mod capacity;
pub mod config;
pub mod core;
pub mod delivery;
pub mod destination;
pub mod error_code;
pub mod fd_budget;
pub mod id;
pub mod image;
pub mod journal;
pub mod log_limit;
pub mod logging;
pub mod node;
pub mod pacer;
pub mod ratelimit;
pub mod registry;
pub mod reload;
pub mod replacement;
pub mod resolution;
pub mod upgrade;
pub mod verification;

pub use app::App;
pub use config::Config;
