//! `ghaf monitor` creates monitors over endpoints and datasets, evaluates them, prints their
//! reports as tables, manages alert rules, lists and acknowledges alerts, and computes
//! ad-hoc drift between two dataset versions.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::context::Context;
use crate::duration::parse_duration_seconds;
use crate::output;

#[derive(Subcommand, Clone, Debug)]
pub enum MonitorCommand {
    /// Create a monitor from options, or from a JSON spec file with --file
    Create {
        /// Monitor name
        name: Option<String>,
        /// JSON monitor spec; replaces every other option
        #[arg(long, conflicts_with_all = ["endpoint", "dataset"])]
        file: Option<PathBuf>,
        /// Watch this endpoint's prediction log (`<endpoint>-predictions`)
        #[arg(long, conflicts_with = "dataset")]
        endpoint: Option<String>,
        /// Watch this dataset
        #[arg(long)]
        dataset: Option<String>,
        /// Timestamp column of the watched dataset, for time windows
        #[arg(long)]
        timestamp_column: Option<String>,
        /// Reference dataset version as DATASET@VERSION, or DATASET for its newest version
        /// [default for endpoints: the served model's training set]
        #[arg(long)]
        reference: Option<String>,
        /// Feature to watch; repeat for several [default: every shared numeric or
        /// categorical column]
        #[arg(long = "feature")]
        features: Vec<String>,
        /// Drift statistics: default or evidently
        #[arg(long, default_value = "default")]
        mode: String,
        /// Time window, such as 1d or 6h
        #[arg(long, conflicts_with_all = ["window_rows", "latest_version"])]
        window: Option<String>,
        /// Row-count window: the newest N rows
        #[arg(long, conflicts_with = "latest_version")]
        window_rows: Option<u64>,
        /// Compare the newest version of the dataset
        #[arg(long)]
        latest_version: bool,
        /// Time between scheduled evaluations, such as 1h
        #[arg(long, default_value = "1h")]
        interval: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// List the project's monitors
    List {
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Show a monitor with its reference and latest evaluation outcome
    Get {
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Delete a monitor with its reports, rules and alerts
    Delete {
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Evaluate a monitor now and print the report
    Evaluate {
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Print the newest stored report and the history of drift shares
    Report {
        name: String,
        /// Number of stored reports in the history, 1 to 1000
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// List a monitor's alerts, newest first
    Alerts {
        name: String,
        /// Only alerts in this state: firing or resolved
        #[arg(long)]
        state: Option<String>,
        /// Maximum number of alerts, 1 to 1000
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Acknowledge an alert
    Ack {
        name: String,
        alert: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// List, create and delete alert rules
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Compute drift between two dataset versions without a monitor
    Drift {
        /// Reference as DATASET@VERSION, or DATASET for its newest version
        #[arg(long)]
        reference: String,
        /// Current data as DATASET@VERSION, or DATASET for its newest version
        #[arg(long)]
        current: String,
        #[arg(long = "feature")]
        features: Vec<String>,
        /// default or evidently
        #[arg(long, default_value = "default")]
        mode: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
}

#[derive(Subcommand, Clone, Debug)]
pub enum RulesCommand {
    /// List a monitor's alert rules
    List {
        monitor: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Create an alert rule from a JSON file; prints the webhook signing secret once
    Create {
        monitor: String,
        file: PathBuf,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Delete an alert rule with its alerts
    Delete {
        monitor: String,
        rule: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
}

fn read_json(file: &PathBuf, what: &str) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the {what} {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", file.display()))
}

/// Parses `DATASET@VERSION` or `DATASET`.
fn dataset_ref(text: &str) -> anyhow::Result<Value> {
    match text.rsplit_once('@') {
        Some((dataset, version)) => {
            let version: i64 = version.parse().with_context(|| {
                format!("invalid dataset version in {text:?}; use DATASET@VERSION such as train@3")
            })?;
            Ok(json!({"dataset": dataset, "version": version}))
        }
        None => Ok(json!({"dataset": text})),
    }
}

#[allow(clippy::too_many_arguments)]
fn monitor_spec(
    name: Option<&str>,
    endpoint: Option<&str>,
    dataset: Option<&str>,
    timestamp_column: Option<&str>,
    reference: Option<&str>,
    features: &[String],
    mode: &str,
    window: Option<&str>,
    window_rows: Option<u64>,
    latest_version: bool,
    interval: &str,
) -> anyhow::Result<Value> {
    let name = name.context("give the monitor a name, or pass --file SPEC.json")?;
    let target = match (endpoint, dataset) {
        (Some(endpoint), _) => json!({"type": "endpoint", "name": endpoint}),
        (None, Some(dataset)) => {
            let mut target = json!({"type": "dataset", "name": dataset});
            if let Some(column) = timestamp_column {
                target["timestamp_column"] = json!(column);
            }
            target
        }
        (None, None) => anyhow::bail!("name what to watch with --endpoint or --dataset"),
    };
    let window = match (window, window_rows, latest_version) {
        (Some(window), _, _) => json!({
            "type": "duration",
            "seconds": parse_duration_seconds(window).map_err(anyhow::Error::msg)?,
        }),
        (None, Some(count), _) => json!({"type": "rows", "count": count}),
        (None, None, true) => json!({"type": "latest_version"}),
        (None, None, false) => {
            anyhow::bail!(
                "choose a window with --window DURATION, --window-rows N or --latest-version"
            )
        }
    };
    let mut spec = json!({
        "name": name,
        "target": target,
        "features": features,
        "mode": mode,
        "window": window,
        "interval_seconds": parse_duration_seconds(interval).map_err(anyhow::Error::msg)?,
    });
    if let Some(reference) = reference {
        spec["reference"] = dataset_ref(reference)?;
    }
    Ok(spec)
}

pub async fn run(context: &Context, command: &MonitorCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        MonitorCommand::Create {
            name,
            file,
            endpoint,
            dataset,
            timestamp_column,
            reference,
            features,
            mode,
            window,
            window_rows,
            latest_version,
            interval,
            project,
        } => {
            let spec = match file {
                Some(file) => read_json(file, "monitor spec")?,
                None => monitor_spec(
                    name.as_deref(),
                    endpoint.as_deref(),
                    dataset.as_deref(),
                    timestamp_column.as_deref(),
                    reference.as_deref(),
                    features,
                    mode,
                    window.as_deref(),
                    *window_rows,
                    *latest_version,
                    interval,
                )?,
            };
            let response = client.create_monitor(project, &spec).await?;
            output::emit(context.output, &response, |monitor| {
                println!(
                    "created monitor {} against {}@{} watching {}",
                    text(monitor, "name"),
                    text(&monitor["reference"], "dataset"),
                    monitor["reference"]["version"],
                    join(&monitor["reference"]["features"]),
                );
            });
        }
        MonitorCommand::List { project } => {
            let response = client.list_monitors(project).await?;
            output::emit(context.output, &response, |list| {
                let mut table = output::table(&[
                    "name",
                    "target",
                    "reference",
                    "mode",
                    "last evaluated",
                    "last error",
                ]);
                for monitor in list["monitors"].as_array().into_iter().flatten() {
                    table.add_row(vec![
                        text(monitor, "name"),
                        format!(
                            "{} {}",
                            text(&monitor["spec"]["target"], "type"),
                            text(&monitor["spec"]["target"], "name")
                        ),
                        format!(
                            "{}@{}",
                            text(&monitor["reference"], "dataset"),
                            monitor["reference"]["version"]
                        ),
                        text(&monitor["spec"], "mode"),
                        output::or_dash(monitor["last_evaluated_at"].as_str()).to_owned(),
                        output::or_dash(monitor["last_error"].as_str()).to_owned(),
                    ]);
                }
                output::print_table(&table, "no monitors");
            });
        }
        MonitorCommand::Get { name, project } => {
            let response = client.get_monitor(project, name).await?;
            output::emit(context.output, &response, |monitor| {
                output::print_fields(&[
                    ("name", text(monitor, "name")),
                    (
                        "target",
                        format!(
                            "{} {}",
                            text(&monitor["spec"]["target"], "type"),
                            text(&monitor["spec"]["target"], "name")
                        ),
                    ),
                    (
                        "reference",
                        format!(
                            "{}@{} ({} rows)",
                            text(&monitor["reference"], "dataset"),
                            monitor["reference"]["version"],
                            monitor["reference"]["rows"]
                        ),
                    ),
                    ("features", join(&monitor["reference"]["features"])),
                    ("mode", text(&monitor["spec"], "mode")),
                    ("window", monitor["spec"]["window"].to_string()),
                    (
                        "interval",
                        format!("{} s", monitor["spec"]["interval_seconds"]),
                    ),
                    ("next run", text(monitor, "next_run_at")),
                    (
                        "last evaluated",
                        output::or_dash(monitor["last_evaluated_at"].as_str()).to_owned(),
                    ),
                    (
                        "last error",
                        output::or_dash(monitor["last_error"].as_str()).to_owned(),
                    ),
                ]);
            });
        }
        MonitorCommand::Delete { name, project } => {
            let response = client.delete_monitor(project, name).await?;
            output::emit(context.output, &response, |()| {
                println!("deleted monitor {name}");
            });
        }
        MonitorCommand::Evaluate { name, project } => {
            let response = client.evaluate_monitor(project, name).await?;
            output::emit(context.output, &response, |evaluation| {
                print_report(&evaluation["report"]);
            });
        }
        MonitorCommand::Report {
            name,
            limit,
            project,
        } => {
            let response = client.monitor_reports(project, name, Some(*limit)).await?;
            output::emit(context.output, &response, |reports| {
                let evaluations = reports["evaluations"].as_array();
                let Some(newest) = evaluations.and_then(|list| list.first()) else {
                    println!(
                        "monitor {name} has no reports yet; run: ghaf monitor evaluate {name}"
                    );
                    return;
                };
                print_report(&newest["report"]);
                println!();
                println!("history:");
                let mut table =
                    output::table(&["evaluated", "rows", "drift share", "drifted features"]);
                for evaluation in evaluations.into_iter().flatten() {
                    let drift = &evaluation["report"]["drift"];
                    let drifted: Vec<String> = drift["features"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|feature| feature["drifted"] == true)
                        .map(|feature| text(feature, "feature"))
                        .collect();
                    table.add_row(vec![
                        text(evaluation, "evaluated_at"),
                        evaluation["rows"].to_string(),
                        number(&drift["share"]),
                        drifted.join(", "),
                    ]);
                }
                output::print_table(&table, "no reports");
            });
        }
        MonitorCommand::Alerts {
            name,
            state,
            limit,
            project,
        } => {
            let response = client
                .list_alerts(project, name, state.as_deref(), Some(*limit))
                .await?;
            output::emit(context.output, &response, |list| {
                let mut table = output::table(&[
                    "id", "rule", "subject", "state", "fired", "repeats", "acked", "job",
                ]);
                for alert in list["alerts"].as_array().into_iter().flatten() {
                    table.add_row(vec![
                        text(alert, "id"),
                        text(alert, "rule"),
                        text(alert, "subject"),
                        text(alert, "state"),
                        text(alert, "fired_at"),
                        alert["repeats"].to_string(),
                        output::yes_no(alert["acknowledged_at"].is_string()).to_owned(),
                        output::or_dash(alert["job_id"].as_str()).to_owned(),
                    ]);
                }
                output::print_table(&table, "no alerts");
            });
        }
        MonitorCommand::Ack {
            name,
            alert,
            project,
        } => {
            let response = client.acknowledge_alert(project, name, alert).await?;
            output::emit(context.output, &response, |alert| {
                println!(
                    "alert {} acknowledged by {}",
                    text(alert, "id"),
                    text(alert, "acknowledged_by")
                );
            });
        }
        MonitorCommand::Rules(command) => run_rules(context, command).await?,
        MonitorCommand::Drift {
            reference,
            current,
            features,
            mode,
            project,
        } => {
            let request = json!({
                "reference": dataset_ref(reference)?,
                "current": dataset_ref(current)?,
                "features": features,
                "mode": mode,
            });
            let response = client.adhoc_drift(project, &request).await?;
            output::emit(context.output, &response, |body| {
                print_drift(&body["drift"]);
            });
        }
    }
    Ok(())
}

async fn run_rules(context: &Context, command: &RulesCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        RulesCommand::List { monitor, project } => {
            let response = client.list_alert_rules(project, monitor).await?;
            output::emit(context.output, &response, |list| {
                let mut table =
                    output::table(&["name", "condition", "cooldown", "sinks", "action"]);
                for rule in list["rules"].as_array().into_iter().flatten() {
                    let spec = &rule["spec"];
                    let mut sinks = Vec::new();
                    let webhooks = spec["webhooks"].as_array().map_or(0, Vec::len);
                    if webhooks > 0 {
                        sinks.push(format!("{webhooks} webhook(s)"));
                    }
                    if let Some(subject) = spec["nats_subject"].as_str() {
                        sinks.push(format!("nats {subject}"));
                    }
                    if let Some(topic) = spec["kafka_topic"].as_str() {
                        sinks.push(format!("kafka {topic}"));
                    }
                    table.add_row(vec![
                        text(rule, "name"),
                        spec["condition"].to_string(),
                        format!("{} s", spec["cooldown_seconds"]),
                        sinks.join(", "),
                        output::or_dash(spec["action"]["type"].as_str()).to_owned(),
                    ]);
                }
                output::print_table(&table, "no alert rules");
            });
        }
        RulesCommand::Create {
            monitor,
            file,
            project,
        } => {
            let spec = read_json(file, "alert rule")?;
            let response = client.create_alert_rule(project, monitor, &spec).await?;
            output::emit(context.output, &response, |created| {
                println!("created alert rule {}", text(&created["rule"], "name"));
                println!(
                    "webhook signing secret (shown once): {}",
                    text(created, "secret")
                );
            });
        }
        RulesCommand::Delete {
            monitor,
            rule,
            project,
        } => {
            let response = client.delete_alert_rule(project, monitor, rule).await?;
            output::emit(context.output, &response, |()| {
                println!("deleted alert rule {rule} of monitor {monitor}");
            });
        }
    }
    Ok(())
}

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or("").to_owned()
}

fn join(values: &Value) -> String {
    values
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn number(value: &Value) -> String {
    match value.as_f64() {
        Some(number) if number != 0.0 && number.abs() < 1e-4 => format!("{number:.3e}"),
        Some(number) => format!("{number:.4}"),
        None => "-".to_owned(),
    }
}

fn print_drift(drift: &Value) {
    if drift.is_null() {
        println!("drift: the window has no rows");
        return;
    }
    println!(
        "drift ({} mode): {} of {} features drifted, share {}; dataset drifted: {}",
        text(drift, "mode"),
        drift["drifted"],
        drift["tested"],
        number(&drift["share"]),
        output::yes_no(drift["dataset_drifted"] == true)
    );
    let mut table = output::table(&[
        "feature",
        "method",
        "score",
        "threshold",
        "p-value",
        "PSI",
        "drifted",
    ]);
    for feature in drift["features"].as_array().into_iter().flatten() {
        table.add_row(drift_row(feature));
    }
    output::print_table(&table, "no feature tested");
    for skipped in drift["skipped"].as_array().into_iter().flatten() {
        println!(
            "skipped {}: {}",
            text(skipped, "feature"),
            text(skipped, "reason")
        );
    }
}

fn drift_row(feature: &Value) -> Vec<String> {
    vec![
        text(feature, "feature"),
        text(feature, "method"),
        number(&feature["score"]),
        number(&feature["threshold"]),
        number(&feature["p_value"]),
        number(&feature["psi"]),
        output::yes_no(feature["drifted"] == true).to_owned(),
    ]
}

fn print_report(report: &Value) {
    let window = &report["window"];
    println!(
        "{} against {}: {} rows in the window ending {}{}",
        text(report, "dataset"),
        text(report, "reference"),
        window["rows"],
        text(window, "end"),
        window["start"]
            .as_str()
            .map(|start| format!(" (from {start})"))
            .unwrap_or_default()
    );
    print_drift(&report["drift"]);
    if !report["prediction_drift"].is_null() {
        let mut table = output::table(&[
            "column",
            "method",
            "score",
            "threshold",
            "p-value",
            "PSI",
            "drifted",
        ]);
        table.add_row(drift_row(&report["prediction_drift"]));
        output::print_table(&table, "");
    }
    if !report["performance"].is_null() {
        let performance = &report["performance"];
        println!("performance ({}):", text(performance, "task"));
        let mut table = output::table(&[
            "group",
            "predictions",
            "labelled",
            "AUC",
            "accuracy",
            "F1",
            "RMSE",
            "MAE",
        ]);
        let mut groups = vec![("all".to_owned(), &performance["overall"])];
        for group in performance["groups"].as_array().into_iter().flatten() {
            groups.push((
                format!(
                    "{} v{}",
                    output::or_dash(group["variant"].as_str()),
                    group["model_version"]
                ),
                group,
            ));
        }
        for (name, group) in groups {
            table.add_row(vec![
                name,
                group["predictions"].to_string(),
                group["labelled"].to_string(),
                number(&group["auc"]),
                number(&group["accuracy"]),
                number(&group["f1"]),
                number(&group["rmse"]),
                number(&group["mae"]),
            ]);
        }
        output::print_table(&table, "");
    }
    let mut missing = output::table(&["feature", "rows", "nulls", "null share"]);
    for column in report["missing"].as_array().into_iter().flatten() {
        missing.add_row(vec![
            text(column, "feature"),
            column["rows"].to_string(),
            column["nulls"].to_string(),
            number(&column["null_share"]),
        ]);
    }
    output::print_table(&missing, "no missing-value counts");
    let freshness = &report["freshness"];
    println!(
        "newest row: {} ({} s ago)",
        output::or_dash(freshness["last_row_at"].as_str()),
        number(&freshness["age_seconds"])
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_command_definition_is_consistent() {
        use clap::CommandFactory;

        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: MonitorCommand,
        }
        Cli::command().debug_assert();
    }

    #[test]
    fn dataset_refs_parse() {
        assert_eq!(
            dataset_ref("train@3").unwrap(),
            json!({"dataset": "train", "version": 3})
        );
        assert_eq!(dataset_ref("train").unwrap(), json!({"dataset": "train"}));
        assert!(dataset_ref("train@x").is_err());
    }

    #[test]
    fn spec_from_options() {
        let spec = monitor_spec(
            Some("m"),
            Some("fraud"),
            None,
            None,
            None,
            &[],
            "default",
            Some("1d"),
            None,
            false,
            "1h",
        )
        .unwrap();
        assert_eq!(
            spec["window"],
            json!({"type": "duration", "seconds": 86400})
        );
        assert_eq!(spec["target"], json!({"type": "endpoint", "name": "fraud"}));
        assert_eq!(spec["interval_seconds"], 3600);
        assert!(spec.get("reference").is_none());
    }
}
