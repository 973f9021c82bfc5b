//! The conformance suite every [`TrackingStore`] implementation must pass. Each check uses
//! its own projects, so the checks never see each other's objects and may run in any order.

use ghaf_core::{ProjectId, TenantId};

use crate::filter::{
    RunFilter, parse_experiment_filter, parse_registry_filter, parse_registry_order,
    parse_run_order,
};
use crate::*;

/// Returns the scope of project `project` in tenant `acme`.
pub fn scope(project: &str) -> Scope {
    Scope {
        tenant: TenantId::from_stored("acme"),
        project: ProjectId::from_stored(project),
    }
}

fn tag(key: &str, value: &str) -> Tag {
    Tag {
        key: key.into(),
        value: value.into(),
    }
}

fn param(key: &str, value: &str) -> Param {
    Param {
        key: key.into(),
        value: value.into(),
    }
}

fn metric(key: &str, value: f64, timestamp: i64, step: i64) -> Metric {
    Metric {
        key: key.into(),
        value,
        timestamp,
        step,
        model_id: String::new(),
    }
}

fn dummy_manifest() -> SignedManifest {
    SignedManifest {
        manifest: "{}".into(),
        signature: String::new(),
        key_id: String::new(),
    }
}

/// Runs every check.
pub async fn run_all(store: &dyn TrackingStore) {
    experiments(store).await;
    runs_and_metrics(store).await;
    run_search(store).await;
    lifecycle(store).await;
    logged_models_and_artifacts(store).await;
    registry(store).await;
    projects_are_isolated(store).await;
}

pub async fn experiments(store: &dyn TrackingStore) {
    let scope = scope("experiments");
    let default = store.get_experiment(&scope, 0).await.unwrap();
    assert_eq!(default.name, "Default");
    assert_eq!(default.artifact_location, "mlflow-artifacts:/0");

    let created = store
        .create_experiment(&scope, "fraud", None, &[tag("team", "risk")])
        .await
        .unwrap();
    assert_eq!(created.experiment_id, 1);
    assert_eq!(created.artifact_location, "mlflow-artifacts:/1");
    let second = store
        .create_experiment(&scope, "churn", None, &[])
        .await
        .unwrap();
    assert_eq!(second.experiment_id, 2);

    let duplicate = store.create_experiment(&scope, "fraud", None, &[]).await;
    assert!(matches!(
        duplicate,
        Err(TrackingError::AlreadyExists { .. })
    ));

    let by_name = store.get_experiment_by_name(&scope, "fraud").await.unwrap();
    assert_eq!(by_name.tags, vec![tag("team", "risk")]);
    let missing = store.get_experiment_by_name(&scope, "nope").await;
    assert!(matches!(missing, Err(TrackingError::NotFound { .. })));

    let all = store
        .search_experiments(&scope, ViewType::ActiveOnly, &[], &[], 10, 0)
        .await
        .unwrap();
    assert_eq!(all.items.len(), 3);
    let filter = parse_experiment_filter("name LIKE 'fr%' and tags.team = 'risk'").unwrap();
    let found = store
        .search_experiments(&scope, ViewType::ActiveOnly, &filter, &[], 10, 0)
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);
    assert_eq!(found.items[0].name, "fraud");
    let paged = store
        .search_experiments(&scope, ViewType::ActiveOnly, &[], &[], 2, 0)
        .await
        .unwrap();
    assert_eq!(paged.items.len(), 2);
    assert_eq!(paged.next_offset, Some(2));

    store
        .rename_experiment(&scope, 2, "churn-v2")
        .await
        .unwrap();
    assert_eq!(
        store.get_experiment(&scope, 2).await.unwrap().name,
        "churn-v2"
    );
    store
        .set_experiment_stage(&scope, 2, LifecycleStage::Deleted)
        .await
        .unwrap();
    let deleted = store
        .search_experiments(&scope, ViewType::DeletedOnly, &[], &[], 10, 0)
        .await
        .unwrap();
    assert_eq!(deleted.items.len(), 1);
}

