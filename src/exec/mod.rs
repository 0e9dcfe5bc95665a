//! Executors: how runbookd reaches hosts. SSH for commands, HTTPS for the PBS and PVE APIs.
//! Each sits behind a trait so the engine and its tests can swap the real one for another.

pub mod command;
pub mod http;
pub mod output;
pub mod pbs;
pub mod pve;
pub mod ssh;
