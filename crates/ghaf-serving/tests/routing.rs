//! Traffic policies on real SQLite and PostgreSQL stores: sticky A/B routing, weight changes
//! that keep loaded models, shadow traffic and its comparison dataset, variant stats summed
//! over two replicas, policy validation, and a policy read back after a restart.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Env, HookedLoader, env, env_with_loader, register};
use ghaf_runtime::{InferRequest, InferResponse, Tensor, TensorData};
use ghaf_serving::loader::{LoadError, RegistryLoader};
use ghaf_serving::policy::{
    AbSpec, CanaryChecks, CanarySpec, QualityCheck, RolloutState, RolloutStatus, ShadowSpec,
    StickyKey, TrafficPolicy,
};
use ghaf_serving::{DeploySpec, InferContext, PolicyUpdate, ServeError, ServingService, Variant};
use ghaf_tracking::TrackingStore;
use ghaf_train::{Column, Dataset, GbdtParams, Model, train_gbdt};

async fn counting_env(meta: ghaf_meta::SqlMetaStore) -> (Env, Arc<AtomicUsize>) {
    let loads = Arc::new(AtomicUsize::new(0));
    let counter = loads.clone();
    let env = env_with_loader(meta, move |inner| {
        // Counts loads and fails every load of the model named `broken`.
        Arc::new(HookedLoader::new(inner, counter).before_load(|model, _| {
            if model == "broken" {
                return Err(LoadError::Failed(
                    "the model file is unreadable (injected)".into(),
                ));
            }
            Ok(())
        }))
    })
    .await;
    (env, loads)
}

/// Trains a GBDT over `amount` and `age` whose label is `amount > threshold`.
fn model_with_threshold(threshold: f64) -> Model {
    let rows = 300;
    let amount: Vec<f64> = (0..rows).map(|i| (i as f64 * 0.37).sin()).collect();
    let age: Vec<f64> = (0..rows).map(|i| (i % 50) as f64).collect();
    let label: Vec<f64> = amount.iter().map(|&v| f64::from(v > threshold)).collect();
    let data = Dataset::new(
        vec![Column::f64("amount", amount), Column::f64("age", age)],
        label,
    )
    .unwrap();
    let params = GbdtParams {
        n_estimators: 8,
        ..GbdtParams::default()
    };
    Model::Gbdt(train_gbdt(&data, None, &params).unwrap().model)
}

fn request(rows: &[[f64; 2]]) -> InferRequest {
    InferRequest {
        inputs: vec![Tensor::new(
            "input",
            vec![rows.len() as i64, 2],
            TensorData::Fp64(rows.iter().flatten().copied().collect()),
        )],
        ..InferRequest::default()
    }
}

fn user(id: &str) -> InferContext {
    InferContext {
        principal: "alice".into(),
        headers: vec![("x-user-id".into(), id.into())],
    }
}

fn variant(name: &str, model: &str, version: i64, weight: u32) -> Variant {
    Variant {
        name: name.into(),
        model: model.into(),
        version,
        weight,
    }
}

fn sticky_ab() -> TrafficPolicy {
    TrafficPolicy::Ab(AbSpec {
        sticky: Some(StickyKey::Header {
            name: "x-user-id".into(),
        }),
        ..AbSpec::default()
    })
}

fn served_version(response: &InferResponse) -> String {
    response.model_version.clone().expect("model_version")
}

/// Registers two versions of `scorer` with different thresholds and deploys version 1 as
/// `name`; returns both versions.
async fn two_versions(env: &Env, name: &str) -> (i64, i64) {
    let (first, _) = register(env, "scorer", &model_with_threshold(0.5)).await;
    let (second, _) = register(env, "scorer", &model_with_threshold(-0.5)).await;
    env.serving
        .create(
            &env.scope,
            &env.project_name,
            name,
            &DeploySpec {
                model: "scorer".into(),
                version: first,
                ..DeploySpec::default()
            },
            "alice",
        )
        .await
        .unwrap();
    (first, second)
}

async fn wait_all_ready(serving: &ServingService, env: &Env, name: &str) {
    let info = serving
        .wait_loaded(&env.scope, name, Duration::from_secs(60))
        .await
        .unwrap();
    for status in &info.status {
        assert_eq!(status.state, "ready", "{status:?}");
    }
}

