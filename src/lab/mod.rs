//! The simulated estate ("the twin"): the hosts of reference/estate.toml on loopback, all
//! backed by one [`world::World`].

pub mod estate;
pub mod shell;
pub mod world;
