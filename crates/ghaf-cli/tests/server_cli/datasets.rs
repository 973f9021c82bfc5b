//! `ghaf datasets` end to end: a real server as a child process on a free 127.0.0.1 port,
//! the shipped airlines table created from its schema file, ingested, and read back.

use crate::server::{data_file, ghaf, run, start_server};

#[test]
fn datasets_create_ingest_and_profile() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("data"));
    let schema = data_file("airlines.schema.yaml");
    let input = data_file("airlines.csv.gz");

    run(
        &server,
        &[
            "datasets",
            "create",
            "airlines",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    let ingested = run(
        &server,
        &[
            "datasets",
            "ingest",
            "airlines",
            input.to_str().unwrap(),
            "--null",
            "NA",
        ],
    );
    let text = String::from_utf8_lossy(&ingested.stdout);
    assert!(
        text.contains("Created version 1 of airlines: 16 rows stored, 0 rows quarantined."),
        "{text}"
    );

    let again = run(
        &server,
        &[
            "datasets",
            "ingest",
            "airlines",
            input.to_str().unwrap(),
            "--null",
            "NA",
        ],
    );
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(text.contains("already has this content"), "{text}");

    let profile = run(
        &server,
        &["datasets", "profile", "airlines", "1", "--output", "json"],
    );
    let body: serde_json::Value = serde_json::from_slice(&profile.stdout).unwrap();
    assert_eq!(body["row_count"], 16);
    assert_eq!(body["profile"]["columns"][0]["distinct_estimate"], 16);

    let versions = run(&server, &["datasets", "versions", "airlines"]);
    assert!(String::from_utf8_lossy(&versions.stdout).contains("upload:airlines.csv.gz"));

    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "carrier,name\nXX,Good\nx,bad code\n").unwrap();
    let rejected = ghaf(&["datasets", "ingest", "airlines", bad.to_str().unwrap()])
        .args(["--url", &server.url, "--token", &server.token])
        .output()
        .unwrap();
    assert!(!rejected.status.success());
    let message = String::from_utf8_lossy(&rejected.stderr);
    assert!(
        message.contains("rejected by the acceptance policy"),
        "{message}"
    );
}
