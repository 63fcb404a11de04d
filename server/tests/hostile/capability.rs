//! See hostile_clients.rs.
