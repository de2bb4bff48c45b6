//! The typed bus: entente's messages over NATS, and its decisions over JetStream.
//!
//! Components talk to each other only through [`Bus`]. It owns the connection (credentials, TLS,
//! reconnects logged as they happen), knows every subject through [`Subjects`], encodes with the
//! validating codec on the way out and decodes on the way in. A subscriber receives each message
//! as a `Result`: a malformed payload is handed to the component as a [`DecodeError`] to log,
//! count and answer, never silently dropped and never a panic.
//!
//! Decisions are the one durable output, so they go to a JetStream stream with a duplicate
//! window: each is published with message id `<round>/<host>`, and a new arbiter leader that
//! re-publishes a decision after failover is recorded once.

use crate::codec::{decode, encode, DecodeError, EncodeError, Message};
use crate::ids::{HostId, RoundId};
use crate::messages::{
    bid::Bid, decision::Decision, forecast::Forecast, registration::HostRegistration,
    registration::RegistrationReply, registration::WorkloadSpec, rejection::Rejection, round::RoundAnnouncement,
    telemetry::TelemetrySample,
};
use crate::subjects::{SubjectError, Subjects};
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

/// TLS settings for the NATS connection.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// Refuse to connect without TLS.
    pub require: bool,
    /// PEM file of extra root certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for servers that verify clients.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// How to reach NATS and under which prefix entente's subjects live.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// One server URL or several separated by commas (`nats://a:4222,nats://b:4222`).
    pub url: String,
    pub prefix: String,
    /// The connection name shown by the server's monitoring (`entente-agent@host1`, ...).
    pub name: String,
    /// A NATS `.creds` file (JWT and NKey seed).
    pub credentials_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub tls: TlsConfig,
    pub connect_timeout: Duration,
    /// The default deadline for a request that names none.
    pub request_timeout: Duration,
    /// Keep trying when the server is not up yet at start (containers starting together)
    /// instead of failing at once.
    pub retry_initial_connect: bool,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            url: "nats://127.0.0.1:4222".into(),
            prefix: crate::subjects::DEFAULT_PREFIX.into(),
            name: "entente".into(),
            credentials_file: None,
            user: None,
            password: None,
            token: None,
            tls: TlsConfig::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            retry_initial_connect: false,
        }
    }
}

/// How the decisions stream keeps its history.
#[derive(Debug, Clone)]
pub struct DecisionsStreamConfig {
    /// Decisions older than this are discarded.
    pub max_age: Duration,
    /// Within this window a second publish of the same `<round>/<host>` id is dropped. It must
    /// outlast a leader election plus the new leader's re-publication.
    pub duplicate_window: Duration,
    /// File storage survives a NATS restart; memory storage is for tests and benchmarks.
    pub file_storage: bool,
    /// Stream replicas in a clustered NATS deployment.
    pub replicas: usize,
}

impl Default for DecisionsStreamConfig {
    fn default() -> Self {
        DecisionsStreamConfig {
            max_age: Duration::from_secs(24 * 3600),
            duplicate_window: Duration::from_secs(120),
            file_storage: true,
            replicas: 1,
        }
    }
}

/// Where a decisions feed starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReplayFrom {
    /// Only decisions published from now on.
    New,
    /// Everything the stream still holds.
    All,
    /// Decisions of this round and later.
    Round(RoundId),
    /// Decisions published at or after this instant.
    Time(time::OffsetDateTime),
}

/// Everything that can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Subject(#[from] SubjectError),
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("publish to {subject} failed: {reason}")]
    Publish { subject: String, reason: String },
    #[error("subscribe to {subject} failed: {reason}")]
    Subscribe { subject: String, reason: String },
    #[error("no one answers requests on {subject}")]
    NoResponders { subject: String },
    #[error("request on {subject} timed out after {timeout:?}")]
    Timeout { subject: String, timeout: Duration },
    #[error("request on {subject} failed: {reason}")]
    Request { subject: String, reason: String },
    #[error("JetStream: {0}")]
    JetStream(String),
}

/// A connection to NATS that speaks entente's messages.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    subjects: Subjects,
    request_timeout: Duration,
}