async fn set_ab(env: &Env, name: &str, first: i64, second: i64, weights: (u32, u32)) {
    env.serving
        .set_policy(
            &env.scope,
            name,
            PolicyUpdate {
                policy: Some(sticky_ab()),
                variants: Some(vec![
                    variant("primary", "scorer", first, weights.0),
                    variant("b", "scorer", second, weights.1),
                ]),
                ..PolicyUpdate::default()
            },
            "alice",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn sticky_key_keeps_variant() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    let env = env(meta).await;
    let (first, second) = two_versions(&env, "ab").await;
    set_ab(&env, "ab", first, second, (50, 50)).await;
    wait_all_ready(&env.serving, &env, "ab").await;

    let mut seen: HashMap<String, String> = HashMap::new();
    for call in 0..1000 {
        let id = format!("user-{}", call % 10);
        let response = env
            .serving
            .infer(&env.scope, "ab", None, request(&[[0.2, 30.0]]), &user(&id))
            .await
            .unwrap();
        let version = served_version(&response);
        let first_seen = seen.entry(id.clone()).or_insert_with(|| version.clone());
        assert_eq!(*first_seen, version, "{id} moved on call {call}");
    }
    let versions: std::collections::HashSet<&String> = seen.values().collect();
    assert_eq!(
        versions.len(),
        2,
        "10 users all reached one variant: {seen:?}"
    );
}

#[tokio::test]
async fn weight_change_keeps_loaded_models() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    let (env, loads) = counting_env(meta).await;
    let (first, second) = two_versions(&env, "canary").await;
    wait_all_ready(&env.serving, &env, "canary").await;
    assert_eq!(loads.load(Ordering::SeqCst), 1);

    set_ab(&env, "canary", first, second, (95, 5)).await;
    wait_all_ready(&env.serving, &env, "canary").await;
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    let before = env.serving.get(&env.scope, "canary").await.unwrap();

    for weights in [(75, 25), (50, 50), (0, 100)] {
        set_ab(&env, "canary", first, second, weights).await;
        // Every variant serves at once: no load, no warm-up, no 503 in between.
        let info = env.serving.get(&env.scope, "canary").await.unwrap();
        for status in &info.status {
            assert_eq!(status.state, "ready", "{status:?}");
        }
        env.serving
            .infer(
                &env.scope,
                "canary",
                None,
                request(&[[0.2, 30.0]]),
                &user("u"),
            )
            .await
            .unwrap();
    }
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    let after = env.serving.get(&env.scope, "canary").await.unwrap();
    assert_eq!(after.status[0].load_ms, before.status[0].load_ms);
    assert_eq!(after.status[1].load_ms, before.status[1].load_ms);
    assert_eq!(after.endpoint.generation, before.endpoint.generation + 3);
}

