//! Ingest from `s3://` URIs against a local S3-compatible server: SeaweedFS `weed mini`,
//! installed by `tests/s3/setup.sh` (`GHAF_TEST_WEED` overrides the binary). Without it the
//! test fails and names the script, unless `GHAF_SKIP_PEER_TESTS=1` is set.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{csv_options, harness};
use ghaf_blob::{BlobConfig, BlobStore};
use ghaf_ingest::{IngestError, LineageFilter, ObjectInputConfig};
use object_store::ObjectStoreExt;

const BUCKET: &str = "landing";
const IDENTITIES: &str = r#"{"identities":[{"name":"admin","credentials":[{"accessKey":"testkey","secretKey":"testsecret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}"#;
/// `weed mini` 4.48 dials each component's gRPC port at its HTTP port plus this offset.
const GRPC_OFFSET: u16 = 10_000;
const COMPONENTS: [&str; 5] = ["s3", "master", "volume", "filer", "admin"];

fn weed_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GHAF_TEST_WEED") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").expect("HOME is not set");
    PathBuf::from(home).join(".cache/ghaf-venv-s3/bin/weed")
}

/// Returns a free port `p` whose gRPC port `p + GRPC_OFFSET` is free too.
fn free_port_pair(used_ports: &mut Vec<u16>) -> u16 {
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let Some(grpc) = port.checked_add(GRPC_OFFSET) else {
            continue;
        };
        if used_ports.contains(&port) || used_ports.contains(&grpc) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, grpc)).is_ok() {
            used_ports.extend([port, grpc]);
            return port;
        }
    }
}

/// A `weed mini` child process, killed on drop.
struct Weed {
    child: Child,
    s3_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Weed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_weed() -> Option<Weed> {
    let binary = weed_binary();
    if !binary.exists() {
        if std::env::var("GHAF_SKIP_PEER_TESTS").as_deref() == Ok("1") {
            return None;
        }
        panic!("{} is missing; run tests/s3/setup.sh", binary.display());
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("s3.json"), IDENTITIES).unwrap();

    let mut used_ports = Vec::new();
    let ports = COMPONENTS.map(|_| free_port_pair(&mut used_ports));

    let mut command = Command::new(&binary);
    command
        .arg("-logtostderr")
        .arg(format!("-config_dir={}", dir.path().display()))
        .arg("mini")
        .arg(format!("-dir={}", dir.path().join("data").display()))
        .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"]);
    for (component, port) in COMPONENTS.iter().zip(ports) {
        command
            .arg(format!("-{component}.port={port}"))
            .arg(format!("-{component}.port.grpc={}", port + GRPC_OFFSET));
    }
    command
        .args([
            "-master.telemetry=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-volume.preStopSeconds=0",
        ])
        .arg(format!(
            "-s3.config={}",
            dir.path().join("s3.json").display()
        ))
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
        .stdout(Stdio::null())
        .stderr(Stdio::null());

    let child = command.spawn().expect("start weed");
    Some(Weed {
        child,
        s3_port: ports[0],
        _dir: dir,
    })
}

fn s3_config(port: u16) -> BlobConfig {
    BlobConfig::S3 {
        bucket: "unused".into(),
        region: Some("us-east-1".into()),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        prefix: None,
        allow_http: true,
        access_key_id: Some("testkey".into()),
        secret_access_key: Some("testsecret".into()),
    }
}

/// Puts `content` at `key`, retrying until the freshly started server accepts writes.
async fn put_object(port: u16, key: &str, content: Vec<u8>) {
    let BlobConfig::S3 {
        region,
        endpoint,
        allow_http,
        access_key_id,
        secret_access_key,
        ..
    } = s3_config(port)
    else {
        unreachable!()
    };
    let config = BlobConfig::S3 {
        bucket: BUCKET.into(),
        region,
        endpoint,
        prefix: None,
        allow_http,
        access_key_id,
        secret_access_key,
    };
    let store = BlobStore::from_config(&config).unwrap();
    let location = object_store::path::Path::from(key);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match store
            .object_store()
            .put(&location, content.clone().into())
            .await
        {
            Ok(_) => return,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "the S3 server did not accept a write: {error}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_uri_is_ingested() {
    let Some(weed) = start_weed().await else {
        return;
    };
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(b"id,name\n1,a\n2,b\n").unwrap();
    put_object(weed.s3_port, "sales/day1.csv.gz", encoder.finish().unwrap()).await;

    let h = harness().await;
    h.create(
        "sales",
        "columns: [{name: id, type: integer}, {name: name, type: string}]",
    )
    .await;
    let service = h.service.clone().with_object_inputs(ObjectInputConfig {
        allowed_prefixes: vec![format!("s3://{BUCKET}/sales/")],
        s3: Some(s3_config(weed.s3_port)),
    });
    let dataset = h.dataset("sales").await;
    let uri = format!("s3://{BUCKET}/sales/day1.csv.gz");

    let outcome = service
        .ingest_object(&dataset, "p", &uri, &csv_options(), "tester", 1 << 30)
        .await
        .unwrap();

    assert_eq!(outcome.version.row_count, 2);
    assert_eq!(outcome.version.source, uri);
    let events = service
        .lineage_events(
            &h.tenant,
            &LineageFilter {
                dataset: Some("sales".into()),
                limit: 10,
                ..LineageFilter::default()
            },
        )
        .await
        .unwrap();
    let input = &events[0].event["inputs"][0];
    assert_eq!(input["namespace"], "s3://landing");
    assert_eq!(input["name"], "sales/day1.csv.gz");

    let missing = service
        .ingest_object(
            &dataset,
            "p",
            &format!("s3://{BUCKET}/sales/none.csv"),
            &csv_options(),
            "tester",
            1 << 30,
        )
        .await
        .unwrap_err();
    assert!(matches!(missing, IngestError::NotFound { .. }), "{missing}");

    let outside = service
        .ingest_object(
            &dataset,
            "p",
            &format!("s3://{BUCKET}/private/x.csv"),
            &csv_options(),
            "tester",
            1 << 30,
        )
        .await
        .unwrap_err();
    assert!(
        outside.to_string().contains("not under an allowed prefix"),
        "{outside}"
    );

    let too_big = service
        .ingest_object(&dataset, "p", &uri, &csv_options(), "tester", 10)
        .await
        .unwrap_err();
    assert!(
        too_big.to_string().contains("(ingest.max_upload_bytes)"),
        "{too_big}"
    );
}

#[tokio::test]
async fn object_inputs_are_off_by_default() {
    let h = harness().await;
    h.create("sales", "columns: [{name: id, type: integer}]")
        .await;
    let dataset = h.dataset("sales").await;
    let error = h
        .service
        .ingest_object(
            &dataset,
            "p",
            "s3://landing/a.csv",
            &csv_options(),
            "tester",
            1 << 30,
        )
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("ingest.object_uri_prefixes"),
        "{error}"
    );
}
