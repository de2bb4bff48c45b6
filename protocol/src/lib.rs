//! entente's wire protocol: the resource vector, every message the components exchange, the
//! subjects they travel on, the MessagePack codec that validates them on receipt, and a typed
//! NATS bus so no component hand-builds a subject or a payload.
//!
//! `docs/PROTOCOL.md` at the top of the repository describes the same messages for clients
//! written in other languages.

pub mod baseline;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod codec;
pub mod ids;
pub mod messages;
pub mod metrics;
pub mod resources;
pub mod samples;
pub mod subjects;
pub mod validate;

pub use codec::{decode, encode, DecodeError, EncodeError, Message, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
pub use ids::{HostId, IdError, NodeId, RoundId, TenantId, WorkloadId};
pub use messages::bid::{Bid, Bundle, ForecastSource, Offer};
pub use messages::decision::{Allocation, Decision};
pub use messages::forecast::{Forecast, Interference, InterferingPair, WorkloadForecast};
pub use messages::registration::{
    HostRegistration, PsiResource, PsiScope, RegistrationReply, Slo, WorkloadClass, WorkloadSpec,
};
pub use messages::rejection::{RejectReason, Rejection};
pub use messages::round::RoundAnnouncement;
pub use messages::status::{
    ClusterStatus, HostStatus, MembershipChange, MembershipReply, QuotaChange, StatusRequest, WorkloadStatus,
};
pub use messages::telemetry::{CounterSource, Counters, Pressure, PsiSource, Scheduler, TelemetrySample, Usage};
pub use resources::{Resource, ResourceError, ResourceVector, MAX_AMOUNT};
pub use subjects::{RaftRpc, Subject, Subjects};
pub use validate::ValidationError;
