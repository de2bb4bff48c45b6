//! entente's wire protocol: the resource vector, every message the components exchange, the
//! subjects they travel on, the MessagePack codec that validates them on receipt, and a typed
//! NATS bus so no component hand-builds a subject or a payload.

pub mod resources;

pub use resources::{Resource, ResourceError, ResourceVector, MAX_AMOUNT};
