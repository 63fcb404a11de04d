//! Shared pieces of the benchmarks: process and kernel measurements, and end-to-end
//! plumbing (server, mock IMAP processes, push sink).

pub mod e2e;
pub mod proc;
pub mod progress;
