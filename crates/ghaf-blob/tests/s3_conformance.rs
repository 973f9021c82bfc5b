//! The conformance checks against S3 or an S3-compatible service, run only when
//! `GHAF_TEST_S3_ENDPOINT` is set.
//!
//! Variables: `GHAF_TEST_S3_ENDPOINT` (such as `http://127.0.0.1:9000`), `GHAF_TEST_S3_BUCKET`
//! (an existing bucket), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, and optionally
//! `AWS_REGION`. Each run writes under a fresh key prefix and deletes nothing outside it.

use ghaf_blob::{BlobConfig, BlobStore, conformance};

#[tokio::test]
async fn s3_run_all() {
    let Ok(endpoint) = std::env::var("GHAF_TEST_S3_ENDPOINT") else {
        eprintln!("skipped: set GHAF_TEST_S3_ENDPOINT to run the conformance checks against S3");
        return;
    };
    let bucket = std::env::var("GHAF_TEST_S3_BUCKET")
        .expect("GHAF_TEST_S3_BUCKET must be set when GHAF_TEST_S3_ENDPOINT is set");

    // A fresh prefix per run keeps parallel runs in one bucket apart.
    let prefix = format!("ghaf-blob-test/{}", uuid::Uuid::new_v4().simple());
    let config = BlobConfig::S3 {
        bucket,
        region: None,
        allow_http: endpoint.starts_with("http://"),
        endpoint: Some(endpoint),
        prefix: Some(prefix),
        access_key_id: None,
        secret_access_key: None,
    };
    let store = BlobStore::from_config(&config).expect("opening the S3 store failed");
    conformance::run_all(&store).await;
}
