//! The agent's event loop: the edge where NATS, the clock and the host meet the negotiation.
//!
//! One task per workload (its negotiator, see [`crate::negotiator`]) owns that workload's
//! monitor, predictor state, budget estimate and enforcement lease. This module does what is
//! shared: it connects to the bus, registers the host and its workloads with the arbiter cluster,
//! and routes what arrives (the interval tick, round announcements, forecasts for this host,
//! decisions from the stream) to the negotiators. Shutdown is threaded through: on the signal the
//! loop stops taking events, every negotiator finishes the event in hand, and commands the agent
//! started are stopped.

use crate::config::WorkloadConfig;
use crate::enforce::{self, unix_ms_now, BackendKind, BlockDevice, Enforcer, TickReport};
use crate::metrics as m;
use crate::monitor::{self, cgroup::CgroupLayout};
use crate::negotiator::{Event, Negotiator};
use crate::workload::{self, ResolvedWorkload};
use entente_protocol::bus::{Bus, BusConfig, BusError, ReplayFrom};
use entente_protocol::{
    Decision, Forecast, HostId, HostRegistration, RegistrationReply, RejectReason, Rejection, ResourceVector,
    RoundAnnouncement, WorkloadId, WorkloadSpec,
};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Everything the agent needs to run, resolved from flags, environment and file.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub host: HostId,
    pub bus: BusConfig,
    pub interval: Duration,
    /// The enforcement backend; `None` picks the cgroup backend that enforces most here.
    pub backend: Option<BackendKind>,
    /// What the host offers; detected (cores and memory) when not configured.
    pub capacity: Option<ResourceVector>,
    pub cgroup_parent: String,
    pub discover_containers: bool,
    pub workloads: Vec<WorkloadConfig>,
}

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("enforcement backend: {0}")]
    Backend(String),
    #[error("workload {workload}: {message}")]
    Workload { workload: String, message: String },
    #[error("host registration refused by the arbiter: {0}")]
    HostRefused(String),
}

/// How long to wait between registration attempts while no arbiter answers, and the least time
/// between two re-registrations after the cluster forgot this host.
const REGISTRATION_RETRY: Duration = Duration::from_secs(2);
/// Further attempts at a workload's registration while no arbiter answers, before bidding anyway.
const WORKLOAD_REGISTRATION_ATTEMPTS: usize = 15;

/// How often an agent that discovers containers looks for labelled containers that started or
/// stopped since.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(3);

/// One workload the agent negotiates for.
struct Running {
    /// What the arbiter was told at admission, told again if the cluster forgets it.
    spec: WorkloadSpec,
    events: mpsc::Sender<Event>,
    task: tokio::task::JoinHandle<()>,
    started: crate::workload::Started,
    /// Found by label (and so dropped when its container stops), not configured.
    discovered: bool,
}

/// The workloads the agent negotiates for, in the order they were admitted.
#[derive(Default)]
struct Active {
    running: Vec<(WorkloadId, Running)>,
    /// Discovered workloads the arbiter refused: not offered again while their container runs.
    refused: std::collections::BTreeSet<WorkloadId>,
}

