//! Every NATS subject entente uses, built and parsed in this one place.
//!
//! Components never format a subject by hand: they ask [`Subjects`] for it, and a receiver that
//! needs to know whose message it got (a wildcard subscriber) parses the subject back into a
//! [`Subject`]. All subjects start with a configurable prefix (default `entente`), so several
//! deployments can share one NATS account.
//!
//! | subject | message | pattern |
//! |---|---|---|
//! | `<p>.register.host` | [`HostRegistration`](crate::HostRegistration) | request/reply |
//! | `<p>.register.workload` | [`WorkloadSpec`](crate::WorkloadSpec) | request/reply |
//! | `<p>.telemetry.<host>.<workload>` | [`TelemetrySample`](crate::TelemetrySample) | publish |
//! | `<p>.forecast.<host>` | [`Forecast`](crate::Forecast) | broadcast |
//! | `<p>.round` | [`RoundAnnouncement`](crate::RoundAnnouncement) | broadcast |
//! | `<p>.bids.<host>` | [`Bid`](crate::Bid) | publish |
//! | `<p>.decisions.<host>` | [`Decision`](crate::Decision) | JetStream stream |
//! | `<p>.rejections.<host>` | [`Rejection`](crate::Rejection) | publish |
//! | `<p>.raft.<node>.<rpc>` | Raft RPCs between arbiter replicas | request/reply |
//! | `<p>.arbiter.status` | [`StatusRequest`](crate::StatusRequest) → [`ClusterStatus`](crate::ClusterStatus) | request/reply |
//! | `<p>.arbiter.<node>.status` | the same, answered by that replica | request/reply |
//! | `<p>.arbiter.quotas` | [`QuotaChange`](crate::QuotaChange) → [`RegistrationReply`](crate::RegistrationReply) | request/reply |
//! | `<p>.arbiter.members` | [`MembershipChange`](crate::MembershipChange) → [`MembershipReply`](crate::MembershipReply) | request/reply |

use crate::ids::{validate_token, HostId, IdError, NodeId, WorkloadId};
use std::fmt;

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "entente";

/// Why a prefix or a subject is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("subject prefix {prefix:?} is invalid: {source}")]
    BadPrefix { prefix: String, source: IdError },
    #[error("subject {0:?} does not start with this deployment's prefix")]
    ForeignPrefix(String),
    #[error("subject {0:?} is not an entente subject")]
    Unknown(String),
    #[error("subject {subject:?} has an invalid token: {source}")]
    BadToken { subject: String, source: IdError },
}

/// The Raft RPCs carried over NATS between arbiter replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RaftRpc {
    Append,
    Vote,
    Snapshot,
}

impl RaftRpc {
    pub fn name(self) -> &'static str {
        match self {
            RaftRpc::Append => "append",
            RaftRpc::Vote => "vote",
            RaftRpc::Snapshot => "snapshot",
        }
    }

    fn from_name(s: &str) -> Option<RaftRpc> {
        [RaftRpc::Append, RaftRpc::Vote, RaftRpc::Snapshot].into_iter().find(|r| r.name() == s)
    }
}

/// A parsed entente subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    RegisterHost,
    RegisterWorkload,
    Telemetry { host: HostId, workload: WorkloadId },
    Forecast { host: HostId },
    Round,
    Bids { host: HostId },
    Decisions { host: HostId },
    Rejections { host: HostId },
    Raft { node: NodeId, rpc: RaftRpc },
    Status,
    NodeStatus { node: NodeId },
    Quotas,
    Members,
}

/// Builds and parses the subjects of one deployment (one prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects { prefix: DEFAULT_PREFIX.to_owned() }
    }
}

