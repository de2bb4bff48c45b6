//! The test harness shared by entente's cross-component tests.
//!
//! Tests here run against real processes: [`NatsServer`] starts a real `nats-server` with
//! JetStream on a free loopback port and a temporary store, waits until it accepts clients, and
//! kills it when dropped, so a failing test never leaves a server behind. `scripts/test.sh`
//! installs a current `nats-server`; set `ENTENTE_NATS_SERVER` to use another binary.
//! [`prometheus`] scrapes a binary's `/metrics` and checks it with Prometheus's own `promtool`.

pub mod prometheus;

use entente_protocol::bus::{Bus, BusConfig};
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start accepting connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A real `nats-server` process owned by a test.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server with JetStream on a free port; panics with the server's log if it does
    /// not come up.
    pub fn start() -> NatsServer {
        let store = tempfile::Builder::new().prefix("entente-nats-").tempdir().expect("temporary directory");
        let mut server = NatsServer { child: None, port: 0, store };
        let mut last_error = String::new();
        // A free port can be taken by someone else between finding and binding it: retry.
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("nats-server did not start: {last_error}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let binary = nats_server_binary();
        let log = self.store.path().join("nats-server.log");
        let log_file = std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.store.path().join("jetstream"))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| {
                format!("cannot run {}: {e}; ./scripts/test.sh installs nats-server", binary.display())
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("exited with {status}: {}", read_log(&log)));
            }
            if accepts_clients(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(format!("not accepting connections after {STARTUP_TIMEOUT:?}: {}", read_log(&log)))
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's JetStream store and log directory.
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// A bus configuration that reaches this server under `prefix`.
    pub fn bus_config(&self, prefix: &str) -> BusConfig {
        BusConfig { url: self.url(), prefix: prefix.to_owned(), name: "entente-test".into(), ..BusConfig::default() }
    }

    /// A connected bus with the default prefix.
    pub async fn bus(&self) -> Bus {
        Bus::connect(&self.bus_config(entente_protocol::subjects::DEFAULT_PREFIX)).await.expect("connect to test nats-server")
    }

    /// Kills the server (as a crash would), keeping its store so [`NatsServer::restart`] finds it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("nats-server did not restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `nats-server` to run: `$ENTENTE_NATS_SERVER`, else the one on `PATH`.
pub fn nats_server_binary() -> PathBuf {
    std::env::var_os("ENTENTE_NATS_SERVER").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind an ephemeral port").port()
}

/// True once a server on `port` greets with its `INFO` line.
fn accepts_clients(port: u16) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO")
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T>(timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
