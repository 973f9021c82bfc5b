//! Property test of request decoding: arbitrary bodies sent to every route that takes one
//! must get a 2xx or a 4xx with a code and a message, never a 5xx or a panic.

mod common;

use common::TestApp;
use ghaf_server::api::Access;
use proptest::prelude::*;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("viewer"),
            Just("admin"),
            Just("tenant_admin"),
            Just("default"),
            Just("p"),
            Just("")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_owned()),
                    Just("role".to_owned()),
                    Just("principal".to_owned()),
                    Just("project".to_owned()),
                    Just("description".to_owned()),
                    Just("expires_in_seconds".to_owned()),
                    Just("max_role".to_owned()),
                    Just("kind".to_owned()),
                    Just("email".to_owned()),
                    Just("admin".to_owned()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..5
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A body: valid JSON of any shape, or raw bytes that are mostly not JSON.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json_value().prop_map(|value| value.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn check_response(route: &str, response: &common::TestResponse) -> Result<(), TestCaseError> {
    let status = response.status.as_u16();
    prop_assert!(status < 500, "{route}: {status} {}", response.text());
    if status >= 400 {
        let body: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|e| TestCaseError::fail(format!("{route}: error body is not JSON: {e}")))?;
        // MLflow-compatible routes answer with MLflow's error shape.
        if body.get("error_code").is_some() {
            prop_assert!(
                body["error_code"].as_str().is_some_and(|c| !c.is_empty()),
                "{route}: {body}"
            );
            prop_assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{route}: {body}"
            );
            return Ok(());
        }
        prop_assert!(
            body["error"]["code"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "{route}: {body}"
        );
        prop_assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{route}: {body}"
        );
        if body["error"]["code"] == "invalid_argument" {
            prop_assert!(
                body["error"]["details"]["field"].is_string(),
                "{route}: no field named: {body}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bodies_never_cause_server_errors(bodies in prop::collection::vec(body(), 1..4)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let app = TestApp::new().await;
            for route in ghaf_server::route_table() {
                if route.request.is_none() || route.access == Access::Public {
                    continue;
                }
                let path = route.path.replace("{project}", "default");
                for body in &bodies {
                    let request = axum::http::Request::builder()
                        .method(route.method.clone())
                        .uri(&path)
                        .header("authorization", format!("Bearer {}", app.admin_token))
                        .header("content-type", "application/json")
                        .body(axum::body::Body::from(body.clone()))
                        .unwrap();
                    let response = app.send(request).await;
                    check_response(&format!("{} {}", route.method, route.path), &response)?;
                }
            }
            Ok::<(), TestCaseError>(())
        })?;
    }

    #[test]
    fn arbitrary_paths_and_queries_never_cause_server_errors(
        segment in "[a-zA-Z0-9%._~-]{0,20}",
        query in "[a-z=&%0-9]{0,20}",
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let app = TestApp::new().await;
            for template in [
                "/api/v1/projects/{x}",
                "/api/v1/projects/{x}/members",
                "/api/v1/principals/{x}",
                "/api/v1/tokens/{x}",
                "/api/v1/role-bindings/{x}/{x}",
                "/api/v1/audit",
            ] {
                let path = format!("{}?{query}", template.replace("{x}", &segment));
                for method in ["GET", "DELETE", "POST"] {
                    let response = app.call(method, &path, Some(&app.admin_token), None).await;
                    check_response(&format!("{method} {path}"), &response)?;
                }
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}
