//! The attack and fault review of `whorl serve` (issue 12), one test per
//! finding, each reproducing the attack or the fault: heavy probes and
//! their cancellation, admission of enrolments, labels and reply sizes,
//! re-enrolment, a hung GPU (`probes`); anonymous admin on the network,
//! audit gaps, TOML errors, health under saturation, silent connections
//! (`access`); two writers on one gallery, compaction by the server,
//! LoadShard outside the folder (`storage`). The limits and measured
//! behaviour are in `benches/reports/hardening.md`.

mod common;
#[path = "hardening/support.rs"]
mod support;

#[path = "hardening/access.rs"]
mod access;
#[path = "hardening/probes.rs"]
mod probes;
#[path = "hardening/storage.rs"]
mod storage;
