//! entente-arbiter as a library: the clearing engine that the arbiter's round loop and the
//! `entente-arbiter` command share.

pub mod clearing;
pub mod raft;
