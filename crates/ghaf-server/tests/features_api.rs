//! The feature store over HTTP: plan and apply, training sets, materialisation and Feast's
//! online read shape.

mod common;

use axum::body::Body;
use axum::http::Request;
use common::TestApp;
use serde_json::json;

const BASE: &str = "/api/v1/projects/default";

async fn setup(app: &TestApp) {
    let schema = json!({"columns": [
        {"name": "driver_id", "type": "integer", "nullable": false},
        {"name": "event_timestamp", "type": "timestamp", "nullable": false},
        {"name": "rate", "type": "float"},
    ]});
    let response = app
        .call(
            "POST",
            &format!("{BASE}/datasets"),
            Some(&app.admin_token),
            Some(json!({"name": "stats", "schema": schema})),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.text());
    let csv = "driver_id,event_timestamp,rate\n1,2026-01-01T10:00:00Z,0.5\n1,2026-01-01T12:00:00Z,0.7\n2,2026-01-01T11:00:00Z,\n";
    let request = Request::builder()
        .method("POST")
        .uri(format!("{BASE}/datasets/stats/versions?format=csv"))
        .header("authorization", format!("Bearer {}", app.admin_token))
        .header("content-type", "text/csv")
        .body(Body::from(csv))
        .unwrap();
    let response = app.send(request).await;
    assert_eq!(response.status, 201, "{}", response.text());
}

fn definitions() -> serde_json::Value {
    json!({
        "entities": [{"name": "driver", "join_key": "driver_id", "value_type": "integer"}],
        "feature_views": [{
            "name": "driver_stats",
            "entities": ["driver"],
            "source": {"dataset": "stats"},
            "event_time": "event_timestamp",
            "features": [{"name": "rate"}, {"name": "rate_pct", "expression": "rate * 100"}],
        }],
    })
}

#[tokio::test]
async fn apply_train_materialize_and_read() {
    let app = TestApp::new().await;
    setup(&app).await;
    let token = Some(app.admin_token.as_str());

    let plan = app
        .call(
            "POST",
            &format!("{BASE}/features/plan"),
            token,
            Some(json!({"definitions": definitions()})),
        )
        .await;
    assert_eq!(plan.status, 200, "{}", plan.text());
    assert_eq!(plan.json()["applied"], json!(false));
    assert!(
        plan.json()["text"]
            .as_str()
            .unwrap()
            .contains("+ feature_view driver_stats v1")
    );
    let listed = app
        .call("GET", &format!("{BASE}/features"), token, None)
        .await;
    assert_eq!(
        listed.json()["feature_views"],
        json!([]),
        "a plan writes nothing"
    );

    let applied = app
        .call(
            "POST",
            &format!("{BASE}/features/apply"),
            token,
            Some(json!({"definitions": definitions()})),
        )
        .await;
    assert_eq!(applied.status, 200, "{}", applied.text());
    let versions = app
        .call(
            "GET",
            &format!("{BASE}/feature-views/driver_stats/versions"),
            token,
            None,
        )
        .await;
    assert_eq!(versions.json()["versions"][0]["version"], json!(1));

    // The entity table is the dataset itself: each row gets its own features back.
    let training = app
        .call(
            "POST",
            &format!("{BASE}/training-sets"),
            token,
            Some(json!({"entity_dataset": "stats", "features": ["driver_stats:rate_pct"], "output_dataset": "stats_training"})),
        )
        .await;
    assert_eq!(training.status, 201, "{}", training.text());
    assert_eq!(training.json()["rows"], json!(3));
    assert_eq!(training.json()["columns"][3], json!("rate_pct"));

    let materialized = app
        .call(
            "POST",
            &format!("{BASE}/feature-views/driver_stats/materialize"),
            token,
            Some(json!({"end": "2026-01-02T00:00:00Z"})),
        )
        .await;
    assert_eq!(materialized.status, 200, "{}", materialized.text());
    assert_eq!(
        materialized.json()["materialization"]["keys_written"],
        json!(2)
    );
    assert_eq!(materialized.json()["backend"], json!("redb"));

    let online = app
        .call(
            "POST",
            &format!("{BASE}/get-online-features"),
            token,
            Some(json!({"features": ["driver_stats:rate_pct", "driver_stats:rate"], "entities": {"driver_id": [1, 2, 3]}})),
        )
        .await;
    assert_eq!(online.status, 200, "{}", online.text());
    let body = online.json();
    assert_eq!(
        body["metadata"]["feature_names"],
        json!(["driver_id", "rate_pct", "rate"])
    );
    assert_eq!(body["results"][0]["values"], json!([1, 2, 3]));
    assert_eq!(body["results"][2]["values"], json!([0.7, null, null]));
    assert_eq!(
        body["results"][2]["statuses"],
        json!(["PRESENT", "NULL_VALUE", "NOT_FOUND"])
    );
    assert_eq!(
        body["results"][2]["event_timestamps"][0],
        json!("2026-01-01T12:00:00Z")
    );

    // Bad input names the field.
    let bad = app
        .call(
            "POST",
            &format!("{BASE}/get-online-features"),
            token,
            Some(json!({"features": ["driver_stats"], "entities": {"driver_id": [1]}})),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("view:feature"), "{}", bad.text());
    let bad_time = app
        .call(
            "POST",
            &format!("{BASE}/feature-views/driver_stats/materialize"),
            token,
            Some(json!({"end": "yesterday"})),
        )
        .await;
    assert_eq!(bad_time.status, 400, "{}", bad_time.text());
    assert_eq!(bad_time.json()["error"]["details"]["field"], json!("end"));
}