impl Active {
    /// Registers a resolved workload with the arbiter cluster and starts its negotiator; a
    /// refused workload is left as it is (neither bid for nor limited).
    async fn admit(
        &mut self,
        bus: &Bus,
        settings: &AgentSettings,
        enforcer: &mut Enforcer,
        config: WorkloadConfig,
        resolved: ResolvedWorkload,
        discovered: bool,
    ) {
        let spec = config.spec(&settings.host);
        // Retried while no arbiter answers (the cluster may be electing a leader): a workload the
        // cluster never heard of has every bid rejected as unknown.
        let what = format!("workload {}", config.id);
        let reply =
            register_until_answered(&what, Some(WORKLOAD_REGISTRATION_ATTEMPTS), || bus.register_workload(&spec)).await;
        match reply {
            Ok(RegistrationReply::Accepted) => tracing::info!(workload = %config.id, discovered, "workload registered"),
            Ok(RegistrationReply::Refused { reason }) => {
                tracing::error!(workload = %config.id, %reason, "admission refused; not negotiating for it");
                resolved.stop().await;
                if discovered {
                    self.refused.insert(config.id.clone());
                }
                return;
            }
            Err(e) => tracing::warn!(workload = %config.id, error = %e, "workload registration unanswered; bidding anyway"),
        }
        let ResolvedWorkload { monitor, target, started } = resolved;
        enforcer.register(config.id.clone(), target, spec.guaranteed, config.cpu_enforcement());
        let (events, rx) = mpsc::channel(64);
        let negotiator = Negotiator::new(spec.clone(), monitor, bus.clone(), settings.interval);
        let task = tokio::spawn(negotiator.run(rx));
        self.running.push((config.id, Running { spec, events, task, started, discovered }));
    }

    /// Starts negotiating for labelled containers that appeared and stops for discovered ones
    /// whose container is gone.
    async fn rediscover(
        &mut self,
        bus: &Bus,
        settings: &AgentSettings,
        enforcer: &mut Enforcer,
        kind: BackendKind,
        layout: &CgroupLayout,
    ) {
        let found = match workload::discover_containers().await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "container discovery failed; trying again later");
                return;
            }
        };
        let gone: Vec<WorkloadId> = self
            .running
            .iter()
            .filter(|(id, r)| r.discovered && !found.iter().any(|c| &c.id == id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(at) = self.running.iter().position(|(r, _)| *r == id) {
                let (_, running) = self.running.remove(at);
                drop(running.events);
                let _ = running.task.await;
                running.started.stop().await;
            }
            enforcer.unregister(&id);
            tracing::info!(workload = %id, "container gone; no longer negotiating for it");
        }
        self.refused.retain(|id| found.iter().any(|c| &c.id == id));
        for config in found {
            if self.running.iter().any(|(id, _)| *id == config.id) || self.refused.contains(&config.id) {
                continue;
            }
            if let Err(e) = config.validate(&settings.host) {
                tracing::error!(error = %e, "ignoring discovered container");
                continue;
            }
            match workload::resolve(&config, &settings.cgroup_parent, kind, layout).await {
                Ok(resolved) => {
                    tracing::info!(workload = %config.id, "new labelled container found");
                    self.admit(bus, settings, enforcer, config, resolved, true).await;
                }
                // It may have stopped between the listing and the inspection: next time.
                Err(message) => tracing::warn!(workload = %config.id, %message, "cannot manage discovered container yet"),
            }
        }
    }

    /// Stops every negotiator, then what the agent started, in reverse order: the first workload
    /// created the shared parent cgroup, and it can only be removed once every workload's own
    /// cgroup is gone.
    async fn stop_all(self) {
        let mut started = Vec::new();
        for (_, running) in self.running {
            drop(running.events);
            let _ = running.task.await;
            started.push(running.started);
        }
        for handle in started.into_iter().rev() {
            handle.stop().await;
        }
    }
}