pub async fn runs_and_metrics(store: &dyn TrackingStore) {
    let scope = scope("runs");
    let run = store
        .create_run(
            &scope,
            &NewRun {
                experiment_id: 0,
                user_id: "alice".into(),
                run_name: Some("first".into()),
                start_time: Some(1_000),
                tags: vec![tag("mlflow.source.type", "LOCAL")],
            },
        )
        .await
        .unwrap();
    let id = run.info.run_id.clone();
    assert_eq!(id.len(), 32);
    assert_eq!(run.info.status, RunStatus::Running);
    assert_eq!(
        run.info.artifact_uri,
        format!("mlflow-artifacts:/0/{id}/artifacts")
    );

    let metrics = [
        metric("loss", 0.9, 10, 0),
        metric("loss", 0.5, 20, 1),
        metric("loss", f64::NAN, 30, 2),
        metric("loss", 0.2, 40, 3),
        metric("up", f64::INFINITY, 10, 0),
        metric("down", f64::NEG_INFINITY, 10, 0),
        metric("nan", f64::NAN, 10, 0),
    ];
    store
        .log_batch(
            &scope,
            &id,
            &metrics,
            &[param("lr", "0.1"), param("model", "rf")],
            &[tag("team", "risk")],
        )
        .await
        .unwrap();
    // Logging the same values again keeps one copy of each.
    store
        .log_batch(&scope, &id, &metrics[..2], &[param("lr", "0.1")], &[])
        .await
        .unwrap();
    let changed = store
        .log_batch(&scope, &id, &[], &[param("lr", "0.2")], &[])
        .await;
    assert!(matches!(
        changed,
        Err(TrackingError::InvalidArgument { .. })
    ));

    let fetched = store.get_run(&scope, &id).await.unwrap();
    let latest = |key: &str| {
        fetched
            .metrics
            .iter()
            .find(|m| m.key == key)
            .unwrap()
            .clone()
    };
    assert_eq!(latest("loss").value, 0.2);
    assert_eq!(latest("loss").step, 3);
    assert_eq!(latest("up").value, f64::INFINITY);
    assert_eq!(latest("down").value, f64::NEG_INFINITY);
    assert!(latest("nan").value.is_nan());
    assert_eq!(
        fetched.params,
        vec![param("lr", "0.1"), param("model", "rf")]
    );
    assert!(fetched.tags.contains(&tag("team", "risk")));
    assert!(fetched.tags.contains(&tag("mlflow.runName", "first")));

    // An older step logged later does not replace the latest value.
    store
        .log_batch(&scope, &id, &[metric("loss", 0.01, 50, 1)], &[], &[])
        .await
        .unwrap();
    let history = store
        .metric_history(&scope, &id, "loss", 100, 0)
        .await
        .unwrap();
    let steps: Vec<i64> = history.items.iter().map(|m| m.step).collect();
    assert_eq!(steps, vec![0, 1, 1, 2, 3]);
    assert!(history.items[3].value.is_nan());
    assert_eq!(history.next_offset, None);
    assert_eq!(
        store.get_run(&scope, &id).await.unwrap().metrics[1].value,
        0.2,
        "metrics sort by key: down, loss, nan, up"
    );
    let first_page = store
        .metric_history(&scope, &id, "loss", 2, 0)
        .await
        .unwrap();
    assert_eq!(first_page.items.len(), 2);
    assert_eq!(first_page.next_offset, Some(2));
    let second_page = store
        .metric_history(&scope, &id, "loss", 2, 2)
        .await
        .unwrap();
    assert_eq!(second_page.items[0].step, 1);
    assert_eq!(second_page.items[0].value, 0.01);

    // Across calls, the stored latest value is replaced only by a newer one in MLflow's
    // order: step, then timestamp, then NaN below every number, then value.
    let cases = [
        (0.5, 10, 3, 0.5),
        (0.1, 20, 2, 0.5),
        (0.4, 10, 3, 0.5),
        (f64::NAN, 10, 3, 0.5),
        (0.6, 10, 3, 0.6),
        (f64::NEG_INFINITY, 11, 3, f64::NEG_INFINITY),
        (-1.0, 0, 4, -1.0),
    ];
    for (value, timestamp, step, expected) in cases {
        store
            .log_batch(
                &scope,
                &id,
                &[metric("order", value, timestamp, step)],
                &[],
                &[],
            )
            .await
            .unwrap();
        let run = store.get_run(&scope, &id).await.unwrap();
        let latest = run.metrics.iter().find(|m| m.key == "order").unwrap();
        assert_eq!(
            latest.value, expected,
            "after logging {value} at step {step}, timestamp {timestamp}"
        );
    }

    let info = store
        .update_run(
            &scope,
            &id,
            &RunUpdate {
                status: Some(RunStatus::Finished),
                end_time: Some(2_000),
                run_name: Some("renamed".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(info.status, RunStatus::Finished);
    assert_eq!(info.end_time, Some(2_000));
    let fetched = store.get_run(&scope, &id).await.unwrap();
    assert_eq!(fetched.info.run_name, "renamed");
    assert!(fetched.tags.contains(&tag("mlflow.runName", "renamed")));

    store.delete_run_tag(&scope, &id, "team").await.unwrap();
    let missing = store.delete_run_tag(&scope, &id, "team").await;
    assert!(matches!(missing, Err(TrackingError::NotFound { .. })));
    let unknown = store.get_run(&scope, "0123").await;
    assert!(matches!(unknown, Err(TrackingError::NotFound { .. })));
}

pub async fn run_search(store: &dyn TrackingStore) {
    let scope = scope("search");
    let experiment = store
        .create_experiment(&scope, "s", None, &[])
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..10_i64 {
        let run = store
            .create_run(
                &scope,
                &NewRun {
                    experiment_id: experiment.experiment_id,
                    user_id: if i % 2 == 0 { "alice" } else { "bob" }.into(),
                    run_name: Some(format!("run-{i}")),
                    start_time: Some(1_000 + i),
                    tags: vec![],
                },
            )
            .await
            .unwrap();
        let model = if i < 4 { "RF" } else { "gbm" };
        let mut metrics = vec![metric("acc", i as f64 / 10.0, 1, 0)];
        if i == 9 {
            metrics.clear();
        }
        store
            .log_batch(
                &scope,
                &run.info.run_id,
                &metrics,
                &[param("model", model)],
                &[tag("team", if i < 5 { "risk" } else { "growth" })],
            )
            .await
            .unwrap();
        ids.push(run.info.run_id);
    }
    let exp = [experiment.experiment_id];
    let (scope, exp) = (&scope, &exp);
    let search = |filter: &str, order: &[&str], max: u32, offset: u64| {
        let filter = RunFilter::parse(filter).unwrap();
        let order: Vec<_> = order.iter().map(|o| parse_run_order(o).unwrap()).collect();
        async move {
            let query = RunQuery {
                experiment_ids: exp.to_vec(),
                filter,
                view: ViewType::ActiveOnly,
                order_by: order,
                max_results: max,
                offset,
            };
            store.search_runs(scope, &query).await.unwrap()
        }
    };
    let names = |page: &Page<Run>| {
        page.items
            .iter()
            .map(|r| r.info.run_name.clone())
            .collect::<Vec<_>>()
    };

    let all = search("", &[], 100, 0).await;
    assert_eq!(all.items.len(), 10);
    assert_eq!(
        all.items[0].info.run_name, "run-9",
        "newest start time first"
    );

    let found = search("metrics.acc > 0.5 and params.model = 'gbm'", &[], 100, 0).await;
    assert_eq!(names(&found), ["run-8", "run-7", "run-6"]);
    let like = search("params.model LIKE 'r%'", &[], 100, 0).await;
    assert!(like.items.is_empty(), "LIKE is case-sensitive");
    let ilike = search("params.model ILIKE 'r%'", &[], 100, 0).await;
    assert_eq!(ilike.items.len(), 4);
    let tagged = search(
        "tags.team != 'risk' and attributes.user_id = 'bob'",
        &[],
        100,
        0,
    )
    .await;
    assert_eq!(names(&tagged), ["run-9", "run-7", "run-5"]);
    let by_id = search(
        &format!("attributes.run_id IN ('{}', '{}')", ids[1], ids[2]),
        &[],
        100,
        0,
    )
    .await;
    assert_eq!(names(&by_id), ["run-2", "run-1"]);
    let no_tag = search(
        "tags.missing IS NULL and attributes.start_time >= 1008",
        &[],
        100,
        0,
    )
    .await;
    assert_eq!(names(&no_tag), ["run-9", "run-8"]);
    let status = search("attributes.status = 'RUNNING'", &[], 100, 0).await;
    assert_eq!(status.items.len(), 10);

    let ordered = search("", &["metrics.acc DESC"], 3, 0).await;
    assert_eq!(names(&ordered), ["run-8", "run-7", "run-6"]);
    assert_eq!(ordered.next_offset, Some(3));
    let ascending = search("", &["metrics.acc ASC"], 100, 0).await;
    assert_eq!(
        ascending.items.last().unwrap().info.run_name,
        "run-9",
        "runs without the metric sort last"
    );
    let last_page = search("", &["metrics.acc DESC"], 3, 9).await;
    assert_eq!(names(&last_page), ["run-9"]);
    assert_eq!(last_page.next_offset, None);
    let by_param = search("", &["params.model ASC", "attributes.run_name ASC"], 2, 0).await;
    assert_eq!(names(&by_param), ["run-0", "run-1"]);
}

pub async fn lifecycle(store: &dyn TrackingStore) {
    let scope = scope("lifecycle");
    let run = store.create_run(&scope, &NewRun::default()).await.unwrap();
    let id = run.info.run_id;
    let scope = &scope;
    store
        .set_run_stage(scope, &id, LifecycleStage::Deleted)
        .await
        .unwrap();
    let logging = store
        .log_batch(scope, &id, &[metric("a", 1.0, 1, 0)], &[], &[])
        .await;
    assert!(matches!(logging, Err(TrackingError::InvalidState(_))));
    let search = |view| async move {
        let query = RunQuery {
            experiment_ids: vec![0],
            view,
            max_results: 10,
            ..RunQuery::default()
        };
        store.search_runs(scope, &query).await.unwrap().items.len()
    };
    assert_eq!(search(ViewType::ActiveOnly).await, 0);
    assert_eq!(search(ViewType::DeletedOnly).await, 1);
    assert_eq!(search(ViewType::All).await, 1);
    store
        .set_run_stage(scope, &id, LifecycleStage::Active)
        .await
        .unwrap();
    assert_eq!(search(ViewType::ActiveOnly).await, 1);

    store
        .set_experiment_stage(scope, 0, LifecycleStage::Deleted)
        .await
        .unwrap();
    assert_eq!(
        search(ViewType::DeletedOnly).await,
        1,
        "runs follow their experiment"
    );
    let create = store.create_run(scope, &NewRun::default()).await;
    assert!(matches!(create, Err(TrackingError::InvalidState(_))));
}

pub async fn logged_models_and_artifacts(store: &dyn TrackingStore) {
    let scope = scope("artifacts");
    let run = store.create_run(&scope, &NewRun::default()).await.unwrap();
    let model = store
        .create_logged_model(
            &scope,
            &NewLoggedModel {
                experiment_id: 0,
                name: "model".into(),
                model_type: String::new(),
                source_run_id: run.info.run_id.clone(),
                tags: vec![tag("flavor", "sklearn")],
                params: vec![param("alpha", "1")],
            },
        )
        .await
        .unwrap();
    assert!(model.model_id.starts_with("m-"));
    assert_eq!(model.status, LoggedModelStatus::Pending);
    assert_eq!(
        model.artifact_uri,
        format!("mlflow-artifacts:/0/models/{}/artifacts", model.model_id)
    );
    let ready = store
        .set_logged_model_status(&scope, &model.model_id, LoggedModelStatus::Ready)
        .await
        .unwrap();
    assert_eq!(ready.status, LoggedModelStatus::Ready);
    assert_eq!(ready.params, vec![param("alpha", "1")]);
    store
        .set_logged_model_tags(&scope, &model.model_id, &[tag("v", "1")])
        .await
        .unwrap();
    let found = store
        .search_logged_models(&scope, &[0], Some("model"), 10, 0)
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);
    assert_eq!(found.items[0].tags.len(), 2);
    store
        .log_outputs(
            &scope,
            &run.info.run_id,
            &[ModelOutput {
                model_id: model.model_id.clone(),
                step: 0,
            }],
        )
        .await
        .unwrap();
    let run = store.get_run(&scope, &run.info.run_id).await.unwrap();
    assert_eq!(run.outputs[0].model_id, model.model_id);

    for (path, digest) in [
        ("0/r/artifacts/a.txt", "a"),
        ("0/r/artifacts/dir/b.txt", "b"),
        ("0/r/artifacts-old/c.txt", "c"),
        ("0/r/artifacts0", "d"),
    ] {
        store
            .put_artifact(
                &scope,
                &ArtifactEntry {
                    path: path.into(),
                    digest: digest.repeat(64),
                    size: 1,
                },
            )
            .await
            .unwrap();
    }
    let listed: Vec<String> = store
        .list_artifacts(&scope, "0/r/artifacts")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(listed, ["0/r/artifacts/a.txt", "0/r/artifacts/dir/b.txt"]);
    let entry = store
        .get_artifact(&scope, "0/r/artifacts/a.txt")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.digest, "a".repeat(64));
    assert_eq!(
        store
            .delete_artifacts(&scope, "0/r/artifacts")
            .await
            .unwrap(),
        2
    );
    assert!(
        store
            .get_artifact(&scope, "0/r/artifacts/a.txt")
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn registry(store: &dyn TrackingStore) {
    let scope = scope("registry");
    store
        .create_registered_model(&scope, "fraud", "detects fraud", "alice", &[tag("t", "1")])
        .await
        .unwrap();
    let duplicate = store
        .create_registered_model(&scope, "fraud", "", "alice", &[])
        .await;
    assert!(matches!(
        duplicate,
        Err(TrackingError::AlreadyExists { .. })
    ));

    for expected in 1..=3 {
        let version = store.next_version(&scope, "fraud").await.unwrap();
        assert_eq!(version, expected);
        let created = store
            .create_model_version(
                &scope,
                version,
                &NewModelVersion {
                    name: "fraud".into(),
                    source: format!("models:/m-{version}"),
                    run_id: format!("run{version}"),
                    model_id: format!("m-{version}"),
                    description: String::new(),
                    user_id: "alice".into(),
                    tags: vec![tag("n", &version.to_string())],
                    artifact_prefix: format!("0/models/m-{version}/artifacts"),
                    details: VersionDetails::default(),
                    manifest: dummy_manifest(),
                },
            )
            .await
            .unwrap();
        assert_eq!(created.current_stage, Stage::None);
        assert_eq!(created.status, "READY");
    }
    let taken = store
        .create_model_version(
            &scope,
            2,
            &NewModelVersion {
                name: "fraud".into(),
                source: String::new(),
                run_id: String::new(),
                model_id: String::new(),
                description: String::new(),
                user_id: String::new(),
                tags: vec![],
                artifact_prefix: String::new(),
                details: VersionDetails::default(),
                manifest: dummy_manifest(),
            },
        )
        .await;
    assert!(matches!(taken, Err(TrackingError::AlreadyExists { .. })));

    store
        .set_alias(&scope, "fraud", "champion", 1)
        .await
        .unwrap();
    store
        .set_alias(&scope, "fraud", "champion", 2)
        .await
        .unwrap();
    store
        .set_alias(&scope, "fraud", "challenger", 3)
        .await
        .unwrap();
    let champion = store
        .get_version_by_alias(&scope, "fraud", "champion")
        .await
        .unwrap();
    assert_eq!(champion.version, 2);
    assert_eq!(champion.aliases, vec!["champion".to_owned()]);
    let missing = store.set_alias(&scope, "fraud", "x", 9).await;
    assert!(matches!(missing, Err(TrackingError::NotFound { .. })));

    store
        .transition_stage(&scope, "fraud", 1, Stage::Production, false, 5)
        .await
        .unwrap();
    store
        .transition_stage(&scope, "fraud", 2, Stage::Production, true, 6)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_model_version(&scope, "fraud", 1)
            .await
            .unwrap()
            .current_stage,
        Stage::Archived
    );
    let model = store.get_registered_model(&scope, "fraud").await.unwrap();
    let mut latest: Vec<(Stage, i64)> = model
        .latest_versions
        .iter()
        .map(|v| (v.current_stage, v.version))
        .collect();
    latest.sort_by_key(|(_, v)| *v);
    assert_eq!(
        latest,
        vec![
            (Stage::Archived, 1),
            (Stage::Production, 2),
            (Stage::None, 3)
        ]
    );
    assert_eq!(
        model.aliases,
        vec![("challenger".to_owned(), 3), ("champion".to_owned(), 2)]
    );
    assert_eq!(model.tags, vec![tag("t", "1")]);

    let filter = parse_registry_filter("name = 'fraud' and version_number >= 2", true).unwrap();
    let order = [parse_registry_order("version_number ASC").unwrap()];
    let versions = store
        .search_model_versions(&scope, &filter, &order, 10, 0)
        .await
        .unwrap();
    let numbers: Vec<i64> = versions.items.iter().map(|v| v.version).collect();
    assert_eq!(numbers, [2, 3]);
    let by_tag = parse_registry_filter("tags.n = '3'", true).unwrap();
    let versions = store
        .search_model_versions(&scope, &by_tag, &[], 10, 0)
        .await
        .unwrap();
    assert_eq!(versions.items.len(), 1);
    let models = store
        .search_registered_models(
            &scope,
            &parse_registry_filter("name LIKE 'fr%' and tags.t = '1'", false).unwrap(),
            &[],
            10,
            0,
        )
        .await
        .unwrap();
    assert_eq!(models.items.len(), 1);

    store
        .delete_alias(&scope, "fraud", "challenger")
        .await
        .unwrap();
    let gone = store
        .get_version_by_alias(&scope, "fraud", "challenger")
        .await;
    assert!(matches!(gone, Err(TrackingError::NotFound { .. })));
    store
        .delete_model_version(&scope, "fraud", 3)
        .await
        .unwrap();
    assert_eq!(store.next_version(&scope, "fraud").await.unwrap(), 3);
    store
        .delete_registered_model(&scope, "fraud")
        .await
        .unwrap();
    let deleted = store.get_registered_model(&scope, "fraud").await;
    assert!(matches!(deleted, Err(TrackingError::NotFound { .. })));
}

pub async fn projects_are_isolated(store: &dyn TrackingStore) {
    let a = scope("isolation-a");
    let b = scope("isolation-b");
    let run = store.create_run(&a, &NewRun::default()).await.unwrap();
    let from_b = store.get_run(&b, &run.info.run_id).await;
    assert!(matches!(from_b, Err(TrackingError::NotFound { .. })));
    let log = store
        .log_batch(&b, &run.info.run_id, &[metric("a", 1.0, 1, 0)], &[], &[])
        .await;
    assert!(matches!(log, Err(TrackingError::NotFound { .. })));
    store
        .create_registered_model(&a, "shared-name", "", "", &[])
        .await
        .unwrap();
    store
        .create_registered_model(&b, "shared-name", "", "", &[])
        .await
        .unwrap();
    let other_tenant = Scope {
        tenant: TenantId::from_stored("beta"),
        project: a.project.clone(),
    };
    let hidden = store
        .get_registered_model(&other_tenant, "shared-name")
        .await;
    assert!(matches!(hidden, Err(TrackingError::NotFound { .. })));
}
