//! The Docker backend against a real Docker engine: decisions must land in the container's
//! HostConfig (and its cgroup), whatever the engine's quirks.
//!
//! The tests start containers from `entente-test-busybox:local`, built from the host's static
//! busybox by `scripts/build-test-image.sh` (run here when the image is missing; no registry is
//! needed). Without a reachable engine they fail, unless `ENTENTE_SKIP_DOCKER=1` is set.

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use bollard::Docker;
use entente_agent::enforce::{
    AppliedBecause, Backend, CpuEnforcement, DockerBackend, Enforcer, Target, UNLIMITED,
};
use entente_protocol::{Resource, ResourceVector, WorkloadId};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

const IMAGE: &str = "entente-test-busybox:local";
const MIB: u64 = 1 << 20;

/// The backend, or `None` (after saying so) when the tests are to be skipped.
async fn backend() -> Option<DockerBackend> {
    if std::env::var("ENTENTE_SKIP_DOCKER").as_deref() == Ok("1") {
        eprintln!("ENTENTE_SKIP_DOCKER=1: skipping the Docker enforcement test");
        return None;
    }
    let backend = DockerBackend::connect().await.unwrap_or_else(|e| {
        panic!("these tests need a Docker engine ({e}); set ENTENTE_SKIP_DOCKER=1 to skip them")
    });
    if backend.client().inspect_image(IMAGE).await.is_err() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-test-image.sh");
        let status = Command::new("sh")
            .arg(&script)
            .status()
            .expect("running build-test-image.sh");
        assert!(
            status.success(),
            "{} failed to build {IMAGE}",
            script.display()
        );
    }
    Some(backend)
}

/// A running test container, removed (forcibly) on drop even when an assertion failed.
struct TestContainer {
    docker: Docker,
    id: String,
}

impl TestContainer {
    async fn start(docker: &Docker, host_config: HostConfig) -> TestContainer {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("entente-test-{}-{nanos}", std::process::id());
        let body = ContainerCreateBody {
            image: Some(IMAGE.into()),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name),
            ..Default::default()
        };
        let created = docker
            .create_container(Some(options), body)
            .await
            .expect("creating the test container");
        let container = TestContainer {
            docker: docker.clone(),
            id: created.id,
        };
        docker
            .start_container(&container.id, None)
            .await
            .expect("starting the test container");
        container
    }

    fn target(&self) -> Target {
        Target::Container(self.id.clone())
    }

    async fn host_config(&self) -> HostConfig {
        self.docker
            .inspect_container(&self.id, None)
            .await
            .unwrap()
            .host_config
            .unwrap()
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let (docker, id) = (self.docker.clone(), self.id.clone());
        // Drop cannot await; remove from a runtime of its own on another thread.
        let removal = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let options = RemoveContainerOptions {
                force: true,
                ..Default::default()
            };
            runtime.block_on(docker.remove_container(&id, Some(options)))
        });
        if let Ok(Err(e)) = removal.join() {
            eprintln!("removing test container {}: {e}", self.id);
        }
    }
}

/// The container's v1 cgroup file, when the engine uses the cgroupfs driver on cgroup v1.
fn cgroupfs_v1_file(controller: &str, id: &str, file: &str) -> Option<String> {
    let path = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("docker")
        .join(id)
        .join(file);
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

#[tokio::test]
async fn a_decision_lands_in_the_container_as_quota_and_memory_with_swap() {
    let Some(backend) = backend().await else {
        return;
    };
    let container = TestContainer::start(backend.client(), HostConfig::default()).await;
    let backend: Arc<dyn Backend> = Arc::new(backend);
    assert_eq!(backend.enforces(), vec![Resource::Cpu, Resource::Memory]);

    let mut enforcer = Enforcer::new(backend.clone());
    let web = WorkloadId::new("web").unwrap();
    enforcer.register(
        web.clone(),
        container.target(),
        ResourceVector::new(100, 32 * MIB, 0, 0),
        CpuEnforcement::Cap,
    );
    let decided = ResourceVector::new(300, 64 * MIB, 5 * MIB, 0);
    let outcome = enforcer
        .on_allocation(&web, decided, u64::MAX, 0)
        .await
        .unwrap();
    assert_eq!(outcome.applied, Some(AppliedBecause::Decided));
    assert_eq!(
        outcome.unenforced,
        vec![Resource::DiskBw],
        "disk_bw cannot be updated on a running container"
    );

    let config = container.host_config().await;
    assert_eq!(config.cpu_quota, Some(30_000));
    assert_eq!(config.cpu_period, Some(100_000));
    assert_eq!(config.cpu_shares, Some(307));
    assert_eq!(config.memory, Some(64 * MIB as i64));
    assert_eq!(
        config.memory_swap,
        Some(64 * MIB as i64),
        "memory-swap is sent with memory"
    );
    if let Some(quota) = cgroupfs_v1_file("cpu", &container.id, "cpu.cfs_quota_us") {
        assert_eq!(quota, "30000", "the engine's cgroup must hold the quota");
    }
    if let Some(limit) = cgroupfs_v1_file("memory", &container.id, "memory.limit_in_bytes") {
        assert_eq!(limit, (64 * MIB).to_string());
    }

    let read = backend.read(&container.target()).await.unwrap();
    assert_eq!(read, backend.expected_reading(&decided.into()));
    let report = enforcer.tick(1).await;
    assert!(
        report.applied.is_empty() && report.errors.is_empty(),
        "nothing changed, nothing to apply: {report:?}"
    );

    // Growing memory past the old swap limit works because swap is raised with it; 0 lifts it.
    backend
        .apply(
            &container.target(),
            &ResourceVector::new(300, 256 * MIB, 0, 0).into(),
        )
        .await
        .unwrap();
    assert_eq!(container.host_config().await.memory, Some(256 * MIB as i64));
    backend
        .apply(&container.target(), &ResourceVector::new(300, 0, 0, 0).into())
        .await
        .unwrap();
    assert_eq!(
        backend.read(&container.target()).await.unwrap().memory,
        UNLIMITED
    );
    // And UNLIMITED cpu lifts the quota.
    backend
        .apply(
            &container.target(),
            &ResourceVector::new(UNLIMITED, 0, 0, 0).into(),
        )
        .await
        .unwrap();
    assert_eq!(
        backend.read(&container.target()).await.unwrap().cpu,
        UNLIMITED
    );
}

#[tokio::test]
async fn a_container_created_with_nano_cpus_is_updated_through_nano_cpus() {
    let Some(backend) = backend().await else {
        return;
    };
    let host_config = HostConfig {
        nano_cpus: Some(1_000_000_000),
        memory: Some(32 * MIB as i64),
        memory_swap: Some(48 * MIB as i64),
        ..Default::default()
    };
    let container = TestContainer::start(backend.client(), host_config).await;

    let decided = ResourceVector::new(500, 128 * MIB, 0, 0);
    backend.apply(&container.target(), &decided.into()).await.unwrap();
    let config = container.host_config().await;
    assert_eq!(config.nano_cpus, Some(500_000_000));
    assert!(
        config.cpu_quota.unwrap_or(0) == 0,
        "quota must stay unset beside NanoCpus: {:?}",
        config.cpu_quota
    );
    assert_eq!(config.memory, Some(128 * MIB as i64));
    assert_eq!(config.memory_swap, Some(128 * MIB as i64));
    assert_eq!(
        backend.read(&container.target()).await.unwrap(),
        backend.expected_reading(&decided.into())
    );

    let err = backend
        .apply(
            &Target::Container("entente-test-no-such-container".into()),
            &decided.into(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("entente-test-no-such-container"),
        "{err}"
    );
}