async fn shadow_endpoint(env: &Env, shadow_model: &str, shadow_version: i64, first: i64) {
    env.serving
        .set_policy(
            &env.scope,
            "mirrored",
            PolicyUpdate {
                variants: Some(vec![
                    variant("primary", "scorer", first, 100),
                    variant("shadow", shadow_model, shadow_version, 0),
                ]),
                shadow: Some(Some(ShadowSpec {
                    variant: "shadow".into(),
                    percent: 100.0,
                })),
                ..PolicyUpdate::default()
            },
            "alice",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn shadow_compares_without_answering() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    let env = env(meta).await;
    let (first, second) = two_versions(&env, "mirrored").await;
    shadow_endpoint(&env, "scorer", second, first).await;
    wait_all_ready(&env.serving, &env, "mirrored").await;

    // Rows where the two thresholds (0.5 and -0.5) give different classes, and rows
    // where they agree.
    let rows = [[0.0, 10.0], [0.9, 20.0], [-0.9, 30.0]];
    let expected = env
        .serving
        .infer(
            &env.scope,
            "mirrored",
            Some(&first.to_string()),
            request(&rows),
            &user("direct"),
        )
        .await
        .unwrap();
    for call in 0..20 {
        let response = env
            .serving
            .infer(&env.scope, "mirrored", None, request(&rows), &user("u"))
            .await
            .unwrap();
        assert_eq!(served_version(&response), first.to_string());
        assert_eq!(response.outputs, expected.outputs, "call {call}");
    }
    env.serving.flush_log().await;

    let compared = env
        .serving
        .recent_shadow_comparisons(&env.scope, "mirrored", 1000)
        .await
        .unwrap();
    assert_eq!(compared.len(), 60);
    let disagreeing = compared
        .iter()
        .filter(|row| row["agree"] == serde_json::json!(false))
        .count();
    assert!(disagreeing > 0, "{compared:?}");
    assert!(compared.iter().all(|row| row["shadow_error"].is_null()));
    assert_eq!(compared[0]["shadow_version"], serde_json::json!(second));

    let stats = env
        .serving
        .variant_stats(&env.scope, "mirrored")
        .await
        .unwrap();
    let primary = stats.iter().find(|s| s.variant == "primary").unwrap();
    let shadow = stats.iter().find(|s| s.variant == "shadow").unwrap();
    // 20 routed requests and the one pinned to the version; mirrored ones are not counted.
    assert_eq!(primary.requests, 21);
    assert_eq!(shadow.requests, 20);
    assert_eq!(shadow.shadow_compared, 20);
    assert_eq!(shadow.shadow_disagreed, 20);
}

#[tokio::test]
async fn failing_shadow_never_reaches_caller() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    let (env, _loads) = counting_env(meta).await;
    let (first, _) = two_versions(&env, "mirrored").await;
    let (broken, _) = register(&env, "broken", &model_with_threshold(0.0)).await;
    shadow_endpoint(&env, "broken", broken, first).await;
    let info = env
        .serving
        .wait_loaded(&env.scope, "mirrored", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(info.status[1].state, "failed", "{:?}", info.status);
    assert!(info.status[1].shadow);

    for _ in 0..5 {
        let response = env
            .serving
            .infer(
                &env.scope,
                "mirrored",
                None,
                request(&[[0.2, 30.0]]),
                &user("u"),
            )
            .await
            .unwrap();
        assert_eq!(served_version(&response), first.to_string());
    }
    env.serving.flush_log().await;
    let compared = env
        .serving
        .recent_shadow_comparisons(&env.scope, "mirrored", 100)
        .await
        .unwrap();
    assert_eq!(compared.len(), 5);
    let error = compared[0]["shadow_error"].as_str().unwrap_or_default();
    assert!(error.contains("failed to load"), "{error}");
    let stats = env
        .serving
        .variant_stats(&env.scope, "mirrored")
        .await
        .unwrap();
    let primary = stats.iter().find(|s| s.variant == "primary").unwrap();
    let shadow = stats.iter().find(|s| s.variant == "shadow").unwrap();
    assert_eq!(primary.errors, 0);
    assert_eq!(shadow.errors, 5);
}

async fn stats_add_up(env: Env) {
    let (first, _) = two_versions(&env, "shared").await;
    let replica = ServingService::new(
        env.meta.db().clone(),
        Arc::new(RegistryLoader::new(env.tracking.clone())),
        env.ingest.clone(),
        Some(env.features.clone()),
        None,
    );
    assert_ne!(replica.replica_id(), env.serving.replica_id());
    replica.load_all().await.unwrap();
    wait_all_ready(&env.serving, &env, "shared").await;
    wait_all_ready(&replica, &env, "shared").await;
    for _ in 0..7 {
        env.serving
            .infer(
                &env.scope,
                "shared",
                None,
                request(&[[0.2, 30.0]]),
                &user("u"),
            )
            .await
            .unwrap();
    }
    for _ in 0..5 {
        replica
            .infer(
                &env.scope,
                "shared",
                None,
                request(&[[0.2, 30.0]]),
                &user("u"),
            )
            .await
            .unwrap();
    }
    // A request rejected as invalid counts as a request but not as an error.
    let three_columns = InferRequest {
        inputs: vec![Tensor::new(
            "input",
            vec![1, 3],
            TensorData::Fp64(vec![0.2, 30.0, 1.0]),
        )],
        ..InferRequest::default()
    };
    let invalid = replica
        .infer(&env.scope, "shared", None, three_columns, &user("u"))
        .await
        .unwrap_err();
    assert!(
        matches!(invalid, ghaf_serving::ServingError::InvalidInput { .. }),
        "{invalid}"
    );
    replica.flush_stats().await.unwrap();

    let stats = env
        .serving
        .variant_stats(&env.scope, "shared")
        .await
        .unwrap();
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!(stats[0].version, first);
    assert_eq!(stats[0].requests, 13);
    assert_eq!(stats[0].errors, 0);
    assert_eq!(stats[0].latency_buckets.iter().sum::<u64>(), 13);
    assert_eq!(stats[0].error_rate(), Some(0.0));
    assert!(stats[0].latency_quantile_ms(0.99).is_some());
}

#[tokio::test]
async fn background_flush_writes_stats() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    let env = env(meta).await;
    two_versions(&env, "flushed").await;
    let replica = ServingService::new(
        env.meta.db().clone(),
        Arc::new(RegistryLoader::new(env.tracking.clone())),
        env.ingest.clone(),
        Some(env.features.clone()),
        None,
    );
    wait_all_ready(&replica, &env, "flushed").await;
    for _ in 0..3 {
        replica
            .infer(
                &env.scope,
                "flushed",
                None,
                request(&[[0.2, 30.0]]),
                &user("u"),
            )
            .await
            .unwrap();
    }
    // The replica's counters reach the database without an explicit flush.
    let mut requests = 0;
    for _ in 0..100 {
        let stats = env
            .serving
            .variant_stats(&env.scope, "flushed")
            .await
            .unwrap();
        requests = stats[0].requests;
        if requests == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(requests, 3);
}

#[tokio::test]
async fn stats_add_up_sqlite() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    stats_add_up(env(meta).await).await;
}

