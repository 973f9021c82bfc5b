//! Dataset routes through the router: create, upload (streamed, with its own size limit),
//! versions, profiles, quarantine, Parquet download, schema evolution and lineage.

mod common;

use axum::body::Body;
use axum::http::Request;
use common::TestApp;
use ghaf_server::ServerConfig;

const SCHEMA: &str = r#"{
  "columns": [
    {"name": "id", "type": "integer", "nullable": false},
    {"name": "city", "type": "string", "classification": "pii", "allowed": ["dubai", "abu dhabi"]},
    {"name": "amount", "type": "float", "min": 0}
  ],
  "unique_key": ["id"],
  "acceptance": {"max_failure_share": 0.5}
}"#;

async fn upload(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> common::TestResponse {
    let request = Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", format!("Bearer {}", app.admin_token))
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap();
    app.send(request).await
}

async fn create(app: &TestApp) {
    let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
    let response = app
        .call(
            "POST",
            "/api/v1/projects/default/datasets",
            Some(&app.admin_token),
            Some(serde_json::json!({"name": "payments", "description": "card payments", "schema": schema})),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.text());
}

const VERSIONS: &str = "/api/v1/projects/default/datasets/payments/versions";

#[tokio::test]
async fn upload_creates_version_with_quarantine() {
    let app = TestApp::new().await;
    create(&app).await;

    let csv =
        b"id,city,amount\n1,dubai,10\n2,abu dhabi,NA\n3,paris,5\n4,dubai,-1\n5,dubai,7\n".to_vec();
    let path = format!("{VERSIONS}?file_name=payments.csv&null=NA,");
    let response = upload(&app, &path, "text/csv", csv.clone()).await;
    assert_eq!(response.status, 201, "{}", response.text());
    let body = response.json();
    assert_eq!(body["created"], true);
    assert_eq!(body["version"]["version"], 1);
    assert_eq!(body["version"]["row_count"], 3);
    assert_eq!(body["version"]["quarantined_rows"], 2);
    assert_eq!(body["version"]["source"], "upload:payments.csv");
    assert_eq!(body["report"]["rows_read"], 5);

    // The same upload again returns the existing version.
    let again = upload(&app, &path, "text/csv", csv).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["created"], false);
    assert_eq!(again.json()["version"]["version"], 1);

    let listed = app
        .call("GET", VERSIONS, Some(&app.admin_token), None)
        .await;
    assert_eq!(listed.json()["versions"].as_array().unwrap().len(), 1);

    let version = app
        .call(
            "GET",
            &format!("{VERSIONS}/1"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(version.status, 200, "{}", version.text());
    let profile = &version.json()["profile"];
    assert_eq!(profile["row_count"], 3);
    assert_eq!(profile["columns"][2]["null_count"], 1);
    assert_eq!(profile["columns"][2]["mean"], 8.5);

    let quarantine = app
        .call(
            "GET",
            &format!("{VERSIONS}/1/quarantine"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(quarantine.status, 200, "{}", quarantine.text());
    assert_eq!(quarantine.headers["content-type"], "application/x-ndjson");
    let lines: Vec<serde_json::Value> = quarantine
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["row"], 3);
    assert_eq!(lines[0]["reasons"][0]["check"], "allowed");
    assert_eq!(lines[1]["reasons"][0]["check"], "range");

    let data = app
        .call(
            "GET",
            &format!("{VERSIONS}/1/data"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(data.status, 200);
    assert!(
        data.body.starts_with(b"PAR1"),
        "a Parquet file starts with PAR1"
    );

    // Reads of data rows are audited.
    let audit = app
        .call(
            "GET",
            "/api/v1/audit?limit=100",
            Some(&app.admin_token),
            None,
        )
        .await;
    let text = audit.text();
    assert!(text.contains("datasets.quarantine.read"), "{text}");
    assert!(text.contains("datasets.versions.download"), "{text}");
}

#[tokio::test]
async fn upload_above_policy_is_rejected() {
    let app = TestApp::new().await;
    create(&app).await;
    let response = upload(
        &app,
        &format!("{VERSIONS}?format=csv"),
        "application/octet-stream",
        b"id,city,amount\n1,paris,1\n2,rome,2\n".to_vec(),
    )
    .await;
    assert_eq!(response.status, 409, "{}", response.text());
    assert_eq!(response.code(), "failed_precondition");
    let details = &response.json()["error"]["details"];
    assert_eq!(details["report"]["rows_quarantined"], 2);
    let listed = app
        .call("GET", VERSIONS, Some(&app.admin_token), None)
        .await;
    assert!(listed.json()["versions"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn upload_limit_is_separate_from_json_limit() {
    let mut config = ServerConfig::default();
    config.http.max_body_bytes = 128;
    config.ingest.max_upload_bytes = 4096;
    let app = TestApp::with_config(config).await;
    let schema: serde_json::Value =
        serde_json::from_str(r#"{"columns": [{"name": "id", "type": "integer"}]}"#).unwrap();
    let response = app
        .call(
            "POST",
            "/api/v1/projects/default/datasets",
            Some(&app.admin_token),
            Some(serde_json::json!({"name": "ids", "schema": schema})),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.text());

    let mut body = String::from("id\n");
    for id in 0..500 {
        body.push_str(&format!("{id}\n"));
    }
    assert!(body.len() > 128);
    assert!(body.len() < 4096);
    let path = "/api/v1/projects/default/datasets/ids/versions?format=csv";
    let response = upload(&app, path, "text/csv", body.into_bytes()).await;
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.json()["version"]["row_count"], 500);

    let too_big = vec![b'1'; 5000];
    let response = upload(&app, path, "text/csv", too_big).await;
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(response.code(), "payload_too_large");
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let app = TestApp::new().await;
    create(&app).await;
    let cases = [
        (VERSIONS.to_owned(), "format"),
        (format!("{VERSIONS}?format=xml"), "format"),
        (format!("{VERSIONS}?format=csv&delimiter=ab"), "delimiter"),
        (format!("{VERSIONS}?format=csv&colour=red"), "colour"),
    ];
    for (path, field) in cases {
        let response = upload(&app, &path, "application/octet-stream", b"id\n1\n".to_vec()).await;
        assert_eq!(response.status, 400, "{path}: {}", response.text());
        assert!(
            response.text().contains(field),
            "{path}: {}",
            response.text()
        );
    }
    let response = app
        .call(
            "POST",
            "/api/v1/projects/default/datasets",
            Some(&app.admin_token),
            Some(serde_json::json!({"name": "x", "schema": {"columns": []}})),
        )
        .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["details"]["field"], "schema");
    let reserved = app
        .call(
            "POST",
            "/api/v1/projects/default/datasets",
            Some(&app.admin_token),
            Some(serde_json::json!({"name": "x.dead-letter", "schema": {"columns": [{"name": "a", "type": "string"}]}})),
        )
        .await;
    assert_eq!(reserved.status, 400, "{}", reserved.text());
    assert_eq!(reserved.json()["error"]["details"]["field"], "name");
    let missing = app
        .call(
            "GET",
            &format!("{VERSIONS}/9"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(missing.status, 404);
    let no_dataset = app
        .call(
            "GET",
            "/api/v1/projects/default/datasets/nope",
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(no_dataset.status, 404);
}

#[tokio::test]
async fn schema_versions_and_lineage() {
    let app = TestApp::new().await;
    create(&app).await;
    let incompatible =
        serde_json::json!({"schema": {"columns": [{"name": "id", "type": "string"}]}});
    let path = "/api/v1/projects/default/datasets/payments/schemas";
    let response = app
        .call("POST", path, Some(&app.admin_token), Some(incompatible))
        .await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(
        response.json()["error"]["details"]["problems"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let mut wider: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
    wider["columns"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "note", "type": "string"}));
    let response = app
        .call(
            "POST",
            path,
            Some(&app.admin_token),
            Some(serde_json::json!({"schema": wider})),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.json()["version"], 2);

    let dataset = app
        .call(
            "GET",
            "/api/v1/projects/default/datasets/payments",
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(dataset.json()["schema_version"], 2);
    assert_eq!(
        dataset.json()["schema_history"].as_array().unwrap().len(),
        2
    );

    let ndjson = b"{\"id\": 1, \"city\": \"dubai\", \"amount\": 3, \"note\": \"first\"}\n".to_vec();
    let response = upload(&app, VERSIONS, "application/x-ndjson", ndjson).await;
    assert_eq!(response.status, 201, "{}", response.text());
    let run_id = response.json()["run_id"].as_str().unwrap().to_owned();

    let lineage = app
        .call(
            "GET",
            &format!("/api/v1/lineage?run_id={run_id}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(lineage.status, 200, "{}", lineage.text());
    let events = lineage.json()["events"].as_array().unwrap().clone();
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| event["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["START", "COMPLETE"]);
    assert_eq!(
        events[1]["outputs"][0]["facets"]["schema"]["fields"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(events[1]["inputs"][0]["namespace"], "upload");

    let other_project = app
        .call(
            "GET",
            "/api/v1/lineage?project=nope",
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(other_project.status, 404);
}

#[tokio::test]
async fn push_appends_segments_and_dead_letters() {
    let app = TestApp::new().await;
    create(&app).await;
    let path = "/api/v1/projects/default/datasets/payments/push";
    let batch = serde_json::json!([
        {"id": 1, "city": "dubai", "amount": 1},
        {"id": 2, "city": "paris", "amount": 2},
    ]);
    let response = app
        .call("POST", path, Some(&app.admin_token), Some(batch.clone()))
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["dead_lettered"], 1);
    assert_eq!(body["segment"]["version"], 1);

    let again = app
        .call("POST", path, Some(&app.admin_token), Some(batch))
        .await;
    assert_eq!(again.json()["duplicates_dropped"], 1);
    assert_eq!(again.json()["accepted"], 0);

    let ndjson = b"{\"id\": 3, \"city\": \"dubai\", \"amount\": 3}\n".to_vec();
    let response = upload(&app, path, "application/x-ndjson", ndjson).await;
    assert_eq!(
        response.json()["segment"]["version"],
        2,
        "{}",
        response.text()
    );

    let letters = app
        .call(
            "GET",
            "/api/v1/projects/default/datasets/payments.dead-letter/versions",
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(letters.status, 200, "{}", letters.text());
    assert_eq!(letters.json()["versions"][0]["row_count"], 1);

    let wrong_type = upload(&app, path, "text/csv", b"id\n1\n".to_vec()).await;
    assert_eq!(wrong_type.status, 415);
}

/// Builds a request body that sends `first`, waits `pause`, then sends `rest`.
fn slow_body(first: &'static [u8], pause: std::time::Duration, rest: &'static [u8]) -> Body {
    use futures::StreamExt;
    let chunks =
        futures::stream::iter([first, rest])
            .enumerate()
            .then(move |(index, chunk)| async move {
                if index > 0 {
                    tokio::time::sleep(pause).await;
                }
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(chunk))
            });
    Body::from_stream(chunks)
}

#[tokio::test]
async fn upload_has_its_own_time_limit() {
    let mut config = ServerConfig::default();
    config.http.request_timeout_seconds = 1;
    config.ingest.upload_timeout_seconds = 600;
    let app = TestApp::with_config(config).await;
    create(&app).await;

    let request = Request::builder()
        .method("POST")
        .uri(format!("{VERSIONS}?format=csv"))
        .header("authorization", format!("Bearer {}", app.admin_token))
        .body(slow_body(
            b"id,city,amount\n1,dubai,10\n",
            std::time::Duration::from_millis(1500),
            b"2,dubai,20\n",
        ))
        .unwrap();
    let response = app.send(request).await;

    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.json()["version"]["row_count"], 2);

    // JSON routes keep the request limit.
    assert_eq!(app.state.config().http.request_timeout_seconds, 1);
}

#[tokio::test]
async fn upload_timeout_stores_no_version() {
    let mut config = ServerConfig::default();
    config.ingest.upload_timeout_seconds = 1;
    let app = TestApp::with_config(config).await;
    create(&app).await;

    let request = Request::builder()
        .method("POST")
        .uri(format!("{VERSIONS}?format=csv"))
        .header("authorization", format!("Bearer {}", app.admin_token))
        .body(slow_body(
            b"id,city,amount\n1,dubai,10\n",
            std::time::Duration::from_millis(2500),
            b"2,dubai,20\n",
        ))
        .unwrap();
    let response = app.send(request).await;

    assert_eq!(response.status, 503, "{}", response.text());
    let listed = app
        .call("GET", VERSIONS, Some(&app.admin_token), None)
        .await;
    assert_eq!(listed.json()["versions"], serde_json::json!([]));
}

#[tokio::test]
async fn tsv_upload_uses_tabs() {
    let app = TestApp::new().await;
    create(&app).await;
    let response = upload(
        &app,
        &format!("{VERSIONS}?file_name=payments.tsv"),
        "application/octet-stream",
        b"id\tcity\tamount\n1\tabu dhabi\t10\n".to_vec(),
    )
    .await;
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.json()["version"]["row_count"], 1);
}

#[tokio::test]
async fn schema_label_lowering_is_confirmed_and_audited() {
    let app = TestApp::new().await;
    create(&app).await;
    let path = "/api/v1/projects/default/datasets/payments/schemas";
    let mut omitted: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
    omitted["columns"][1]
        .as_object_mut()
        .unwrap()
        .remove("classification");

    // Omitting the label keeps pii.
    let response = app
        .call(
            "POST",
            path,
            Some(&app.admin_token),
            Some(serde_json::json!({"schema": omitted})),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(
        response.json()["schema"]["columns"][1]["classification"],
        "pii"
    );

    // Lowering without confirmation is rejected.
    let mut lowered = omitted.clone();
    lowered["columns"][1]["classification"] = "public".into();
    let response = app
        .call(
            "POST",
            path,
            Some(&app.admin_token),
            Some(serde_json::json!({"schema": lowered})),
        )
        .await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert!(
        response.text().contains("lower_classification"),
        "{}",
        response.text()
    );

    // With confirmation it is stored and audited.
    let response = app
        .call(
            "POST",
            path,
            Some(&app.admin_token),
            Some(serde_json::json!({"schema": lowered, "lower_classification": ["city"]})),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.text());
    let audit = app
        .call(
            "GET",
            "/api/v1/audit?action=datasets.schema.update&limit=10",
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(audit.status, 200, "{}", audit.text());
    let text = audit.text();
    assert!(text.contains("classification_lowered"), "{text}");
    assert!(text.contains("\"from\":\"pii\""), "{text}");
}

#[tokio::test]
async fn push_reports_its_result() {
    let app = TestApp::new().await;
    create(&app).await;
    let path = "/api/v1/projects/default/datasets/payments/push";
    let body = b"{\"id\": 1, \"city\": \"dubai\", \"amount\": 1}\n".to_vec();
    let first = upload(&app, path, "application/x-ndjson", body.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["result"], "appended");
    let again = upload(&app, path, "application/x-ndjson", body).await;
    assert_eq!(again.json()["result"], "all_duplicates");
}

#[tokio::test]
async fn object_uri_needs_an_allowed_prefix() {
    let app = TestApp::new().await;
    create(&app).await;
    let response = upload(
        &app,
        &format!("{VERSIONS}?uri=s3://landing/payments.csv"),
        "application/octet-stream",
        Vec::new(),
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert!(
        response.text().contains("ingest.object_uri_prefixes"),
        "{}",
        response.text()
    );

    let mut config = ServerConfig::default();
    config.ingest.object_uri_prefixes = vec!["s3://landing/sales/".into()];
    let app = TestApp::with_config(config).await;
    create(&app).await;
    let response = upload(
        &app,
        &format!("{VERSIONS}?uri=s3://other/payments.csv"),
        "application/octet-stream",
        Vec::new(),
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert!(
        response.text().contains("not under an allowed prefix"),
        "{}",
        response.text()
    );
}