impl Bus {
    /// Connects as configured. Connection state changes (disconnects, reconnects, lame-duck
    /// servers, slow consumers) are logged as they happen; the client reconnects forever.
    pub async fn connect(config: &BusConfig) -> Result<Bus, BusError> {
        let subjects = Subjects::new(&config.prefix)?;
        let mut options = async_nats::ConnectOptions::new()
            .name(&config.name)
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.request_timeout))
            .max_reconnects(None)
            .event_callback(|event| async move { log_event(event) });
        if let Some(path) = &config.credentials_file {
            options = options.credentials_file(path).await.map_err(|e| {
                BusError::Config(format!("cannot read credentials file {}: {e}", path.display()))
            })?;
        }
        match (&config.user, &config.password) {
            (Some(user), Some(password)) => options = options.user_and_password(user.clone(), password.clone()),
            (None, None) => {}
            _ => return Err(BusError::Config("a NATS user needs a password, and a password a user".into())),
        }
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        options = options.require_tls(config.tls.require);
        if let Some(ca) = &config.tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        match (&config.tls.client_cert, &config.tls.client_key) {
            (Some(cert), Some(key)) => options = options.add_client_certificate(cert.clone(), key.clone()),
            (None, None) => {}
            _ => return Err(BusError::Config("a TLS client certificate needs its key, and a key its certificate".into())),
        }
        if config.retry_initial_connect {
            options = options.retry_on_initial_connect();
        }
        let servers: Vec<async_nats::ServerAddr> = config
            .url
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<_, _>>()
            .map_err(|e| BusError::Config(format!("invalid NATS url {:?}: {e}", config.url)))?;
        let client = options
            .connect(servers)
            .await
            .map_err(|e| BusError::Connect { url: config.url.clone(), reason: e.to_string() })?;
        tracing::info!(url = %config.url, prefix = %subjects.prefix(), "connected to NATS");
        Ok(Bus::from_client(client, subjects, config.request_timeout))
    }

    /// Wraps an existing connection.
    pub fn from_client(client: async_nats::Client, subjects: Subjects, request_timeout: Duration) -> Bus {
        let jetstream = jetstream::new(client.clone());
        Bus { client, jetstream, subjects, request_timeout }
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The raw connection, for what the typed bus does not cover (Raft RPC transport).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The largest payload the connected server accepts.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Publishes any message on any subject.
    pub async fn publish<M: Message>(&self, subject: String, message: &M) -> Result<(), BusError> {
        let payload = encode(message)?;
        self.client
            .publish(subject.clone(), payload.into())
            .await
            .map_err(|e| BusError::Publish { subject, reason: e.to_string() })
    }

    /// Sends a request and decodes the typed answer, within `timeout` (the configured default
    /// when `None`).
    pub async fn request<Req: Message, Resp: Message>(
        &self,
        subject: String,
        message: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, BusError> {
        let payload = encode(message)?;
        let timeout = timeout.unwrap_or(self.request_timeout);
        let request = async_nats::Request::new().payload(payload.into()).timeout(Some(timeout));
        let reply = self.client.send_request(subject.clone(), request).await.map_err(|e| {
            use async_nats::RequestErrorKind;
            match e.kind() {
                RequestErrorKind::NoResponders => BusError::NoResponders { subject: subject.clone() },
                RequestErrorKind::TimedOut => BusError::Timeout { subject: subject.clone(), timeout },
                _ => BusError::Request { subject: subject.clone(), reason: e.to_string() },
            }
        })?;
        Ok(decode(&reply.payload)?)
    }

    /// Answers a request received on a subscription.
    pub async fn reply<M: Message>(&self, reply_to: async_nats::Subject, message: &M) -> Result<(), BusError> {
        let payload = encode(message)?;
        self.client
            .publish(reply_to.clone(), payload.into())
            .await
            .map_err(|e| BusError::Publish { subject: reply_to.to_string(), reason: e.to_string() })
    }

    /// Subscribes to a subject (wildcards allowed) and decodes what arrives as `M`.
    pub async fn subscribe<M: Message>(&self, subject: String) -> Result<Inbox<M>, BusError> {
        let subscriber = self
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|e| BusError::Subscribe { subject, reason: e.to_string() })?;
        Ok(Inbox { subscriber, message: PhantomData })
    }

    /// Like [`Bus::subscribe`], in a queue group: each message goes to one member only.
    pub async fn queue_subscribe<M: Message>(&self, subject: String, group: String) -> Result<Inbox<M>, BusError> {
        let subscriber = self
            .client
            .queue_subscribe(subject.clone(), group)
            .await
            .map_err(|e| BusError::Subscribe { subject, reason: e.to_string() })?;
        Ok(Inbox { subscriber, message: PhantomData })
    }

    /// Waits until everything published so far has reached the server.
    pub async fn flush(&self) -> Result<(), BusError> {
        self.client
            .flush()
            .await
            .map_err(|e| BusError::Publish { subject: "(flush)".into(), reason: e.to_string() })
    }

    pub async fn publish_telemetry(&self, sample: &TelemetrySample) -> Result<(), BusError> {
        self.publish(self.subjects.telemetry(&sample.host, &sample.workload), sample).await
    }

    pub async fn publish_forecast(&self, forecast: &Forecast) -> Result<(), BusError> {
        self.publish(self.subjects.forecast(&forecast.host), forecast).await
    }

    pub async fn announce_round(&self, round: &RoundAnnouncement) -> Result<(), BusError> {
        self.publish(self.subjects.round(), round).await
    }

    pub async fn submit_bid(&self, bid: &Bid) -> Result<(), BusError> {
        self.publish(self.subjects.bids(&bid.host), bid).await
    }

    pub async fn publish_rejection(&self, rejection: &Rejection) -> Result<(), BusError> {
        self.publish(self.subjects.rejections(&rejection.host), rejection).await
    }

    /// Registers a host with the arbiter cluster and returns its answer.
    pub async fn register_host(&self, host: &HostRegistration) -> Result<RegistrationReply, BusError> {
        self.request(self.subjects.register_host(), host, None).await
    }

    /// Registers a workload with the arbiter cluster; admission control may refuse it.
    pub async fn register_workload(&self, spec: &WorkloadSpec) -> Result<RegistrationReply, BusError> {
        self.request(self.subjects.register_workload(), spec, None).await
    }

    /// Creates the decisions stream if it does not exist yet (an existing one is left as is).
    pub async fn ensure_decisions_stream(&self, config: &DecisionsStreamConfig) -> Result<(), BusError> {
        let stream_config = stream::Config {
            name: self.subjects.decisions_stream(),
            subjects: vec![self.subjects.decisions_all()],
            max_age: config.max_age,
            duplicate_window: config.duplicate_window,
            storage: if config.file_storage { stream::StorageType::File } else { stream::StorageType::Memory },
            num_replicas: config.replicas,
            description: Some("entente decisions, one per round and host".into()),
            ..Default::default()
        };
        self.jetstream
            .get_or_create_stream(stream_config)
            .await
            .map_err(|e| BusError::JetStream(format!("cannot create stream {}: {e}", self.subjects.decisions_stream())))?;
        Ok(())
    }

    /// Publishes a committed decision on the decisions stream with message id `<round>/<host>`
    /// and waits for the stream's acknowledgement.
    pub async fn publish_decision(&self, decision: &Decision) -> Result<PublishedDecision, BusError> {
        let payload = encode(decision)?;
        let subject = self.subjects.decisions(&decision.host);
        let publish = jetstream::message::PublishMessage::build().payload(payload.into()).message_id(decision.message_id());
        let ack = self
            .jetstream
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| BusError::Publish { subject: subject.clone(), reason: e.to_string() })?
            .await
            .map_err(|e| BusError::Publish { subject, reason: e.to_string() })?;
        Ok(PublishedDecision { sequence: ack.sequence, duplicate: ack.duplicate })
    }

    /// Follows the decisions stream, for every host or one, from where `from` says.
    pub async fn decisions(&self, from: ReplayFrom, host: Option<&HostId>) -> Result<DecisionFeed, BusError> {
        let stream_name = self.subjects.decisions_stream();
        let stream = self
            .jetstream
            .get_stream(&stream_name)
            .await
            .map_err(|e| BusError::JetStream(format!("cannot open stream {stream_name}: {e}")))?;
        let deliver_policy = match from {
            ReplayFrom::New => consumer::DeliverPolicy::New,
            ReplayFrom::All | ReplayFrom::Round(_) => consumer::DeliverPolicy::All,
            ReplayFrom::Time(start_time) => consumer::DeliverPolicy::ByStartTime { start_time },
        };
        let filter_subject = match host {
            Some(h) => self.subjects.decisions(h),
            None => self.subjects.decisions_all(),
        };
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig { filter_subject, deliver_policy, ..Default::default() })
            .await
            .map_err(|e| BusError::JetStream(format!("cannot create consumer on {stream_name}: {e}")))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| BusError::JetStream(format!("cannot read {stream_name}: {e}")))?;
        let min_round = match from {
            ReplayFrom::Round(r) => r,
            _ => 0,
        };
        Ok(DecisionFeed { messages, min_round })
    }
}

