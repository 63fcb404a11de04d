//! The API side under attack (issue 9): one test per attack, each area in a file of its
//! own under `hostile/`. Tests with a time bound ("within a second") live in
//! `hostile_timing.rs`, a binary of their own whose tests run one at a time.

mod common;

#[path = "hostile/account_cap.rs"]
mod account_cap;
#[path = "hostile/capability.rs"]
mod capability;
#[path = "hostile/descriptors.rs"]
mod descriptors;
#[path = "hostile/destinations.rs"]
mod destinations;
#[path = "hostile/push_rebinding.rs"]
mod push_rebinding;
#[path = "hostile/small.rs"]
mod small;
#[path = "hostile/takeover.rs"]
mod takeover;
