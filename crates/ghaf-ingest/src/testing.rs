//! Helpers for tests of this crate and of the crates built on it; compiled only with the
//! `testing` feature.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable that names the tansu broker binary.
pub const TANSU_ENV: &str = "GHAF_TANSU";

/// Time a broker gets to accept connections after it starts.
const BROKER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// Returns the tansu binary: `GHAF_TANSU`, else the one `tests/kafka/setup.sh` installs
/// under `~/.cache/ghaf-tools`, else `None`.
pub fn tansu_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var(TANSU_ENV) {
        return Some(PathBuf::from(path));
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = PathBuf::from(home).join(".cache/ghaf-tools/tansu-0.6.0/bin/tansu");
    cached.exists().then_some(cached)
}

/// A Kafka-protocol broker (tansu) with an in-memory store, run as a child process on a free
/// 127.0.0.1 port and killed on drop.
pub struct KafkaTestBroker {
    child: Child,
    binary: PathBuf,
    url: String,
    /// `host:port` for Kafka clients' `bootstrap.servers`.
    pub address: String,
}

impl Drop for KafkaTestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl KafkaTestBroker {
    /// Starts a broker and waits until it accepts connections. Returns `None` when the
    /// binary is missing and `GHAF_SKIP_PEER_TESTS=1`.
    ///
    /// # Panics
    /// When the binary is missing without `GHAF_SKIP_PEER_TESTS=1`, or the broker does not
    /// start.
    pub async fn start() -> Option<Self> {
        let Some(binary) = tansu_binary() else {
            if std::env::var("GHAF_SKIP_PEER_TESTS").as_deref() == Ok("1") {
                eprintln!("skipped: the tansu broker is not installed (GHAF_SKIP_PEER_TESTS=1)");
                return None;
            }
            panic!(
                "the tansu broker is not installed; run tests/kafka/setup.sh, set {TANSU_ENV}, \
                 or set GHAF_SKIP_PEER_TESTS=1 to skip"
            );
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind a free port of 127.0.0.1")
            .local_addr()
            .expect("read the bound address")
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {}: {error}; run tests/kafka/setup.sh",
                    binary.display()
                )
            });
        let broker = Self {
            child,
            binary,
            url,
            address: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + BROKER_START_TIMEOUT;
        while tokio::net::TcpStream::connect(&broker.address)
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "tansu did not accept connections on {} within {BROKER_START_TIMEOUT:?}",
                broker.address
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(broker)
    }

    /// Creates `topic` with `partitions` partitions.
    ///
    /// # Panics
    /// When the broker rejects the topic.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let created = Command::new(&self.binary)
            .args([
                "topic",
                "create",
                "--broker",
                &self.url,
                "--partitions",
                &partitions.to_string(),
                topic,
            ])
            .output()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", self.binary.display()));
        assert!(
            created.status.success(),
            "cannot create topic {topic}: {}",
            String::from_utf8_lossy(&created.stderr)
        );
    }
}