#[tokio::test]
async fn stats_add_up_postgres() {
    let (meta, guard) = ghaf_meta::testing::postgres_store().await;
    stats_add_up(env(meta).await).await;
    guard.drop_database().await;
}

fn canary() -> CanarySpec {
    CanarySpec {
        steps: vec![5, 25, 50, 100],
        interval_secs: 60,
        min_requests: 100,
        failure_threshold: 2,
        checks: CanaryChecks::default(),
        sticky: None,
    }
}

#[tokio::test]
async fn invalid_policies_name_field() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    let env = env(meta).await;
    let (first, second) = two_versions(&env, "checked").await;
    let pair = || {
        vec![
            variant("primary", "scorer", first, 50),
            variant("b", "scorer", second, 50),
        ]
    };
    let with_canary = |change: fn(&mut CanarySpec)| {
        let mut spec = canary();
        change(&mut spec);
        PolicyUpdate {
            policy: Some(TrafficPolicy::Canary(spec)),
            ..PolicyUpdate::default()
        }
    };
    let cases: Vec<(&str, PolicyUpdate, &str)> = vec![
        (
            "ab with one variant",
            PolicyUpdate {
                policy: Some(TrafficPolicy::Ab(AbSpec::default())),
                ..PolicyUpdate::default()
            },
            "variants",
        ),
        (
            "ab with zero weights",
            PolicyUpdate {
                policy: Some(TrafficPolicy::Ab(AbSpec::default())),
                variants: Some(vec![
                    variant("primary", "scorer", first, 0),
                    variant("b", "scorer", second, 0),
                ]),
                ..PolicyUpdate::default()
            },
            "variants",
        ),
        (
            "duplicate variant names",
            PolicyUpdate {
                variants: Some(vec![
                    variant("primary", "scorer", first, 50),
                    variant("primary", "scorer", second, 50),
                ]),
                ..PolicyUpdate::default()
            },
            "variants",
        ),
        (
            "invalid variant name",
            PolicyUpdate {
                variants: Some(vec![variant("Primary!", "scorer", first, 50)]),
                ..PolicyUpdate::default()
            },
            "variants",
        ),
        (
            "unknown metric",
            PolicyUpdate {
                policy: Some(TrafficPolicy::Ab(AbSpec {
                    metric: Some("f1".into()),
                    ..AbSpec::default()
                })),
                variants: Some(pair()),
                ..PolicyUpdate::default()
            },
            "policy.metric",
        ),
        (
            "shadow not listed",
            PolicyUpdate {
                shadow: Some(Some(ShadowSpec {
                    variant: "ghost".into(),
                    percent: 10.0,
                })),
                ..PolicyUpdate::default()
            },
            "shadow.variant",
        ),
        (
            "shadow on primary",
            PolicyUpdate {
                variants: Some(pair()),
                shadow: Some(Some(ShadowSpec {
                    variant: "primary".into(),
                    percent: 10.0,
                })),
                ..PolicyUpdate::default()
            },
            "shadow.variant",
        ),
        (
            "shadow percent above 100",
            PolicyUpdate {
                variants: Some(pair()),
                shadow: Some(Some(ShadowSpec {
                    variant: "b".into(),
                    percent: 150.0,
                })),
                ..PolicyUpdate::default()
            },
            "shadow.percent",
        ),
        (
            "steps not increasing",
            with_canary(|spec| spec.steps = vec![5, 5, 50]),
            "policy.steps",
        ),
        (
            "step above 100",
            with_canary(|spec| spec.steps = vec![50, 150]),
            "policy.steps",
        ),
        (
            "interval of zero",
            with_canary(|spec| spec.interval_secs = 0),
            "policy.interval_secs",
        ),
        (
            "min requests of zero",
            with_canary(|spec| spec.min_requests = 0),
            "policy.min_requests",
        ),
        (
            "failure threshold of zero",
            with_canary(|spec| spec.failure_threshold = 0),
            "policy.failure_threshold",
        ),
        (
            "unknown quality metric",
            with_canary(|spec| {
                spec.checks.quality = Some(QualityCheck {
                    metric: "precision".into(),
                    max_drop: 0.01,
                    min_labels: 10,
                })
            }),
            "policy.checks.quality.metric",
        ),
        (
            "invalid alias",
            PolicyUpdate {
                follow_alias: Some(Some("not an alias".into())),
                ..PolicyUpdate::default()
            },
            "follow_alias",
        ),
    ];
    for (case, update, field) in cases {
        let error = env
            .serving
            .set_policy(&env.scope, "checked", update, "alice")
            .await
            .unwrap_err();
        assert_eq!(error.field(), Some(field), "{case}: {error}");
    }

    let missing = env
        .serving
        .set_policy(
            &env.scope,
            "checked",
            PolicyUpdate {
                policy: Some(sticky_ab()),
                variants: Some(vec![
                    variant("primary", "scorer", first, 50),
                    variant("b", "scorer", 99, 50),
                ]),
                ..PolicyUpdate::default()
            },
            "alice",
        )
        .await
        .unwrap_err();
    assert_eq!(missing.code(), ghaf_core::ErrorCode::NotFound, "{missing}");
    let stored = env
        .serving
        .store()
        .get(&env.scope.tenant, &env.scope.project, "checked")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.generation, 1);
}