#[tokio::test]
async fn push_online_and_offline() {
    let app = TestApp::new().await;
    setup(&app).await;
    let token = Some(app.admin_token.as_str());
    let applied = app
        .call(
            "POST",
            &format!("{BASE}/features/apply"),
            token,
            Some(json!({"definitions": definitions()})),
        )
        .await;
    assert_eq!(applied.status, 200, "{}", applied.text());
    let read = |drivers: serde_json::Value| {
        let body = json!({"features": ["driver_stats:rate"], "entities": {"driver_id": drivers}});
        let app = &app;
        async move {
            app.call(
                "POST",
                &format!("{BASE}/get-online-features"),
                token,
                Some(body),
            )
            .await
            .json()
        }
    };

    // Online only: a new row for driver 7; nothing reaches the dataset.
    let pushed = app
        .call(
            "POST",
            &format!("{BASE}/push"),
            token,
            Some(json!({"push_source_name": "stats", "df": {"driver_id": [7], "event_timestamp": ["2026-01-03T00:00:00Z"], "rate": [0.9]}, "to": "online"})),
        )
        .await;
    assert_eq!(pushed.status, 200, "{}", pushed.text());
    assert_eq!(pushed.json()["online"][0]["written"], json!(1));
    assert_eq!(pushed.json()["offline"], json!(null));
    assert_eq!(read(json!([7])).await["results"][1]["values"], json!([0.9]));

    // An older push for the same key is skipped online but stored offline.
    let older = app
        .call(
            "POST",
            &format!("{BASE}/push"),
            token,
            Some(json!({"push_source_name": "stats", "df": {"driver_id": [7], "event_timestamp": ["2026-01-02T00:00:00Z"], "rate": [0.1]}, "to": "online_and_offline"})),
        )
        .await;
    assert_eq!(older.status, 200, "{}", older.text());
    assert_eq!(older.json()["online"][0]["skipped"], json!(1));
    assert_eq!(older.json()["offline"]["accepted"], json!(1));
    assert_eq!(read(json!([7])).await["results"][1]["values"], json!([0.9]));

    // A value of the wrong type fails the push and names the row and column.
    let bad = app
        .call(
            "POST",
            &format!("{BASE}/push"),
            token,
            Some(json!({"push_source_name": "stats", "df": {"driver_id": ["x"], "event_timestamp": ["2026-01-02T00:00:00Z"], "rate": [0.1]}})),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(
        bad.text().contains("row 1 column \\\"driver_id\\\""),
        "{}",
        bad.text()
    );
}

#[tokio::test]
async fn feast_root_paths_take_project_header() {
    let app = TestApp::new().await;
    setup(&app).await;
    let token = Some(app.admin_token.as_str());
    let applied = app
        .call(
            "POST",
            &format!("{BASE}/features/apply"),
            token,
            Some(json!({"definitions": definitions()})),
        )
        .await;
    assert_eq!(applied.status, 200, "{}", applied.text());
    let push = json!({"push_source_name": "stats", "df": {"driver_id": [3], "event_timestamp": ["2026-01-03T00:00:00Z"], "rate": [0.25]}});
    let read = json!({"features": ["driver_stats:rate"], "entities": {"driver_id": [3]}});
    for (path, body) in [("/push", push), ("/get-online-features", read)] {
        let request = Request::builder()
            .method("POST")
            .uri(path)
            .header("authorization", format!("Bearer {}", app.admin_token))
            .header("x-ghaf-project", "default")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = app.send(request).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        if path == "/get-online-features" {
            assert_eq!(response.json()["results"][1]["values"], json!([0.25]));
        }
    }

    // An unknown project in the header is not found, with Ghaf's error body.
    let request = Request::builder()
        .method("POST")
        .uri("/get-online-features")
        .header("authorization", format!("Bearer {}", app.admin_token))
        .header("x-ghaf-project", "missing")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"features": ["driver_stats:rate"], "entities": {"driver_id": [3]}}).to_string(),
        ))
        .unwrap();
    let response = app.send(request).await;
    assert_eq!(response.status, 404, "{}", response.text());
    assert_eq!(response.json()["error"]["code"], json!("not_found"));
}
