//! The quickstart's ML loop as a client of the in-process server: ingestion, feature store,
//! training job, deployment, replay with monitoring and retraining, and the summary.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use ghaf_client::Client;
use serde_json::{Value, json};

use super::features::{self, FEATURE_SERVICE};
use super::flights::{self, LAST_TRAINING_MONTH, month_name};
use super::http::Http;
use super::replay::{self, MAX_REQUEST_ROWS, Replayed};
use super::serving::{self, CanarySettings, ENDPOINT};
use super::summary;
use super::training::{self, CHAMPION, REGISTERED_MODEL};
use super::{PROJECT, StageTimes, ingest, step, thousands};

/// Entity dataset of the training period's flights.
const TRAINING_ENTITIES: &str = "flight-entities";

/// Everything the data steps produced, for the summary file.
pub struct Outcome {
    pub summary: Value,
}

/// Runs steps 9 to 14 as the admin and returns the machine-readable summary.
pub async fn run_data_steps(
    admin: &Client,
    admin_token: &str,
    source_dir: &Path,
    sample: Option<u64>,
    data_dir: &Path,
    times: &mut StageTimes,
) -> anyhow::Result<Outcome> {
    let url = admin.base_url().as_str().to_owned();
    let http = Http::new(&url, admin_token, PROJECT)?;
    // Sampled and derived files are written next to the store and removed with this directory.
    let scratch = tempfile::Builder::new()
        .prefix("quickstart-scratch-")
        .tempdir_in(data_dir)
        .context("cannot create a directory for sampled files")?;

    // Step 9: ingestion.
    let started = Instant::now();
    let tables = ingest::ingest_tables(admin, PROJECT, source_dir, sample, scratch.path())
        .await
        .context("step 9, ingest the nycflights13 tables, failed")?;
    step(
        9,
        "ingested the five nycflights13 tables through the API (null tokens NA and the empty field):",
    );
    ingest::print_tables(&tables);
    times.record("ingestion (step 9)", started);

    // Step 10: feature store.
    let started = Instant::now();
    let flights_path = source_dir.join("flights.csv.gz");
    let all_flights = {
        let path = flights_path.clone();
        tokio::task::spawn_blocking(move || flights::read_flights(&path, sample))
            .await
            .context("step 10, reading the flights, panicked")?
            .context("step 10, read the flights file, failed")?
    };
    let applied = features::apply(admin, PROJECT)
        .await
        .context("step 10, apply the feature definitions, failed")?;
    let training_period = all_flights
        .iter()
        .filter(|flight| flight.month <= LAST_TRAINING_MONTH);
    let entities = features::upload_entities(
        admin,
        PROJECT,
        TRAINING_ENTITIES,
        "Labelled flights of January to June with their feature lookup time (scheduled hour \
         minus one hour), derived from flights.csv.gz by ghaf quickstart",
        training_period,
        scratch.path(),
    )
    .await
    .context("step 10, upload the entity table, failed")?;
    step(
        10,
        &format!(
            "feature store: {} (views origin_weather, plane_attributes, origin_delays, carrier_delays; \
             service {FEATURE_SERVICE}); entity table {}@{} ({}) with {} labelled January-June flights",
            if applied.changes == 0 {
                "definitions unchanged".to_owned()
            } else {
                format!("applied {} change(s)", applied.changes)
            },
            entities.dataset,
            entities.version,
            if entities.created { "new" } else { "reused" },
            thousands(entities.rows as u64)
        ),
    );
    for line in applied
        .plan
        .lines()
        .filter(|line| line.starts_with('+') || line.starts_with('~'))
    {
        println!("       {line}");
    }
    times.record("feature store (step 10)", started);

    // Step 11: training through the job system.
    let started = Instant::now();
    let (initial, job_id) = match training::champion_version(admin, PROJECT).await? {
        Some(version) => (version, None),
        None => {
            let spec = training::job_spec(
                "quickstart-train",
                training::feature_service_input(&entities.dataset, entities.version),
            );
            let job = training::submit_and_wait(admin, PROJECT, &spec)
                .await
                .context("step 11, run the training job, failed")?;
            let done = training::finished(&job).context("step 11 failed")?;
            (done.version, Some(done))
        }
    };
    let training_set = newest_version(admin, &format!("{FEATURE_SERVICE}-training-set"))
        .await
        .context("step 11, find the training set the job built, failed")?;
    let verified = admin
        .verify_model_version(PROJECT, REGISTERED_MODEL, initial)
        .await
        .with_context(|| format!("step 11, verify {REGISTERED_MODEL} version {initial}, failed"))?
        .value;
    match &job_id {
        Some(done) => step(
            11,
            &format!(
                "training job {} built the point-in-time training set {FEATURE_SERVICE}-training-set@{training_set} \
                 and trained gradient-boosted trees on {} rows (holdout {} rows, AUC {:.4}); \
                 {REGISTERED_MODEL} version {initial} is registered and holds {CHAMPION} ({})",
                done.job_id,
                thousands(done.train_rows),
                thousands(done.validation_rows),
                done.holdout_auc,
                done.gate_reason
            ),
        ),
        None => step(
            11,
            &format!(
                "reused {REGISTERED_MODEL} version {initial}, which holds {CHAMPION} from an earlier quickstart"
            ),
        ),
    }
    println!(
        "       signed manifest verified: {} file(s), key {}",
        verified["files"],
        verified["signing_key_id"].as_str().unwrap_or("?")
    );
    times.record("training job (step 11)", started);

    // Step 12: deployment and monitor.
    let started = Instant::now();
    let replay_rows = all_flights
        .iter()
        .filter(|flight| flight.month > LAST_TRAINING_MONTH)
        .count() as u64;
    let per_day = (replay_rows / 184).max(1);
    let canary = CanarySettings {
        min_requests: (per_day / MAX_REQUEST_ROWS as u64).clamp(3, 50),
        min_labels: (per_day / 4).clamp(20, 200),
    };
    let deployed = serving::deploy(admin, &http, PROJECT, initial, &canary)
        .await
        .context("step 12, deploy the endpoint, failed")?;
    serving::wait_ready(admin, PROJECT)
        .await
        .context("step 12 failed")?;
    let static_keys = features::materialize_static(admin, PROJECT)
        .await
        .context("step 12, materialise plane_attributes, failed")?;
    let window_rows = (per_day * 7).max(200);
    let monitor_created = super::monitoring::ensure_monitor(
        admin,
        PROJECT,
        (&format!("{FEATURE_SERVICE}-training-set"), training_set),
        window_rows,
    )
    .await
    .context("step 12, create the monitor, failed")?;
    step(
        12,
        &format!(
            "{} endpoint {ENDPOINT} serving {REGISTERED_MODEL} version {} with online features of {FEATURE_SERVICE} \
             ({} planes materialised); {}; monitor {} {} (reference {FEATURE_SERVICE}-training-set@{training_set}, \
             window of the newest {} predictions, rule: drift share at least 0.3 starts a retraining job)",
            if deployed.created {
                "deployed"
            } else {
                "reused"
            },
            deployed.version,
            thousands(static_keys),
            match (&deployed.policy_error, deployed.follows_alias) {
                (None, _) => format!(
                    "it follows {CHAMPION} with a canary policy (steps 10% and 50%, 2 s apart, \
                     at least {} requests and {} labels per check)",
                    canary.min_requests, canary.min_labels
                ),
                (Some(error), _) => format!("no canary policy: {error}"),
            },
            super::monitoring::MONITOR,
            if monitor_created { "created" } else { "reused" },
            thousands(window_rows)
        ),
    );
    times.record("deployment (step 12)", started);

    // Step 13: replay with monitoring, retraining and the canary.
    let started = Instant::now();
    let earlier_reports = admin
        .monitor_reports(PROJECT, super::monitoring::MONITOR, Some(1))
        .await
        .context("step 13, read the monitor's reports, failed")?
        .value;
    let replayed_before = earlier_reports["evaluations"]
        .as_array()
        .is_some_and(|reports| !reports.is_empty());
    let replayed = if replayed_before {
        step(
            13,
            "reused the replay of an earlier quickstart (the monitor has reports); \
             its alerts, jobs and rollout decisions are listed below",
        );
        Replayed::default()
    } else {
        step(
            13,
            &format!(
                "replaying {} July-December flights hour by hour (online features materialised up to \
                 one hour before each scheduled hour, requests of at most {MAX_REQUEST_ROWS} rows, \
                 labels after each day, a monitor evaluation after each week):",
                thousands(replay_rows)
            ),
        );
        replay::replay(admin, &http, PROJECT, &all_flights, scratch.path())
            .await
            .context("step 13, replay, failed")?
    };
    times.record("replay and monitoring (step 13)", started);
    times
        .0
        .push(("  materialisation", replayed.materialize_time));
    times.0.push(("  inference", replayed.infer_time));
    times
        .0
        .push(("  waiting for label posts", replayed.label_time));
    times
        .0
        .push(("  monitoring and recent sets", replayed.monitor_time));

    // Step 14: summary.
    let started = Instant::now();
    let history = serving::history(&http, PROJECT)
        .await
        .context("step 14, read the rollout history, failed")?;
    let alerts = super::monitoring::alerts(admin, PROJECT)
        .await
        .context("step 14, read the alerts, failed")?;
    let endpoint = admin
        .get_endpoint(PROJECT, ENDPOINT)
        .await
        .context("step 14, read the endpoint, failed")?
        .value;
    let final_rollout = endpoint.get("rollout").cloned().unwrap_or(Value::Null);
    let quality = summary::quality(&all_flights, &replayed);
    let lineage = lineage_chain(admin, &replayed, initial).await;
    step(14, "summary:");
    print_summary(
        &tables,
        &quality,
        &replayed,
        &alerts,
        &Canary {
            history: history.as_deref(),
            last: &final_rollout,
            deployed: &deployed,
        },
        &lineage,
    );
    times.record("summary (step 14)", started);

    let summary = json!({
        "tables": tables.iter().map(|t| json!({
            "name": t.name,
            "version": t.version,
            "rows_accepted": t.rows_accepted,
            "rows_quarantined": t.rows_quarantined,
            "quarantine_reasons": t.failed_checks.iter()
                .map(|(check, column, rows)| json!({"check": check, "column": column, "rows": rows}))
                .collect::<Vec<_>>(),
            "null_counts": t.null_counts.iter()
                .map(|(column, nulls)| json!({"column": column, "nulls": nulls}))
                .collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "entity_table": {"dataset": entities.dataset, "version": entities.version, "rows": entities.rows},
        "training_set": {"dataset": format!("{FEATURE_SERVICE}-training-set"), "version": training_set},
        "model": {
            "name": REGISTERED_MODEL,
            "initial_version": initial,
            "signing_key_id": verified["signing_key_id"],
            "manifest_files": verified["files"],
        },
        "endpoint": {
            "name": ENDPOINT,
            "follows_alias": deployed.follows_alias,
            "canary_policy": deployed.canary_policy,
            "policy_error": deployed.policy_error,
        },
        "replay": {
            "reused": replayed_before,
            "days": replayed.days,
            "requests": replayed.requests,
            "rows": replayed.rows,
            "labels": replayed.labels,
            "served_versions": quality.iter().map(|q| q.version).collect::<std::collections::BTreeSet<_>>(),
        },
        "auc": summary::quality_json(&quality),
        "weeks": replayed.weeks.iter().map(|w| json!({
            "month": w.month, "day": w.day, "rows": w.evaluated.rows,
            "drift_share": w.evaluated.drift_share,
            "prediction_drifted": w.evaluated.prediction_drifted,
            "top": w.evaluated.top.iter().take(5).map(|(name, method, effect, drifted)| json!({
                "feature": name, "method": method, "effect": effect, "drifted": drifted,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "alerts": alerts,
        "retraining": replayed.retraining.as_ref().map(|r| json!({
            "job_id": r.job_id,
            "fired_on": {"month": r.fired_on.0, "day": r.fired_on.1},
            "version": r.outcome.as_ref().and_then(|o| o.as_ref().ok()).map(|d| d.version),
            "promoted": r.outcome.as_ref().and_then(|o| o.as_ref().ok()).map(|d| d.promoted),
            "gate_reason": r.outcome.as_ref().and_then(|o| o.as_ref().ok()).map(|d| d.gate_reason.clone()),
            "error": r.outcome.as_ref().and_then(|o| o.as_ref().err()).cloned(),
        })),
        "rollouts": replayed.rollouts.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
        "canary_history": history,
        "final_rollout": final_rollout,
        "lineage": lineage,
    });
    Ok(Outcome { summary })
}

/// Returns the number of the newest version of a dataset.
async fn newest_version(client: &Client, dataset: &str) -> anyhow::Result<i64> {
    let versions = client
        .list_dataset_versions(PROJECT, dataset)
        .await
        .with_context(|| format!("cannot list the versions of {dataset}"))?
        .value;
    versions["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|version| version["version"].as_i64())
        .max()
        .with_context(|| format!("dataset {dataset} has no version"))
}

/// Follows the newest prediction back to the source files: the model version that made it,
/// the version's lineage, the training set's source and the files of the datasets it read.
async fn lineage_chain(client: &Client, replayed: &Replayed, initial: i64) -> Value {
    let version = replayed.scored.last().map_or(initial, |s| s.version);
    let mut chain = json!({"model_version": version});
    let registered = match client.list_model_versions(PROJECT, REGISTERED_MODEL).await {
        Ok(response) => response.value,
        Err(error) => {
            chain["error"] = json!(error.to_string());
            return chain;
        }
    };
    let Some(entry) = registered["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["version"].as_i64() == Some(version))
    else {
        return chain;
    };
    chain["run_id"] = entry["run_id"].clone();
    chain["job_id"] = entry["tags"]["ghaf.job_id"].clone();
    let training_set = entry["lineage"]["training_set"]
        .as_str()
        .unwrap_or_default();
    chain["training_set"] = json!(training_set);

    // The job trained either on a training set it built from the feature service, or on a
    // dataset version such as the recent training set.
    let dataset_version = training_set
        .strip_prefix("dataset:")
        .and_then(|reference| {
            if reference.contains('(') {
                None
            } else {
                reference.rsplit_once('@')
            }
        })
        .and_then(|(name, version)| Some((name.to_owned(), version.parse::<i64>().ok()?)));
    let (set_name, set_version) = match dataset_version {
        Some(found) => found,
        None => {
            let name = format!("{FEATURE_SERVICE}-training-set");
            match newest_version(client, &name).await {
                Ok(version) => (name, version),
                Err(_) => return chain,
            }
        }
    };
    let mut sources = Vec::new();
    let mut pending = vec![(set_name, set_version)];
    while let Some((name, version)) = pending.pop() {
        let Ok(stored) = client.get_dataset_version(PROJECT, &name, version).await else {
            continue;
        };
        let source = stored.value["source"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for (dataset, version) in training_set_inputs(&source) {
            let seen = pending.iter().any(|(n, _)| *n == dataset)
                || sources
                    .iter()
                    .any(|s: &Value| s["dataset"] == dataset.as_str());
            if !seen {
                pending.push((dataset, version));
            }
        }
        sources.push(json!({"dataset": name, "version": version, "source": source}));
    }
    chain["datasets"] = Value::Array(sources);
    chain
}

/// The canary's part of the summary: the rollout history (none when the server has no such
/// route), the endpoint's last rollout and the deployment outcome.
struct Canary<'a> {
    history: Option<&'a [Value]>,
    last: &'a Value,
    deployed: &'a serving::Deployed,
}

fn print_summary(
    tables: &[ingest::IngestedTable],
    quality: &[summary::MonthQuality],
    replayed: &Replayed,
    alerts: &[Value],
    canary: &Canary<'_>,
    lineage: &Value,
) {
    let (history, final_rollout, deployed) = (canary.history, canary.last, canary.deployed);
    println!("     rows ingested and quarantined:");
    for table in tables {
        let reasons: Vec<String> = table
            .failed_checks
            .iter()
            .take(3)
            .map(|(check, column, rows)| format!("{check} on {column}: {}", thousands(*rows)))
            .collect();
        println!(
            "       {:<9} {} accepted, {} quarantined{}",
            table.name,
            thousands(table.rows_accepted),
            thousands(table.rows_quarantined),
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join(", "))
            }
        );
    }

    println!(
        "     AUC per model version and month (endpoint scores joined with the posted labels):"
    );
    if quality.is_empty() {
        println!("       no replayed predictions in this run");
    }
    summary::print_quality(quality);

    println!("     drift (default mode, newest predictions against the training set):");
    let fired = replayed.retraining.as_ref().map(|r| r.fired_on);
    let shown_week = replayed
        .weeks
        .iter()
        .find(|w| Some((w.month, w.day)) == fired)
        .or_else(|| replayed.weeks.last());
    match shown_week {
        Some(week) => {
            let top: Vec<String> = week
                .evaluated
                .top
                .iter()
                .take(5)
                .map(|(name, method, effect, drifted)| {
                    format!(
                        "{name} ({method}, effect {effect:.3}{})",
                        if *drifted { ", drifted" } else { "" }
                    )
                })
                .collect();
            println!(
                "       after {} {}: share {:.2}; {}",
                month_name(week.month),
                week.day,
                week.evaluated.drift_share,
                top.join(", ")
            );
        }
        None => println!("       no evaluation in this run"),
    }
    for alert in alerts {
        let action = match (alert["job_id"].as_str(), alert["action_error"].as_str()) {
            (Some(job), _) => format!("started job {job}"),
            (None, Some(error)) => format!("its retraining action failed: {error}"),
            (None, None) => "no job".to_owned(),
        };
        println!(
            "       alert {} ({}, {}) fired at {}; {action}",
            alert["id"].as_str().unwrap_or("?"),
            alert["rule"].as_str().unwrap_or("?"),
            alert["state"].as_str().unwrap_or("?"),
            alert["fired_at"].as_str().unwrap_or("?"),
        );
    }

    println!("     retraining and canary:");
    match &replayed.retraining {
        None => println!("       no alert started a retraining job in this run"),
        Some(retraining) => match &retraining.outcome {
            None => println!(
                "       job {} had not finished when the replay ended",
                retraining.job_id
            ),
            Some(Err(error)) => println!("       job {} failed: {error}", retraining.job_id),
            Some(Ok(done)) if !done.promoted => println!(
                "       version {} was rejected by the gate ({}); canary: no candidate",
                done.version, done.gate_reason
            ),
            Some(Ok(done)) => println!(
                "       version {} passed the gate ({}) and now holds {CHAMPION}",
                done.version, done.gate_reason
            ),
        },
    }
    match history {
        None => println!(
            "       canary decisions: not available, {}",
            deployed
                .policy_error
                .as_deref()
                .unwrap_or("the server has no rollout history route")
        ),
        Some([]) => println!("       canary decisions: none recorded"),
        Some(entries) => {
            for entry in entries {
                println!("       {}", summary::describe_decision(entry));
            }
        }
    }

    if let Some(status) = final_rollout["status"].as_str() {
        println!(
            "       rollout of version {} at the end: {status} ({})",
            final_rollout["candidate_version"],
            final_rollout["reason"]
                .as_str()
                .unwrap_or("no reason recorded")
        );
    }

    println!("     lineage of the newest prediction:");
    println!(
        "       {REGISTERED_MODEL} version {} (job {}, run {}) trained on {}",
        lineage["model_version"],
        lineage["job_id"].as_str().unwrap_or("?"),
        lineage["run_id"].as_str().unwrap_or("?"),
        lineage["training_set"].as_str().unwrap_or("?")
    );
    for dataset in lineage["datasets"].as_array().into_iter().flatten() {
        println!(
            "       {}@{} <- {}",
            dataset["dataset"].as_str().unwrap_or("?"),
            dataset["version"],
            dataset["source"].as_str().unwrap_or("?")
        );
    }
}

/// Returns the dataset versions a training set read, from its version's source
/// `training-set:entities=E@vN;views=V@vN(D@vM),...`: the entity table and the dataset of
/// each view. Any other source yields none.
fn training_set_inputs(source: &str) -> Vec<(String, i64)> {
    let Some(rest) = source.strip_prefix("training-set:") else {
        return Vec::new();
    };
    let parse = |reference: &str| {
        let (name, version) = reference.trim().rsplit_once('@')?;
        let version = version.strip_prefix('v').unwrap_or(version).parse().ok()?;
        Some((name.to_owned(), version))
    };
    let mut inputs = Vec::new();
    for part in rest.split(';') {
        if let Some(entities) = part.strip_prefix("entities=") {
            inputs.extend(parse(entities));
        } else if let Some(views) = part.strip_prefix("views=") {
            // Each view is `view@vN(dataset@vM)`; the dataset is inside the brackets.
            for view in views.split(',') {
                let inner = view
                    .split_once('(')
                    .and_then(|(_, inner)| inner.strip_suffix(')'));
                inputs.extend(inner.and_then(parse));
            }
        }
    }
    inputs
}

#[cfg(test)]
mod tests {
    use super::training_set_inputs;

    #[test]
    fn training_set_inputs_of_source() {
        let source = "training-set:entities=recent@v3;views=weather_view@v1(weather@v2),planes_view@v1(planes@v1)";
        assert_eq!(
            training_set_inputs(source),
            vec![
                ("recent".to_owned(), 3),
                ("weather".to_owned(), 2),
                ("planes".to_owned(), 1),
            ]
        );
    }

    #[test]
    fn training_set_inputs_of_upload() {
        assert!(training_set_inputs("upload:flights.csv.gz").is_empty());
    }
}