#[tokio::test]
async fn policy_survives_restart() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    let env = env(meta).await;
    let (first, second) = two_versions(&env, "kept").await;
    set_ab(&env, "kept", first, second, (70, 30)).await;
    env.serving
        .set_policy(
            &env.scope,
            "kept",
            PolicyUpdate {
                follow_alias: Some(Some("champion".into())),
                ..PolicyUpdate::default()
            },
            "alice",
        )
        .await
        .unwrap();
    wait_all_ready(&env.serving, &env, "kept").await;

    let restarted = ServingService::new(
        env.meta.db().clone(),
        Arc::new(RegistryLoader::new(env.tracking.clone())),
        env.ingest.clone(),
        Some(env.features.clone()),
        None,
    );
    assert_eq!(restarted.load_all().await.unwrap(), 1);
    wait_all_ready(&restarted, &env, "kept").await;
    let info = restarted.get(&env.scope, "kept").await.unwrap();
    assert_eq!(info.endpoint.policy, sticky_ab());
    assert_eq!(info.endpoint.follow_alias.as_deref(), Some("champion"));
    assert_eq!(info.endpoint.variants[1].weight, 30);

    // Both servers place every key on the same variant.
    for id in 0..50 {
        let context = user(&format!("user-{id}"));
        let before = env
            .serving
            .infer(&env.scope, "kept", None, request(&[[0.2, 30.0]]), &context)
            .await
            .unwrap();
        let after = restarted
            .infer(&env.scope, "kept", None, request(&[[0.2, 30.0]]), &context)
            .await
            .unwrap();
        assert_eq!(served_version(&before), served_version(&after), "user-{id}");
    }
    let listed = restarted.rollout_endpoints().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "kept");
}