/// The stream's acknowledgement of a published decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedDecision {
    /// The decision's sequence number in the stream.
    pub sequence: u64,
    /// True when the stream already held this `<round>/<host>` and dropped the copy.
    pub duplicate: bool,
}

/// A message received on a subscription, decoded or not.
#[derive(Debug)]
pub struct Received<M> {
    pub subject: String,
    /// Where to answer, for requests.
    pub reply: Option<async_nats::Subject>,
    pub message: Result<M, DecodeError>,
}

/// A typed subscription.
pub struct Inbox<M> {
    subscriber: async_nats::Subscriber,
    message: PhantomData<fn() -> M>,
}

impl<M: Message> Inbox<M> {
    /// The next message, or `None` once the subscription has ended.
    pub async fn next(&mut self) -> Option<Received<M>> {
        let raw = self.subscriber.next().await?;
        Some(Received { subject: raw.subject.to_string(), reply: raw.reply, message: decode(&raw.payload) })
    }

    /// Ends the subscription.
    pub async fn unsubscribe(mut self) -> Result<(), BusError> {
        self.subscriber
            .unsubscribe()
            .await
            .map_err(|e| BusError::Subscribe { subject: "(unsubscribe)".into(), reason: e.to_string() })
    }
}

/// A decision read back from the stream.
#[derive(Debug)]
pub struct StoredDecision {
    pub sequence: u64,
    pub published: time::OffsetDateTime,
    pub decision: Result<Decision, DecodeError>,
}

