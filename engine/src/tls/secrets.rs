//! Capture of the TLS 1.3 traffic secrets, which a KeyUpdate needs and rustls's secret
//! extraction does not return (it returns keys and IVs only).
//!
//! rustls hands secrets to the config's [`KeyLog`], keyed by the connection's client random.
//! The log is shared by every connection of the config, so it is a small bounded map: an
//! entry is written while a handshake finishes and taken (removed) by the same connection
//! at the switch to the compact record layer, or forgotten when that connection is dropped
//! before it. Only the two labels needed are accepted; every value is zeroized when it
//! leaves the map. Past [`PENDING_MAX`] entries new secrets are refused, and those
//! connections simply stay on rustls.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use rustls::KeyLog;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Most handshakes whose secrets wait to be taken at once. An entry lives from the server's
/// Finished to the switch, normally within the same reactor turn, so a few per reactor is
/// usual; this bound only guards against a bug that never takes them.
pub const PENDING_MAX: usize = 4096;

const CLIENT_LABEL: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER_LABEL: &str = "SERVER_TRAFFIC_SECRET_0";
const SECRET_LEN_MAX: usize = 48;

/// One traffic secret: up to 48 bytes (SHA-384).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TrafficSecret {
    bytes: [u8; SECRET_LEN_MAX],
    len: u8,
}

impl Default for TrafficSecret {
    fn default() -> Self {
        TrafficSecret {
            bytes: [0; SECRET_LEN_MAX],
            len: 0,
        }
    }
}

impl TrafficSecret {
    fn new(secret: &[u8]) -> Option<TrafficSecret> {
        let mut s = TrafficSecret::default();
        s.bytes.get_mut(..secret.len())?.copy_from_slice(secret);
        s.len = secret.len() as u8;
        Some(s)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// The first traffic secrets of one connection (client = ours to send, server = to receive).
#[derive(Clone, Default)]
pub struct TrafficSecrets {
    pub client: TrafficSecret,
    pub server: TrafficSecret,
}

/// The config's key log: pending secrets by client random.
#[derive(Default)]
pub struct SecretLog {
    pending: Mutex<HashMap<[u8; 32], TrafficSecrets>>,
}

impl std::fmt::Debug for SecretLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets: only how many wait.
        f.debug_struct("SecretLog")
            .field("pending", &self.lock().len())
            .finish()
    }
}

impl SecretLog {
    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], TrafficSecrets>> {
        // A panic elsewhere while holding the lock leaves a map that is still consistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes and returns both secrets of the connection, if both were logged.
    pub fn take(&self, client_random: &[u8; 32]) -> Option<TrafficSecrets> {
        let secrets = self.lock().remove(client_random)?;
        let complete = secrets.client.len > 0 && secrets.server.len > 0;
        complete.then_some(secrets)
    }

    /// Drops whatever the connection left (it ended before the switch).
    pub fn forget(&self, client_random: &[u8; 32]) {
        self.lock().remove(client_random);
    }

    /// Entries waiting (tests, stats).
    pub fn pending(&self) -> usize {
        self.lock().len()
    }
}

impl KeyLog for SecretLog {
    fn will_log(&self, label: &str) -> bool {
        label == CLIENT_LABEL || label == SERVER_LABEL
    }

    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        // rustls does not always ask `will_log` first (TLS 1.2's CLIENT_RANDOM): an entry
        // for another label would never be taken.
        let is_client = match label {
            CLIENT_LABEL => true,
            SERVER_LABEL => false,
            _ => return,
        };
        let (Ok(random), Some(secret)) = (
            <[u8; 32]>::try_from(client_random),
            TrafficSecret::new(secret),
        ) else {
            return;
        };
        let mut pending = self.lock();
        if pending.len() >= PENDING_MAX && !pending.contains_key(&random) {
            return;
        }
        let entry = pending.entry(random).or_default();
        if is_client {
            entry.client = secret;
        } else {
            entry.server = secret;
        }
    }
}