fn running(first: i64, second: i64) -> RolloutState {
    RolloutState {
        id: uuid::Uuid::now_v7().to_string(),
        status: RolloutStatus::Running,
        stable_model: "scorer".into(),
        stable_version: first,
        candidate_model: "scorer".into(),
        candidate_version: second,
        step: 0,
        step_started_at: ghaf_core::now_millis(),
        failures: 0,
        started_at: ghaf_core::now_millis(),
        started_by: "controller".into(),
        ended_at: None,
        reason: None,
        baseline: Vec::new(),
        window_started_at: ghaf_core::now_millis(),
    }
}

#[tokio::test]
async fn rollout_write_cas_sqlite() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    rollout_write_is_compare_and_set(env(meta).await).await;
}

#[tokio::test]
async fn rollout_write_cas_postgres() {
    let (meta, guard) = ghaf_meta::testing::postgres_store().await;
    rollout_write_is_compare_and_set(env(meta).await).await;
    guard.drop_database().await;
}

async fn rollout_write_is_compare_and_set(env: Env) {
    let (first, second) = two_versions(&env, "rolled").await;
    let stored = env
        .serving
        .store()
        .get(&env.scope.tenant, &env.scope.project, "rolled")
        .await
        .unwrap()
        .unwrap();
    let variants = vec![
        variant("primary", "scorer", first, 95),
        variant(ghaf_serving::policy::CANDIDATE_VARIANT, "scorer", second, 5),
    ];
    let applied = env
        .serving
        .apply_rollout(
            &env.scope,
            "rolled",
            stored.generation,
            variants.clone(),
            TrafficPolicy::Canary(canary()),
            Some(running(first, second)),
            "controller",
        )
        .await
        .unwrap();
    assert_eq!(applied.generation, stored.generation + 1);
    let lost = env
        .serving
        .apply_rollout(
            &env.scope,
            "rolled",
            stored.generation,
            variants,
            TrafficPolicy::Canary(canary()),
            None,
            "controller",
        )
        .await
        .unwrap_err();
    assert!(matches!(lost, ServeError::Conflict(_)), "{lost}");

    let listed = env.serving.rollout_endpoints().await.unwrap();
    assert_eq!(listed.len(), 1);
    let blocked = env
        .serving
        .set_policy(
            &env.scope,
            "rolled",
            PolicyUpdate {
                policy: Some(TrafficPolicy::Single),
                ..PolicyUpdate::default()
            },
            "alice",
        )
        .await
        .unwrap_err();
    assert!(matches!(blocked, ServeError::Conflict(_)), "{blocked}");

    let info = env
        .serving
        .wait_loaded(&env.scope, "rolled", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(info.status.len(), 2);
    assert!(
        info.status.iter().all(|s| s.state == "ready"),
        "{:?}",
        info.status
    );
    let stored = env
        .serving
        .store()
        .get(&env.scope.tenant, &env.scope.project, "rolled")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.rollout.map(|r| r.status),
        Some(RolloutStatus::Running)
    );
    assert_eq!(stored.policy, TrafficPolicy::Canary(canary()));
}

#[tokio::test]
async fn create_follows_alias_version() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    let env = env(meta).await;
    let (version, _) = register(&env, "scorer", &model_with_threshold(0.5)).await;
    let scope = common::scope(&env);
    env.tracking_store
        .set_alias(&scope, "scorer", "champion", version)
        .await
        .unwrap();
    let spec = DeploySpec {
        model: "scorer".into(),
        version: 0,
        follow_alias: Some("champion".into()),
        ..DeploySpec::default()
    };
    let created = env
        .serving
        .create(&env.scope, &env.project_name, "follower", &spec, "alice")
        .await
        .unwrap();
    assert_eq!(created.endpoint.variants[0].version, version);
    assert_eq!(created.endpoint.follow_alias.as_deref(), Some("champion"));

    let missing = DeploySpec {
        follow_alias: Some("challenger".into()),
        ..spec
    };
    let error = env
        .serving
        .create(&env.scope, &env.project_name, "orphan", &missing, "alice")
        .await
        .unwrap_err();
    assert_eq!(error.code(), ghaf_core::ErrorCode::NotFound, "{error}");
}