/// Runs the agent until `shutdown` completes.
pub async fn run(settings: AgentSettings, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let capabilities = monitor::probe();
    tracing::info!(host = %settings.host, %capabilities, "entente-agent starting");
    let enforce_layout = enforce::detect_cgroup_layout().map_err(|e| AgentError::Backend(e.to_string()))?;
    let kind = match settings.backend {
        Some(kind) => kind,
        None => BackendKind::preferred_cgroup(&enforce_layout).ok_or_else(|| {
            AgentError::Backend("no cgroup controller to enforce with; choose --backend docker or dry-run".into())
        })?,
    };
    let disks = BlockDevice::list_disks().map_err(|e| AgentError::Backend(e.to_string()))?;
    let backend = enforce::backend_for(&enforce_layout, kind, &disks).await.map_err(|e| AgentError::Backend(e.to_string()))?;
    tracing::info!(backend = backend.name(), enforces = ?backend.enforces(), "enforcement backend ready");
    let layout = CgroupLayout::read();
    let bus = Bus::connect(&settings.bus).await?;
    let capacity = settings.capacity.unwrap_or_else(detect_capacity);

    let mut configs = settings.workloads.clone();
    if settings.discover_containers {
        for config in workload::discover_containers().await.map_err(AgentError::Backend)? {
            match config.validate(&settings.host) {
                Ok(()) if configs.iter().all(|c| c.id != config.id) => configs.push(config),
                Ok(()) => tracing::warn!(workload = %config.id, "discovered container duplicates a configured workload"),
                Err(e) => tracing::error!(error = %e, "ignoring discovered container"),
            }
        }
    }
    let mut workloads = Vec::new();
    for config in configs {
        match workload::resolve(&config, &settings.cgroup_parent, kind, &layout).await {
            Ok(resolved) => workloads.push((config, resolved)),
            Err(message) => {
                stop_all(workloads).await;
                return Err(AgentError::Workload { workload: config.id.to_string(), message });
            }
        }
    }

    let registration = HostRegistration {
        host: settings.host.clone(),
        capacity,
        enforces: backend.enforces(),
        backend: backend.name().to_owned(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    tokio::pin!(shutdown);
    let registered = tokio::select! {
        r = register_host(&bus, &registration) => r,
        _ = &mut shutdown => {
            stop_all(workloads).await;
            return Ok(());
        }
    };
    if let Err(e) = registered {
        stop_all(workloads).await;
        return Err(e);
    }

    // Subscribe before registering workloads so no round or decision falls between the two.
    let subjects = bus.subjects().clone();
    let mut rounds = bus.subscribe::<RoundAnnouncement>(subjects.round()).await?;
    let mut forecasts = bus.subscribe::<Forecast>(subjects.forecast(&settings.host)).await?;
    let mut rejections = bus.subscribe::<Rejection>(subjects.rejections(&settings.host)).await?;
    let mut decisions = decisions_feed(&bus, &settings.host).await;

    let mut enforcer = Enforcer::new(backend);
    let mut active = Active::default();
    for (config, resolved) in workloads {
        let discovered = matches!(config.source, crate::config::WorkloadSource::Container(_))
            && !settings.workloads.iter().any(|c| c.id == config.id);
        active.admit(&bus, &settings, &mut enforcer, config, resolved, discovered).await;
    }
    metrics::gauge!(m::WORKLOADS).set(active.running.len() as f64);
    let backend_name = enforcer.backend().name();
    metrics::counter!(m::ENFORCEMENT_ERRORS, "backend" => backend_name).absolute(0);
    // Hold every workload at its guarantee until the first decision arrives.
    record_report(&enforcer.tick(unix_ms_now()).await, backend_name);
    let forecast_fresh_for = settings.interval * crate::negotiator::FORECAST_FRESH_INTERVALS;
    let mut last_forecast: Option<Instant> = None;
    let mut reregistration: Option<(Instant, tokio::task::JoinHandle<()>)> = None;

    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut discovery = tokio::time::interval(DISCOVERY_INTERVAL);
    discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    discovery.tick().await; // the first tick is immediate: discovery just ran
    loop {
        let event = tokio::select! {
            _ = &mut shutdown => break,
            _ = discovery.tick(), if settings.discover_containers => {
                active.rediscover(&bus, &settings, &mut enforcer, kind, &layout).await;
                continue;
            }
            _ = tick.tick() => {
                record_report(&enforcer.tick(unix_ms_now()).await, backend_name);
                if let Some(at) = last_forecast {
                    metrics::gauge!(m::FORECAST_AGE).set(at.elapsed());
                    metrics::gauge!(m::FORECAST_FRESH).set(if at.elapsed() <= forecast_fresh_for { 1.0 } else { 0.0 });
                }
                Event::Tick
            }
            Some(r) = rounds.next() => match r.message {
                Ok(round) => Event::Round(Arc::new(round)),
                Err(e) => { tracing::warn!(error = %e, "undecodable round announcement"); continue }
            },
            Some(f) = forecasts.next() => match f.message {
                Ok(forecast) => {
                    metrics::counter!(m::FORECASTS_RECEIVED).increment(1);
                    last_forecast = Some(Instant::now());
                    Event::Forecast(Arc::new(forecast))
                }
                Err(e) => { tracing::warn!(error = %e, "undecodable forecast"); continue }
            },
            Some(r) = rejections.next() => match r.message {
                Ok(rejection) => {
                    let forgotten = rejection.reason == RejectReason::UnknownWorkload
                        && rejection.workload.as_ref().is_some_and(|w| active.running.iter().any(|(id, _)| id == w));
                    let due = reregistration
                        .as_ref()
                        .is_none_or(|(at, task)| task.is_finished() && at.elapsed() >= REGISTRATION_RETRY);
                    if forgotten && due {
                        tracing::warn!(workload = ?rejection.workload, "the arbiter does not know this workload; registering again");
                        let specs = active.running.iter().map(|(_, r)| r.spec.clone()).collect();
                        let task = tokio::spawn(register_again(bus.clone(), registration.clone(), specs));
                        reregistration = Some((Instant::now(), task));
                    }
                    Event::Rejected(Arc::new(rejection))
                }
                Err(e) => { tracing::warn!(error = %e, "undecodable rejection notice"); continue }
            },
            next = next_decision(&mut decisions) => match next {
                Some(decision) if decision.host == settings.host => {
                    metrics::counter!(m::DECISIONS_RECEIVED).increment(1);
                    let report = enforcer.on_decision(&decision, unix_ms_now()).await;
                    if !report.stale_decision && report.errors.is_empty() {
                        metrics::counter!(m::DECISIONS_ENFORCED).increment(1);
                    }
                    record_report(&report, backend_name);
                    Event::Decision(Arc::new(decision))
                }
                Some(_) => continue,
                None => {
                    if decisions.is_none() {
                        decisions = decisions_feed(&bus, &settings.host).await;
                    }
                    continue
                }
            },
        };
        for (_, running) in &active.running {
            // A negotiator that is behind skips a tick rather than stalling the whole host.
            if running.events.try_send(event.clone()).is_err() && !matches!(event, Event::Tick) {
                let _ = running.events.send(event.clone()).await;
            }
        }
    }
    if let Some((_, task)) = reregistration {
        task.abort();
    }
    active.stop_all().await;
    let _ = bus.flush().await;
    tracing::info!("entente-agent stopped");
    Ok(())
}

/// Logs and counts what a decision or a tick did on `backend`.
fn record_report(report: &TickReport, backend: &'static str) {
    for (workload, because) in &report.applied {
        tracing::debug!(%workload, ?because, "allocation applied");
    }
    for (workload, error) in &report.errors {
        tracing::warn!(%workload, %error, "enforcement failed; retrying next tick");
    }
    metrics::counter!(m::ENFORCEMENT_ERRORS, "backend" => backend).increment(report.errors.len() as u64);
    metrics::counter!(m::LEASE_FALLBACKS).increment(report.fell_back.len() as u64);
    for (workload, resources) in &report.unenforced {
        tracing::info!(%workload, ?resources, "decided resources this backend cannot enforce");
    }
}

async fn stop_all(workloads: Vec<(WorkloadConfig, ResolvedWorkload)>) {
    for (_, resolved) in workloads.into_iter().rev() {
        resolved.stop().await;
    }
}

/// Registers the host, retrying while no arbiter answers (the cluster may start after us).
async fn register_host(bus: &Bus, registration: &HostRegistration) -> Result<(), AgentError> {
    match register_until_answered("host", None, || bus.register_host(registration)).await? {
        RegistrationReply::Accepted => {
            tracing::info!(capacity = %registration.capacity, "host registered");
            Ok(())
        }
        RegistrationReply::Refused { reason } => Err(AgentError::HostRefused(reason)),
    }
}

/// Sends a registration until an arbiter answers it: while nobody answers (the cluster may be
/// starting or electing a leader) it waits `REGISTRATION_RETRY` and asks again, up to `retries`
/// more times (`None`: without end). Any answer, or any other error, is returned as it is.
async fn register_until_answered<F, Fut>(
    what: &str,
    retries: Option<usize>,
    mut request: F,
) -> Result<RegistrationReply, BusError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<RegistrationReply, BusError>>,
{
    let mut retried = 0;
    loop {
        match request().await {
            Err(BusError::NoResponders { .. } | BusError::Timeout { .. }) if retries.is_none_or(|r| retried < r) => {
                tracing::warn!("no arbiter answers {what} registration yet; retrying");
                retried += 1;
                tokio::time::sleep(REGISTRATION_RETRY).await;
            }
            reply => return reply,
        }
    }
}

/// Tells the arbiter cluster again about this host and its workloads after it rejected a bid
/// as coming from a workload it does not know: a cluster that lost its state (all replicas'
/// logs wiped, say) knows neither, and a host's bids would be rejected for ever otherwise. One
/// attempt each; the next rejection brings the next attempt, at most one per
/// `REGISTRATION_RETRY`.
async fn register_again(bus: Bus, registration: HostRegistration, specs: Vec<WorkloadSpec>) {
    match bus.register_host(&registration).await {
        Ok(RegistrationReply::Accepted) => tracing::info!("host registered again"),
        Ok(RegistrationReply::Refused { reason }) => {
            tracing::error!(%reason, "host registration refused on re-registration");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "host re-registration unanswered; trying again on the next rejection");
            return;
        }
    }
    for spec in specs {
        match bus.register_workload(&spec).await {
            Ok(RegistrationReply::Accepted) => tracing::info!(workload = %spec.workload, "workload registered again"),
            Ok(RegistrationReply::Refused { reason }) => {
                tracing::error!(workload = %spec.workload, %reason, "workload registration refused on re-registration")
            }
            Err(e) => tracing::warn!(workload = %spec.workload, error = %e, "workload re-registration unanswered"),
        }
    }
}

/// Follows this host's decisions on the stream. The stream is created by the arbiter; until it
/// exists the feed is absent and re-tried on the next poll.
async fn decisions_feed(bus: &Bus, host: &HostId) -> Option<entente_protocol::bus::DecisionFeed> {
    match bus.decisions(ReplayFrom::New, Some(host)).await {
        Ok(feed) => Some(feed),
        Err(e) => {
            tracing::debug!(error = %e, "decisions stream not available yet");
            None
        }
    }
}

async fn next_decision(feed: &mut Option<entente_protocol::bus::DecisionFeed>) -> Option<Decision> {
    let Some(f) = feed.as_mut() else {
        tokio::time::sleep(REGISTRATION_RETRY).await;
        return None;
    };
    loop {
        match f.next().await {
            Some(Ok(stored)) => match stored.decision {
                Ok(d) => return Some(d),
                Err(e) => tracing::warn!(error = %e, sequence = stored.sequence, "undecodable decision skipped"),
            },
            Some(Err(e)) => {
                tracing::warn!(error = %e, "decisions feed failed; reopening");
                return None;
            }
            None => return None,
        }
    }
}

/// The host's capacity when none is configured: its cores and memory. Disk and network
/// bandwidth cannot be read reliably from the host, so they are 0 (not traded) until configured.
pub fn detect_capacity() -> ResourceVector {
    let cores = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    ResourceVector::new(cores * 1000, memory, 0, 0)
}

/// What `entente-agent probe` prints.
pub fn probe_report() -> String {
    format!("host capacity: {}\n{}", detect_capacity(), monitor::probe())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_capacity_has_cores_and_memory() {
        let c = detect_capacity();
        assert!(c.cpu >= 1000 && c.memory > 0);
    }
}
