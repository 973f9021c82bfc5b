//! `ghaf endpoints` deploys registered model versions as endpoints, shows their load status,
//! sets their traffic policy, prints their variant stats, posts ground-truth labels from a
//! file and prints the prediction log.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::context::Context;
use crate::output;

/// Labels sent per request; the server takes at most 10 000.
const LABEL_BATCH: usize = 5000;

#[derive(Subcommand, Clone, Debug)]
pub enum EndpointsCommand {
    /// Create an endpoint that serves a registered model version
    // `--version` names the model version here, so the program's version flag is off.
    #[command(disable_version_flag = true)]
    Create {
        name: String,
        /// Registered model name
        #[arg(long)]
        model: String,
        /// Registered model version
        #[arg(long)]
        version: i64,
        /// Feature service whose online features are joined to each request
        #[arg(long)]
        feature_service: Option<String>,
        /// cpu, cuda or cuda:N
        #[arg(long, default_value = "cpu")]
        execution_provider: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Deploy another model version on an endpoint
    // `--version` names the model version here, so the program's version flag is off.
    #[command(disable_version_flag = true)]
    Update {
        name: String,
        #[arg(long)]
        model: String,
        #[arg(long)]
        version: i64,
        #[arg(long)]
        feature_service: Option<String>,
        #[arg(long, default_value = "cpu")]
        execution_provider: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// List the project's endpoints with their load status
    List {
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Show an endpoint: model version, status, load errors, inputs and outputs
    Get {
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Delete an endpoint (its prediction log and label datasets stay)
    Delete {
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Post ground-truth labels from a CSV (request_id,row,label) or NDJSON file
    Label {
        name: String,
        /// labels.csv or labels.ndjson; `row` may be left out and defaults to 0
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Print the newest rows of the prediction log
    Predictions {
        name: String,
        /// Maximum number of rows, 1 to 1000
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Set the traffic policy, variants, shadow or followed alias of an endpoint
    ///
    /// `--file policy.json` sends the file as the request body, and flags override its
    /// fields. `--variant b=scorer:3 --ab primary=70,b=30 --sticky-header x-user-id` adds
    /// version 3 of model scorer as variant b and splits traffic 70/30, keeping each user on
    /// one variant. `--variant shadow=scorer:4 --shadow shadow=10` mirrors 10% of requests.
    Policy {
        name: String,
        /// JSON body with any of policy, variants, shadow and follow_alias
        #[arg(long)]
        file: Option<PathBuf>,
        /// Route every request to the first variant
        #[arg(long, conflicts_with = "ab")]
        single: bool,
        /// A/B split as NAME=WEIGHT pairs, such as primary=70,b=30; variants left out get
        /// weight 0
        #[arg(long)]
        ab: Option<String>,
        /// Keep callers with the same value of this request header on one variant
        #[arg(long, requires = "ab", conflicts_with = "sticky_input")]
        sticky_header: Option<String>,
        /// Keep requests with the same first element of this input tensor on one variant
        #[arg(long, requires = "ab")]
        sticky_input: Option<String>,
        /// Add or replace a variant as NAME=MODEL:VERSION (weight 0 unless --ab sets one);
        /// repeat for several
        #[arg(long = "variant")]
        variants: Vec<String>,
        /// Mirror a share of requests to a variant, as NAME=PERCENT, such as shadow=10
        #[arg(long, conflicts_with = "no_shadow")]
        shadow: Option<String>,
        /// Remove the shadow
        #[arg(long)]
        no_shadow: bool,
        /// Follow a registered model alias, such as champion
        #[arg(long, conflicts_with = "no_follow_alias")]
        follow_alias: Option<String>,
        /// Stop following an alias
        #[arg(long)]
        no_follow_alias: bool,
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Print each variant's requests, errors, latency and shadow comparisons, summed over
    /// every replica
    Stats {
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
    #[command(flatten)]
    Rollouts(super::rollouts::RolloutsCommand),
}

/// Parses `NAME=VALUE` pairs separated by commas.
fn pairs(text: &str, flag: &str) -> anyhow::Result<Vec<(String, String)>> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (name, value) = part.split_once('=').with_context(|| {
                format!("{flag} {part:?} is not NAME=VALUE, such as primary=70")
            })?;
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// Parses `NAME=MODEL:VERSION` into a variant with weight 0.
fn parse_variant(text: &str) -> anyhow::Result<Value> {
    let (name, target) = text.split_once('=').with_context(|| {
        format!("--variant {text:?} is not NAME=MODEL:VERSION, such as b=scorer:3")
    })?;
    let (model, version) = target.rsplit_once(':').with_context(|| {
        format!("--variant {text:?} names no version; write NAME=MODEL:VERSION")
    })?;
    let version: i64 = version
        .trim()
        .parse()
        .with_context(|| format!("--variant {text:?}: version {version:?} is not a number"))?;
    Ok(json!({"name": name.trim(), "model": model.trim(), "version": version, "weight": 0}))
}

/// Builds the body of a policy update from `--file` and the flags. `current` returns the
/// endpoint's stored variants, read only when a flag changes variants.
#[allow(clippy::too_many_arguments)]
async fn policy_body<F, Fut>(
    file: &Option<PathBuf>,
    single: bool,
    ab: &Option<String>,
    sticky_header: &Option<String>,
    sticky_input: &Option<String>,
    variants: &[String],
    shadow: &Option<String>,
    no_shadow: bool,
    follow_alias: &Option<String>,
    no_follow_alias: bool,
    current: F,
) -> anyhow::Result<Value>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<Value>>>,
{
    let mut body = match file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the policy file {}", file.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a JSON object", file.display()))?
        }
        None => json!({}),
    };
    anyhow::ensure!(
        body.is_object(),
        "the policy file must hold a JSON object with policy, variants, shadow or follow_alias"
    );
    if single {
        body["policy"] = json!({"kind": "single"});
    }
    if !variants.is_empty() || ab.is_some() {
        let mut list = match body["variants"].as_array() {
            Some(list) => list.clone(),
            None => current().await?,
        };
        for text in variants {
            let variant = parse_variant(text)?;
            match list.iter_mut().find(|v| v["name"] == variant["name"]) {
                Some(existing) => *existing = variant,
                None => list.push(variant),
            }
        }
        if let Some(ab) = ab {
            let weights = pairs(ab, "--ab")?;
            for variant in list.iter_mut() {
                variant["weight"] = json!(0);
            }
            for (name, weight) in weights {
                let weight: u32 = weight.parse().with_context(|| {
                    format!("--ab weight {weight:?} of {name} is not a whole number")
                })?;
                let variant = list.iter_mut().find(|v| v["name"] == name).with_context(|| {
                    format!("--ab names variant {name:?}, which the endpoint does not have; add it with --variant {name}=MODEL:VERSION")
                })?;
                variant["weight"] = json!(weight);
            }
            let mut policy = json!({"kind": "ab"});
            if let Some(header) = sticky_header {
                policy["sticky"] = json!({"from": "header", "name": header});
            }
            if let Some(input) = sticky_input {
                policy["sticky"] = json!({"from": "input", "name": input});
            }
            body["policy"] = policy;
        }
        body["variants"] = Value::Array(list);
    }
    if let Some(shadow) = shadow {
        let parsed = pairs(shadow, "--shadow")?;
        let [(variant, percent)] = parsed.as_slice() else {
            anyhow::bail!("--shadow {shadow:?} is not NAME=PERCENT, such as shadow=10");
        };
        let percent: f64 = percent
            .parse()
            .with_context(|| format!("--shadow percent {percent:?} is not a number"))?;
        body["shadow"] = json!({"variant": variant, "percent": percent});
    }
    if no_shadow {
        body["shadow"] = Value::Null;
    }
    if let Some(alias) = follow_alias {
        body["follow_alias"] = json!(alias);
    }
    if no_follow_alias {
        body["follow_alias"] = Value::Null;
    }
    anyhow::ensure!(
        body.as_object().is_some_and(|fields| !fields.is_empty()),
        "nothing to change; pass --file or a flag such as --ab primary=70,b=30"
    );
    Ok(body)
}

fn millis(value: &Value) -> String {
    match value.as_f64() {
        Some(ms) => format!("{ms}"),
        None => "-".to_owned(),
    }
}

fn print_stats(stats: &Value) {
    let mut table = output::table(&[
        "variant",
        "model",
        "requests",
        "errors",
        "error rate",
        "p50 ms",
        "p99 ms",
        "shadow compared",
        "disagreed",
    ]);
    for variant in stats["variants"].as_array().into_iter().flatten() {
        let rate = variant["error_rate"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |rate| format!("{:.4}", rate));
        table.add_row(vec![
            text(variant, "variant"),
            format!("{}@{}", text(variant, "model"), text(variant, "version")),
            text(variant, "requests"),
            text(variant, "errors"),
            rate,
            millis(&variant["p50_ms"]),
            millis(&variant["p99_ms"]),
            text(variant, "shadow_compared"),
            text(variant, "shadow_disagreed"),
        ]);
    }
    println!("{table}");
    println!("p50 and p99 are the upper bounds of the latency buckets holding them");
}

fn text(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn deploy_body(
    model: &str,
    version: i64,
    feature_service: &Option<String>,
    execution_provider: &str,
    description: &Option<String>,
) -> Value {
    let mut body = json!({
        "model": model,
        "version": version,
        "execution_provider": execution_provider,
    });
    if let Some(service) = feature_service {
        body["feature_service"] = json!(service);
    }
    if let Some(description) = description {
        body["description"] = json!(description);
    }
    body
}

fn status_line(endpoint: &Value) -> String {
    endpoint["status"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|status| {
            let mut line = format!(
                "{} {}@{} {}",
                text(status, "name"),
                text(status, "model"),
                text(status, "version"),
                text(status, "state")
            );
            if let Some(reason) = status["reason"].as_str() {
                line.push_str(&format!(": {reason}"));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn print_endpoint(endpoint: &Value) {
    println!("name:             {}", text(endpoint, "name"));
    println!("status:           {}", status_line(endpoint));
    if let Some(service) = endpoint["feature_service"].as_str() {
        println!("feature service:  {service}");
    }
    println!("provider:         {}", text(endpoint, "execution_provider"));
    for status in endpoint["status"].as_array().into_iter().flatten() {
        if let Some(load) = status["load_ms"].as_u64() {
            println!(
                "load:             {load} ms, warm-up {} ms",
                status["warmup_ms"].as_u64().unwrap_or(0)
            );
        }
    }
    for (label, key) in [("inputs:", "inputs"), ("outputs:", "outputs")] {
        if let Some(list) = endpoint[key].as_array() {
            let names: Vec<String> = list
                .iter()
                .map(|t| format!("{} {} {}", text(t, "name"), text(t, "datatype"), t["shape"]))
                .collect();
            println!("{label:<18}{}", names.join(", "));
        }
    }
    println!(
        "prediction log:   {}",
        text(endpoint, "predictions_dataset")
    );
    println!("labels:           {}", text(endpoint, "labels_dataset"));
}

/// Reads labels from CSV (with a header naming request_id, label and optionally row) or
/// NDJSON.
fn read_labels(file: &PathBuf) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the label file {}", file.display()))?;
    let is_csv = file.extension().is_some_and(|ext| ext == "csv");
    if !is_csv {
        return text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(number, line)| {
                serde_json::from_str(line).with_context(|| {
                    format!(
                        "{} line {} is not a JSON object",
                        file.display(),
                        number + 1
                    )
                })
            })
            .collect();
    }
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers()?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let request_id = column("request_id")
        .with_context(|| format!("{} has no request_id column", file.display()))?;
    let label =
        column("label").with_context(|| format!("{} has no label column", file.display()))?;
    let row = column("row");
    let mut labels = Vec::new();
    for (number, record) in reader.records().enumerate() {
        let record = record?;
        let line = number + 2;
        let value: f64 = record
            .get(label)
            .unwrap_or("")
            .trim()
            .parse()
            .with_context(|| {
                format!("{} line {line}: the label is not a number", file.display())
            })?;
        let mut entry =
            json!({"request_id": record.get(request_id).unwrap_or("").trim(), "label": value});
        if let Some(row) = row {
            let text = record.get(row).unwrap_or("").trim();
            if !text.is_empty() {
                let number: i64 = text.parse().with_context(|| {
                    format!(
                        "{} line {line}: row {text:?} is not a whole number",
                        file.display()
                    )
                })?;
                entry["row"] = json!(number);
            }
        }
        labels.push(entry);
    }
    Ok(labels)
}

pub async fn run(context: &Context, command: &EndpointsCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        EndpointsCommand::Create {
            name,
            model,
            version,
            feature_service,
            execution_provider,
            description,
            project,
        } => {
            let mut body = deploy_body(
                model,
                *version,
                feature_service,
                execution_provider,
                description,
            );
            body["name"] = json!(name);
            let response = client.create_endpoint(project, &body).await?;
            output::emit(context.output, &response, |endpoint| {
                println!(
                    "created endpoint {name}; the model is loading: ghaf endpoints get {name} --project {project}"
                );
                print_endpoint(endpoint);
            });
        }
        EndpointsCommand::Update {
            name,
            model,
            version,
            feature_service,
            execution_provider,
            description,
            project,
        } => {
            let body = deploy_body(
                model,
                *version,
                feature_service,
                execution_provider,
                description,
            );
            let response = client.update_endpoint(project, name, &body).await?;
            output::emit(context.output, &response, print_endpoint);
        }
        EndpointsCommand::List { project } => {
            let response = client.list_endpoints(project).await?;
            output::emit(context.output, &response, |list| {
                let mut table = output::table(&["name", "status", "feature service", "updated"]);
                for endpoint in list["endpoints"].as_array().into_iter().flatten() {
                    table.add_row(vec![
                        text(endpoint, "name"),
                        status_line(endpoint),
                        text(endpoint, "feature_service"),
                        text(endpoint, "updated_at"),
                    ]);
                }
                println!("{table}");
            });
        }
        EndpointsCommand::Get { name, project } => {
            let response = client.get_endpoint(project, name).await?;
            output::emit(context.output, &response, print_endpoint);
        }
        EndpointsCommand::Delete { name, project } => {
            client.delete_endpoint(project, name).await?;
            println!(
                "deleted endpoint {name}; its datasets {name}-predictions and {name}-labels stay"
            );
        }
        EndpointsCommand::Label {
            name,
            file,
            project,
        } => {
            let labels = read_labels(file)?;
            anyhow::ensure!(!labels.is_empty(), "{} has no labels", file.display());
            let mut totals = [0u64; 4];
            for chunk in labels.chunks(LABEL_BATCH) {
                let response = client.post_labels(project, name, chunk).await?;
                for (total, key) in totals.iter_mut().zip([
                    "received",
                    "accepted",
                    "duplicates",
                    "unknown_request_ids",
                ]) {
                    *total += response.value[key].as_u64().unwrap_or(0);
                }
                if context.output == output::OutputFormat::Json {
                    output::print_json(&response.body);
                }
            }
            if context.output != output::OutputFormat::Json {
                println!(
                    "received {}, stored {}, duplicates {} (kept the first label), request ids not in the log {}",
                    totals[0], totals[1], totals[2], totals[3]
                );
            }
        }
        EndpointsCommand::Predictions {
            name,
            limit,
            project,
        } => {
            let response = client.endpoint_predictions(project, name, *limit).await?;
            output::emit(context.output, &response, |list| {
                for row in list["predictions"].as_array().into_iter().flatten() {
                    println!("{row}");
                }
            });
        }
        EndpointsCommand::Policy {
            name,
            file,
            single,
            ab,
            sticky_header,
            sticky_input,
            variants,
            shadow,
            no_shadow,
            follow_alias,
            no_follow_alias,
            project,
        } => {
            let current = || async {
                let endpoint = client.get_endpoint(project, name).await?;
                Ok(endpoint.value["variants"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default())
            };
            let body = policy_body(
                file,
                *single,
                ab,
                sticky_header,
                sticky_input,
                variants,
                shadow,
                *no_shadow,
                follow_alias,
                *no_follow_alias,
                current,
            )
            .await?;
            let response = client.set_endpoint_policy(project, name, &body).await?;
            output::emit(context.output, &response, |endpoint| {
                println!("policy:           {}", endpoint["policy"]);
                if !endpoint["shadow"].is_null() {
                    println!("shadow:           {}", endpoint["shadow"]);
                }
                print_endpoint(endpoint);
            });
        }
        EndpointsCommand::Stats { name, project } => {
            let response = client.endpoint_stats(project, name).await?;
            output::emit(context.output, &response, print_stats);
        }
        EndpointsCommand::Rollouts(command) => {
            super::rollouts::run(context, &client, command).await?
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn stored() -> anyhow::Result<Vec<Value>> {
        Ok(vec![
            json!({"name": "primary", "model": "scorer", "version": 1, "weight": 100}),
        ])
    }

    #[tokio::test]
    async fn ab_flags_build_body() {
        let body = policy_body(
            &None,
            false,
            &Some("primary=70,b=30".into()),
            &Some("x-user-id".into()),
            &None,
            &["b=scorer:3".into()],
            &None,
            false,
            &None,
            false,
            stored,
        )
        .await
        .unwrap();
        assert_eq!(body["policy"]["kind"], "ab");
        assert_eq!(body["policy"]["sticky"]["name"], "x-user-id");
        assert_eq!(body["variants"][0]["weight"], 70);
        assert_eq!(body["variants"][1]["version"], 3);
        assert_eq!(body["variants"][1]["weight"], 30);
    }

    #[tokio::test]
    async fn ab_with_unknown_variant_fails() {
        let error = policy_body(
            &None,
            false,
            &Some("primary=50,c=50".into()),
            &None,
            &None,
            &[],
            &None,
            false,
            &None,
            false,
            stored,
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("\"c\""), "{error}");
    }

    #[tokio::test]
    async fn no_shadow_sends_null() {
        let body = policy_body(
            &None,
            false,
            &None,
            &None,
            &None,
            &[],
            &None,
            true,
            &None,
            false,
            stored,
        )
        .await
        .unwrap();
        assert!(body["shadow"].is_null());
        assert!(body.as_object().unwrap().contains_key("shadow"));
    }

    #[test]
    fn variant_needs_version() {
        assert!(parse_variant("b=scorer").is_err());
        assert_eq!(parse_variant("b=scorer:2").unwrap()["version"], 2);
    }
}
