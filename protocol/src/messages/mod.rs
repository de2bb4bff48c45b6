//! Every message of the protocol, one file per conversation.
//!
//! Read them in the order of a round: [`registration`] (who is here and what they need),
//! [`telemetry`] (what they use), [`forecast`] (what they will use and how they will suffer),
//! [`round`] (the arbiter opens a round), [`bid`] (what each workload asks for and would pay),
//! [`decision`] (what each gets and pays), [`rejection`] (what was refused, and why); and
//! [`status`], how operators ask the arbiter cluster what it holds.

pub mod bid;
pub mod decision;
pub mod forecast;
pub mod registration;
pub mod rejection;
pub mod round;
pub mod status;
pub mod telemetry;