/// Wraps a predictor so that every prediction waits while `gate` is closed.
struct GatedPredictor {
    inner: Arc<dyn ghaf_runtime::Predictor>,
    open: Arc<std::sync::atomic::AtomicBool>,
}

impl ghaf_runtime::Predictor for GatedPredictor {
    fn signature(&self) -> &ghaf_runtime::ModelSignature {
        self.inner.signature()
    }

    fn predict(
        &self,
        inputs: &[Tensor],
        outputs: &[String],
    ) -> Result<Vec<Tensor>, ghaf_runtime::RuntimeError> {
        while !self.open.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.inner.predict(inputs, outputs)
    }

    fn feature_names(&self) -> Option<&[String]> {
        self.inner.feature_names()
    }

    fn max_concurrent_runs(&self) -> Option<usize> {
        self.inner.max_concurrent_runs()
    }
}

/// Loads models through the registry and gates the predictions of the model named `slow`.
#[tokio::test]
async fn stalled_shadow_bounds_mirrors() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let gate = open.clone();
    // Models named `slow` get a predictor that waits while `open` is false.
    let env = env_with_loader(meta, move |inner| {
        Arc::new(
            HookedLoader::new(inner, Arc::new(AtomicUsize::new(0))).after_load(
                move |model, mut loaded| {
                    if model == "slow" {
                        loaded.predictor = Arc::new(GatedPredictor {
                            inner: loaded.predictor,
                            open: gate.clone(),
                        });
                    }
                    loaded
                },
            ),
        )
    })
    .await;
    let (first, _) = two_versions(&env, "mirrored").await;
    let (slow, _) = register(&env, "slow", &model_with_threshold(0.0)).await;
    shadow_endpoint(&env, "slow", slow, first).await;
    wait_all_ready(&env.serving, &env, "mirrored").await;

    // The shadow stalls: every primary request still answers, and mirroring stops at the
    // in-flight limit instead of spawning a task per request.
    open.store(false, Ordering::SeqCst);
    let extra = 20;
    for call in 0..ghaf_serving::MAX_MIRRORS_IN_FLIGHT + extra {
        let response = env
            .serving
            .infer(
                &env.scope,
                "mirrored",
                None,
                request(&[[0.2, 30.0]]),
                &user("u"),
            )
            .await
            .unwrap_or_else(|error| panic!("call {call}: {error}"));
        assert_eq!(served_version(&response), first.to_string());
    }
    assert_eq!(env.serving.skipped_mirrors(), extra as u64);

    open.store(true, Ordering::SeqCst);
    env.serving.flush_log().await;
    let stats = env
        .serving
        .variant_stats(&env.scope, "mirrored")
        .await
        .unwrap();
    let shadow = stats.iter().find(|s| s.variant == "shadow").unwrap();
    assert_eq!(shadow.requests, ghaf_serving::MAX_MIRRORS_IN_FLIGHT as u64);
    assert_eq!(shadow.errors, 0);
}

#[tokio::test]
async fn removing_shadow_drops_its_variant() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    let env = env(meta).await;
    let (first, second) = two_versions(&env, "mirrored").await;
    env.serving
        .set_policy(
            &env.scope,
            "mirrored",
            PolicyUpdate {
                policy: Some(sticky_ab()),
                variants: Some(vec![
                    variant("primary", "scorer", first, 70),
                    variant("b", "scorer", first, 30),
                    // The weight of a shadow is ignored, so a user may leave any value.
                    variant("shadow", "scorer", second, 50),
                ]),
                shadow: Some(Some(ShadowSpec {
                    variant: "shadow".into(),
                    percent: 10.0,
                })),
                ..PolicyUpdate::default()
            },
            "alice",
        )
        .await
        .unwrap();

    let info = env
        .serving
        .set_policy(
            &env.scope,
            "mirrored",
            PolicyUpdate {
                shadow: Some(None),
                ..PolicyUpdate::default()
            },
            "alice",
        )
        .await
        .unwrap();
    let names: Vec<&str> = info
        .endpoint
        .variants
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(names, ["primary", "b"]);
    assert_eq!(info.endpoint.shadow, None);
}