impl Subjects {
    /// Subjects under `prefix`: one or more subject-safe tokens joined by `.`.
    pub fn new(prefix: &str) -> Result<Subjects, SubjectError> {
        for token in prefix.split('.') {
            validate_token(token)
                .map_err(|source| SubjectError::BadPrefix { prefix: prefix.to_owned(), source })?;
        }
        Ok(Subjects { prefix: prefix.to_owned() })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn register_host(&self) -> String {
        format!("{}.register.host", self.prefix)
    }
    pub fn register_workload(&self) -> String {
        format!("{}.register.workload", self.prefix)
    }
    pub fn telemetry(&self, host: &HostId, workload: &WorkloadId) -> String {
        format!("{}.telemetry.{host}.{workload}", self.prefix)
    }
    /// Telemetry of every workload of every host.
    pub fn telemetry_all(&self) -> String {
        format!("{}.telemetry.>", self.prefix)
    }
    pub fn forecast(&self, host: &HostId) -> String {
        format!("{}.forecast.{host}", self.prefix)
    }
    /// Forecasts for every host.
    pub fn forecast_all(&self) -> String {
        format!("{}.forecast.*", self.prefix)
    }
    pub fn round(&self) -> String {
        format!("{}.round", self.prefix)
    }
    pub fn bids(&self, host: &HostId) -> String {
        format!("{}.bids.{host}", self.prefix)
    }
    /// Bids of every host (what the arbiter leader listens to).
    pub fn bids_all(&self) -> String {
        format!("{}.bids.*", self.prefix)
    }
    pub fn decisions(&self, host: &HostId) -> String {
        format!("{}.decisions.{host}", self.prefix)
    }
    /// Decisions for every host: the subject the decisions stream captures.
    pub fn decisions_all(&self) -> String {
        format!("{}.decisions.*", self.prefix)
    }
    pub fn rejections(&self, host: &HostId) -> String {
        format!("{}.rejections.{host}", self.prefix)
    }
    pub fn rejections_all(&self) -> String {
        format!("{}.rejections.*", self.prefix)
    }
    pub fn raft(&self, node: NodeId, rpc: RaftRpc) -> String {
        format!("{}.raft.{node}.{}", self.prefix, rpc.name())
    }
    /// Cluster status requests, answered by any replica.
    pub fn status(&self) -> String {
        format!("{}.arbiter.status", self.prefix)
    }
    /// Status requests for one replica.
    pub fn node_status(&self, node: NodeId) -> String {
        format!("{}.arbiter.{node}.status", self.prefix)
    }
    /// Quota changes, answered by the leader.
    pub fn quotas(&self) -> String {
        format!("{}.arbiter.quotas", self.prefix)
    }
    /// Membership changes, answered by the leader.
    pub fn members(&self) -> String {
        format!("{}.arbiter.members", self.prefix)
    }
    /// Every Raft RPC addressed to `node`.
    pub fn raft_node_all(&self, node: NodeId) -> String {
        format!("{}.raft.{node}.*", self.prefix)
    }

    /// The JetStream stream that holds decisions: the prefix upper-cased, `.` and `-` as `_`,
    /// then `_DECISIONS` (`ENTENTE_DECISIONS` by default).
    pub fn decisions_stream(&self) -> String {
        let base: String = self
            .prefix
            .chars()
            .map(|c| if c == '.' || c == '-' { '_' } else { c.to_ascii_uppercase() })
            .collect();
        format!("{base}_DECISIONS")
    }

    /// Parses a concrete subject (no wildcards) of this deployment.
    pub fn parse(&self, subject: &str) -> Result<Subject, SubjectError> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .ok_or_else(|| SubjectError::ForeignPrefix(subject.to_owned()))?;
        let tokens: Vec<&str> = rest.split('.').collect();
        let bad = |source| SubjectError::BadToken { subject: subject.to_owned(), source };
        let host = |t: &str| HostId::new(t).map_err(bad);
        let parsed = match tokens.as_slice() {
            ["register", "host"] => Subject::RegisterHost,
            ["register", "workload"] => Subject::RegisterWorkload,
            ["telemetry", h, w] => Subject::Telemetry { host: host(h)?, workload: WorkloadId::new(*w).map_err(bad)? },
            ["forecast", h] => Subject::Forecast { host: host(h)? },
            ["round"] => Subject::Round,
            ["arbiter", "status"] => Subject::Status,
            ["arbiter", "members"] => Subject::Members,
            ["arbiter", "quotas"] => Subject::Quotas,
            ["arbiter", node, "status"] => match node.parse::<NodeId>() {
                Ok(node) => Subject::NodeStatus { node },
                Err(_) => return Err(SubjectError::Unknown(subject.to_owned())),
            },
            ["bids", h] => Subject::Bids { host: host(h)? },
            ["decisions", h] => Subject::Decisions { host: host(h)? },
            ["rejections", h] => Subject::Rejections { host: host(h)? },
            ["raft", node, rpc] => match (node.parse::<NodeId>(), RaftRpc::from_name(rpc)) {
                (Ok(node), Some(rpc)) => Subject::Raft { node, rpc },
                _ => return Err(SubjectError::Unknown(subject.to_owned())),
            },
            _ => return Err(SubjectError::Unknown(subject.to_owned())),
        };
        Ok(parsed)
    }
}

impl fmt::Display for Subjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> HostId {
        HostId::new(s).unwrap()
    }

    #[test]
    fn built_subjects_parse_back() {
        let s = Subjects::new("acme.prod").unwrap();
        let h = host("web-1");
        let w = WorkloadId::new("redis").unwrap();
        let cases = [
            (s.register_host(), Subject::RegisterHost),
            (s.register_workload(), Subject::RegisterWorkload),
            (s.telemetry(&h, &w), Subject::Telemetry { host: h.clone(), workload: w.clone() }),
            (s.forecast(&h), Subject::Forecast { host: h.clone() }),
            (s.round(), Subject::Round),
            (s.bids(&h), Subject::Bids { host: h.clone() }),
            (s.decisions(&h), Subject::Decisions { host: h.clone() }),
            (s.rejections(&h), Subject::Rejections { host: h.clone() }),
            (s.raft(3, RaftRpc::Vote), Subject::Raft { node: 3, rpc: RaftRpc::Vote }),
            (s.status(), Subject::Status),
            (s.members(), Subject::Members),
            (s.quotas(), Subject::Quotas),
            (s.node_status(2), Subject::NodeStatus { node: 2 }),
        ];
        for (subject, expected) in cases {
            assert!(subject.starts_with("acme.prod."), "{subject}");
            assert_eq!(s.parse(&subject).unwrap(), expected, "{subject}");
        }
        assert_eq!(s.decisions_stream(), "ACME_PROD_DECISIONS");
        assert_eq!(Subjects::default().decisions_stream(), "ENTENTE_DECISIONS");
    }

    #[test]
    fn rejects_bad_prefixes_and_foreign_subjects() {
        assert!(Subjects::new("").is_err());
        assert!(Subjects::new("a..b").is_err());
        assert!(Subjects::new("a.*").is_err());
        let s = Subjects::default();
        assert_eq!(s.parse("other.round"), Err(SubjectError::ForeignPrefix("other.round".into())));
        assert!(matches!(s.parse("entente.nope"), Err(SubjectError::Unknown(_))));
        assert!(matches!(s.parse("entente.raft.x.vote"), Err(SubjectError::Unknown(_))));
        assert!(matches!(s.parse("entente.bids.*"), Err(SubjectError::BadToken { .. })));
    }
}
