//! See hostile_timing.rs.