#[tokio::test]
async fn recreated_endpoint_replaces_cached_copy() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    let env = env(meta).await;
    let (first, second) = two_versions(&env, "again").await;
    set_ab(&env, "again", first, second, (50, 50)).await;
    let replica = ServingService::new(
        env.meta.db().clone(),
        Arc::new(RegistryLoader::new(env.tracking.clone())),
        env.ingest.clone(),
        Some(env.features.clone()),
        None,
    );
    let cached = replica.get(&env.scope, "again").await.unwrap();
    assert_eq!(cached.endpoint.generation, 2);

    // Another server deletes the endpoint and creates it again, back at generation 1.
    env.serving.delete(&env.scope, "again").await.unwrap();
    env.serving
        .create(
            &env.scope,
            &env.project_name,
            "again",
            &DeploySpec {
                model: "scorer".into(),
                version: second,
                ..DeploySpec::default()
            },
            "alice",
        )
        .await
        .unwrap();

    let listed = replica.list(&env.scope).await.unwrap();
    let again = listed
        .iter()
        .find(|info| info.endpoint.name == "again")
        .unwrap();
    assert_eq!(again.endpoint.generation, 1);
    assert_eq!(again.endpoint.variants.len(), 1);
    assert_eq!(again.endpoint.variants[0].version, second);
}

#[tokio::test]
async fn failed_candidate_falls_back_to_primary() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    let (env, _loads) = counting_env(meta).await;
    let (first, _) = two_versions(&env, "guarded").await;
    let (broken, _) = register(&env, "broken", &model_with_threshold(0.0)).await;
    wait_all_ready(&env.serving, &env, "guarded").await;
    let stored = env
        .serving
        .store()
        .get(&env.scope.tenant, &env.scope.project, "guarded")
        .await
        .unwrap()
        .unwrap();
    let mut state = running(first, broken);
    state.candidate_model = "broken".into();
    env.serving
        .apply_rollout(
            &env.scope,
            "guarded",
            stored.generation,
            vec![
                variant("primary", "scorer", first, 50),
                variant(
                    ghaf_serving::policy::CANDIDATE_VARIANT,
                    "broken",
                    broken,
                    50,
                ),
            ],
            TrafficPolicy::Canary(canary()),
            Some(state),
            "controller",
        )
        .await
        .unwrap();
    let info = env
        .serving
        .wait_loaded(&env.scope, "guarded", Duration::from_secs(60))
        .await
        .unwrap();
    let candidate_state = info
        .status
        .iter()
        .find(|s| s.name == ghaf_serving::policy::CANDIDATE_VARIANT)
        .map(|s| s.state.clone());
    assert_eq!(
        candidate_state.as_deref(),
        Some("failed"),
        "{:?}",
        info.status
    );

    // Every caller gets the primary's answer, although half the traffic is routed to the
    // candidate whose load failed.
    for call in 0..200 {
        let response = env
            .serving
            .infer(
                &env.scope,
                "guarded",
                None,
                request(&[[0.3, 10.0]]),
                &user("u"),
            )
            .await
            .unwrap_or_else(|error| panic!("call {call}: {error}"));
        assert_eq!(served_version(&response), first.to_string());
    }

    // The candidate's routed share counts as failed requests, which a canary check sees.
    let stats = env
        .serving
        .variant_stats(&env.scope, "guarded")
        .await
        .unwrap();
    let candidate = stats
        .iter()
        .find(|s| s.variant == ghaf_serving::policy::CANDIDATE_VARIANT)
        .unwrap();
    let primary = stats
        .iter()
        .find(|s| s.variant == "primary" && s.version == first)
        .unwrap();
    assert!(candidate.requests > 0, "{stats:?}");
    assert_eq!(candidate.errors, candidate.requests);
    assert_eq!(primary.errors, 0);
    assert!(primary.requests >= 200, "{stats:?}");
}
