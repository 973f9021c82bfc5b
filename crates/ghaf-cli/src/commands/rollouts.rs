//! `ghaf endpoints rollout`, `history` and `analysis`: canary rollouts of an endpoint, the
//! evidence of each rollout decision, and the A/B analysis of its variants.

use clap::Subcommand;
use ghaf_client::Client;
use serde_json::{Value, json};

use crate::context::Context;
use crate::output;

/// Subcommands of `ghaf endpoints` about rollouts.
#[derive(Subcommand, Clone, Debug)]
pub enum RolloutsCommand {
    /// Start, promote, pause, resume or abort a canary rollout
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Print the endpoint's rollout decisions with their evidence, and its recorded changes
    History {
        name: String,
        /// Maximum number of entries, the newest ones, 1 to 1000
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Compare the endpoint's variants: requests, errors, latency and quality, with
    /// significance tests
    Analysis {
        name: String,
        /// Join predictions logged at or after this RFC 3339 time with labels (default: the
        /// endpoint's last change)
        #[arg(long)]
        since: Option<String>,
        /// Quality metric: accuracy, auc, rmse or mae (default: the policy's)
        #[arg(long)]
        metric: Option<String>,
        /// Requests (and labelled rows) each variant needs before a winner is called
        #[arg(long)]
        min_samples: Option<u64>,
        /// Confidence level of the tests, such as 0.95
        #[arg(long)]
        confidence: Option<f64>,
        #[arg(long, default_value = "default")]
        project: String,
    },
}

/// `ghaf endpoints rollout ...`.
#[derive(Subcommand, Clone, Debug)]
pub enum RolloutCommand {
    /// Start a canary from the version the endpoint serves to another model version
    // `--version` names the model version here, so the program's version flag is off.
    #[command(disable_version_flag = true)]
    Start {
        name: String,
        /// Registered model version of the candidate
        #[arg(long)]
        version: i64,
        /// Registered model of the candidate (default: the model the endpoint serves)
        #[arg(long)]
        model: Option<String>,
        /// Candidate traffic share per step, in percent, such as 10,50; without it the
        /// endpoint's canary policy is used
        #[arg(long, value_delimiter = ',')]
        steps: Option<Vec<u32>>,
        /// Time each step runs before it can pass, in seconds (with --steps)
        #[arg(long, default_value_t = 300, requires = "steps")]
        interval_secs: u64,
        /// Candidate requests a check needs before it is judged (with --steps)
        #[arg(long, default_value_t = 100, requires = "steps")]
        min_requests: u64,
        /// Failed checks after which the candidate is rolled back (with --steps)
        #[arg(long, default_value_t = 2, requires = "steps")]
        failure_threshold: u32,
        /// Largest share of failed candidate requests, such as 0.01 (with --steps)
        #[arg(long, requires = "steps")]
        max_error_rate: Option<f64>,
        /// Largest candidate p99 latency, in milliseconds (with --steps)
        #[arg(long, requires = "steps")]
        max_p99_ms: Option<f64>,
        /// Largest ratio of the candidate's p99 latency to the stable version's (with --steps)
        #[arg(long, requires = "steps")]
        max_p99_ratio: Option<f64>,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Promote the candidate to all traffic, skipping the remaining steps
    Promote {
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Pause the rollout; traffic keeps its weights and no check is judged
    Pause {
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Resume a paused rollout; the current step runs again on a new check window
    Resume {
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Abort the rollout; all traffic goes back to the stable version at once
    Abort {
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
}

fn text(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn number(value: &Value, digits: usize) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// Prints an endpoint's routing and rollout after a rollout action.
fn print_rollout(view: &Value) {
    println!("endpoint:   {}", text(view, "endpoint"));
    println!("policy:     {}", text(&view["policy"], "kind"));
    let weights: Vec<String> = view["variants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            format!(
                "{} {}@{} {}%",
                text(v, "name"),
                text(v, "model"),
                text(v, "version"),
                text(v, "weight")
            )
        })
        .collect();
    println!("variants:   {}", weights.join(", "));
    let rollout = &view["rollout"];
    if rollout.is_object() {
        println!(
            "rollout:    {} {} (step {}, {} failed checks)",
            text(rollout, "id"),
            text(rollout, "status"),
            text(rollout, "step"),
            text(rollout, "failures")
        );
        println!(
            "versions:   stable {}@{}, candidate {}@{}",
            text(rollout, "stable_model"),
            text(rollout, "stable_version"),
            text(rollout, "candidate_model"),
            text(rollout, "candidate_version")
        );
        if let Some(reason) = rollout["reason"].as_str() {
            println!("reason:     {reason}");
        }
    }
}

/// Summarises the measurements a decision was based on, for one table cell.
fn evidence(details: &Value) -> String {
    let measurements = &details["measurements"];
    if !measurements.is_object() {
        return details["reason"]
            .as_str()
            .or_else(|| details["rollout"]["reason"].as_str())
            .unwrap_or("")
            .to_owned();
    }
    let variant = |side: &str| {
        let v = &measurements[side];
        format!(
            "{side} v{}: {} req, {} err ({}), p99 {} ms",
            text(v, "version"),
            text(v, "requests"),
            text(v, "errors"),
            number(&v["error_rate"], 4),
            number(&v["p99_ms"], 1)
        )
    };
    let checks: Vec<String> = measurements["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|check| {
            let verdict = match (check["judged"].as_bool(), check["passed"].as_bool()) {
                (Some(true), Some(true)) => "passed",
                (Some(true), _) => "failed",
                _ => "not judged",
            };
            format!(
                "{} {} (max {}) {verdict}",
                text(check, "check"),
                number(&check["value"], 4),
                number(&check["threshold"], 4)
            )
        })
        .collect();
    let mut parts = vec![variant("candidate"), variant("stable")];
    if !checks.is_empty() {
        parts.push(checks.join(", "));
    }
    parts.join("; ")
}

fn weights(details: &Value) -> String {
    details["weights"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| format!("{}={}", text(v, "variant"), text(v, "weight")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_history(list: &Value) {
    let mut table = output::table(&["time", "actor", "decision", "step", "weights", "evidence"]);
    for entry in list["entries"].as_array().into_iter().flatten() {
        let details = &entry["details"];
        let action = text(entry, "action");
        let decision = match action.strip_prefix("endpoints.rollout.") {
            Some(decision) => decision.to_owned(),
            None => format!(
                "{} {} ({})",
                text(details, "method"),
                text(entry, "resource"),
                text(entry, "status")
            ),
        };
        table.add_row(vec![
            text(entry, "time"),
            text(entry, "actor"),
            decision,
            text(&details["rollout"], "step"),
            weights(details),
            evidence(details),
        ]);
    }
    println!("{table}");
}

fn print_analysis(analysis: &Value) {
    let mut table = output::table(&[
        "variant",
        "model",
        "weight",
        "requests",
        "errors",
        "error rate",
        "p50 ms",
        "p99 ms",
        "labelled",
        "metric",
    ]);
    for v in analysis["variants"].as_array().into_iter().flatten() {
        table.add_row(vec![
            text(v, "variant"),
            format!("{}@{}", text(v, "model"), text(v, "version")),
            text(v, "weight"),
            text(v, "requests"),
            text(v, "errors"),
            number(&v["error_rate"], 4),
            number(&v["p50_ms"], 1),
            number(&v["p99_ms"], 1),
            text(v, "labelled"),
            number(&v["metric_value"], 4),
        ]);
    }
    println!("{table}");
    for verdict in analysis["verdicts"].as_array().into_iter().flatten() {
        println!("{}: {}", text(verdict, "metric"), text(verdict, "message"));
        for comparison in verdict["comparisons"].as_array().into_iter().flatten() {
            println!(
                "  {} {} vs {} {}: {} p = {}",
                text(comparison, "best"),
                number(&comparison["best_value"], 4),
                text(comparison, "other"),
                number(&comparison["other_value"], 4),
                text(comparison, "test"),
                number(&comparison["p_value"], 4)
            );
        }
    }
    match analysis["winner"].as_str() {
        Some(winner) => println!("winner: {winner}"),
        None => println!("winner: none yet"),
    }
}

#[allow(clippy::too_many_arguments)]
fn start_body(
    version: i64,
    model: &Option<String>,
    steps: &Option<Vec<u32>>,
    interval_secs: u64,
    min_requests: u64,
    failure_threshold: u32,
    checks: [(&str, Option<f64>); 3],
) -> Value {
    let mut body = json!({ "version": version });
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    if let Some(steps) = steps {
        let mut canary_checks = json!({});
        for (key, value) in checks {
            if let Some(value) = value {
                canary_checks[key] = json!(value);
            }
        }
        body["canary"] = json!({
            "steps": steps,
            "interval_secs": interval_secs,
            "min_requests": min_requests,
            "failure_threshold": failure_threshold,
            "checks": canary_checks,
        });
    }
    body
}

async fn act(
    context: &Context,
    client: &Client,
    action: &str,
    name: &str,
    project: &str,
) -> anyhow::Result<()> {
    let response = client.rollout_action(project, name, action).await?;
    output::emit(context.output, &response, print_rollout);
    Ok(())
}

pub async fn run(
    context: &Context,
    client: &Client,
    command: &RolloutsCommand,
) -> anyhow::Result<()> {
    match command {
        RolloutsCommand::Rollout(RolloutCommand::Start {
            name,
            version,
            model,
            steps,
            interval_secs,
            min_requests,
            failure_threshold,
            max_error_rate,
            max_p99_ms,
            max_p99_ratio,
            project,
        }) => {
            let body = start_body(
                *version,
                model,
                steps,
                *interval_secs,
                *min_requests,
                *failure_threshold,
                [
                    ("max_error_rate", *max_error_rate),
                    ("max_p99_ms", *max_p99_ms),
                    ("max_p99_ratio", *max_p99_ratio),
                ],
            );
            let response = client.start_rollout(project, name, &body).await?;
            output::emit(context.output, &response, |view| {
                println!(
                    "started a canary; follow it with: ghaf endpoints history {name} --project {project}"
                );
                print_rollout(view);
            });
        }
        RolloutsCommand::Rollout(RolloutCommand::Promote { name, project }) => {
            act(context, client, "promote", name, project).await?;
        }
        RolloutsCommand::Rollout(RolloutCommand::Pause { name, project }) => {
            act(context, client, "pause", name, project).await?;
        }
        RolloutsCommand::Rollout(RolloutCommand::Resume { name, project }) => {
            act(context, client, "resume", name, project).await?;
        }
        RolloutsCommand::Rollout(RolloutCommand::Abort { name, project }) => {
            act(context, client, "abort", name, project).await?;
        }
        RolloutsCommand::History {
            name,
            limit,
            project,
        } => {
            let response = client.endpoint_history(project, name, *limit).await?;
            output::emit(context.output, &response, print_history);
        }
        RolloutsCommand::Analysis {
            name,
            since,
            metric,
            min_samples,
            confidence,
            project,
        } => {
            let mut query: Vec<(&str, String)> = Vec::new();
            if let Some(since) = since {
                query.push(("since", since.clone()));
            }
            if let Some(metric) = metric {
                query.push(("metric", metric.clone()));
            }
            if let Some(min_samples) = min_samples {
                query.push(("min_samples", min_samples.to_string()));
            }
            if let Some(confidence) = confidence {
                query.push(("confidence", confidence.to_string()));
            }
            let response = client.endpoint_analysis(project, name, &query).await?;
            output::emit(context.output, &response, print_analysis);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_checks_need_steps() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let mut args = vec![
                "ghaf",
                "endpoints",
                "rollout",
                "start",
                "ep",
                "--version",
                "2",
            ];
            args.extend_from_slice(extra);
            crate::commands::Cli::try_parse_from(args)
        };
        assert!(parse(&[]).is_ok());
        assert!(parse(&["--steps", "10,50", "--max-error-rate", "0.01"]).is_ok());
        assert!(parse(&["--max-error-rate", "0.01"]).is_err());
        assert!(parse(&["--min-requests", "50"]).is_err());
    }

    #[test]
    fn start_body_without_steps() {
        let body = start_body(
            4,
            &None,
            &None,
            300,
            100,
            2,
            [
                ("max_error_rate", Some(0.01)),
                ("max_p99_ms", None),
                ("max_p99_ratio", None),
            ],
        );
        assert_eq!(body, json!({"version": 4}));
    }

    #[test]
    fn start_body_with_canary() {
        let body = start_body(
            4,
            &Some("fraud".into()),
            &Some(vec![10, 50]),
            60,
            500,
            3,
            [
                ("max_error_rate", Some(0.01)),
                ("max_p99_ms", None),
                ("max_p99_ratio", Some(1.5)),
            ],
        );
        assert_eq!(body["model"], "fraud");
        assert_eq!(body["canary"]["steps"], json!([10, 50]));
        assert_eq!(body["canary"]["min_requests"], 500);
        assert_eq!(
            body["canary"]["checks"],
            json!({"max_error_rate": 0.01, "max_p99_ratio": 1.5})
        );
    }

    #[test]
    fn evidence_summarises_checks() {
        let details = json!({
            "measurements": {
                "candidate": {"version": 4, "requests": 20, "errors": 10, "error_rate": 0.5, "p99_ms": 3.0},
                "stable": {"version": 3, "requests": 80, "errors": 0, "error_rate": 0.0, "p99_ms": 2.0},
                "checks": [{"check": "error_rate", "threshold": 0.1, "value": 0.5, "judged": true, "passed": false}],
            },
        });
        let summary = evidence(&details);
        assert!(
            summary.contains("candidate v4: 20 req, 10 err (0.5000)"),
            "{summary}"
        );
        assert!(
            summary.contains("error_rate 0.5000 (max 0.1000) failed"),
            "{summary}"
        );
    }

    #[test]
    fn evidence_falls_back_to_reason() {
        let details = json!({"reason": "alias \"champion\" moved to version 5"});
        assert_eq!(evidence(&details), "alias \"champion\" moved to version 5");
    }
}