/// An ordered feed of decisions from the stream.
pub struct DecisionFeed {
    messages: consumer::pull::Ordered,
    min_round: RoundId,
}

impl DecisionFeed {
    /// The next decision, or `None` if the feed ended. Decisions of rounds before the replay
    /// start are skipped; undecodable ones are returned as errors, in order.
    pub async fn next(&mut self) -> Option<Result<StoredDecision, BusError>> {
        loop {
            let message = match self.messages.next().await? {
                Ok(m) => m,
                Err(e) => return Some(Err(BusError::JetStream(format!("decisions feed: {e}")))),
            };
            let (sequence, published) = match message.info() {
                Ok(info) => (info.stream_sequence, info.published),
                Err(e) => return Some(Err(BusError::JetStream(format!("decisions feed: {e}")))),
            };
            let decision = decode::<Decision>(&message.payload);
            if matches!(&decision, Ok(d) if d.round < self.min_round) {
                continue;
            }
            return Some(Ok(StoredDecision { sequence, published, decision }));
        }
    }
}

fn log_event(event: async_nats::Event) {
    use async_nats::Event;
    match event {
        Event::Connected => tracing::info!("NATS connection (re)established"),
        Event::Disconnected => tracing::warn!("NATS connection lost; reconnecting"),
        Event::LameDuckMode => tracing::warn!("NATS server entered lame-duck mode; it will close soon"),
        Event::SlowConsumer(sid) => tracing::warn!(sid, "NATS slow consumer: messages dropped"),
        Event::Draining => tracing::info!("NATS connection draining"),
        Event::Closed => tracing::info!("NATS connection closed"),
        Event::ServerError(e) => tracing::error!(error = %e, "NATS server error"),
        Event::ClientError(e) => tracing::error!(error = %e, "NATS client error"),
    }
}
