//! Quickstart stage: apply the feature definitions through the API and upload entity tables
//! (flights with their lookup time, request-time features and label) as dataset versions.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use ghaf_client::{Client, ClientError};
use ghaf_features::Definitions;
use serde_json::{Value, json};

use super::flights::{self, Flight};

/// The quickstart's feature definitions: examples/quickstart/features.yaml.
const DEFINITIONS: &str = include_str!("../../../../../examples/quickstart/features.yaml");

/// Feature service that the training job and the endpoint use.
pub const FEATURE_SERVICE: &str = "arrival_delay";

/// Features the model takes from the feature service, in model order after the request-time
/// numbers.
pub const SERVED_FEATURES: [&str; 11] = [
    "temp",
    "humid",
    "wind_speed",
    "visib",
    "precip",
    "plane_year",
    "seats",
    "engines",
    "origin_dep_delay_3h",
    "origin_departures_3h",
    "carrier_dep_delay_6h",
];

/// Numeric features the request carries (the flight's own schedule).
pub const REQUEST_FEATURES: [&str; 3] = ["hour", "day_of_week", "distance"];

/// Categorical feature the request carries, as a text value.
pub const REQUEST_CATEGORY: &str = "dest";

/// Returns every model feature in model order: the request-time numbers, the served
/// features, then the request-time category.
pub fn model_features() -> Vec<&'static str> {
    let mut features: Vec<&str> = REQUEST_FEATURES.to_vec();
    features.extend(SERVED_FEATURES);
    features.push(REQUEST_CATEGORY);
    features
}

/// Numeric model features, which the drift monitor watches.
pub fn numeric_features() -> Vec<&'static str> {
    model_features()
        .into_iter()
        .filter(|name| *name != REQUEST_CATEGORY)
        .collect()
}

/// Views that serving reads online, which the replay materialises hour by hour.
pub const TIMED_VIEWS: [&str; 3] = ["origin_weather", "origin_delays", "carrier_delays"];

/// The static view, materialised once.
pub const STATIC_VIEW: &str = "plane_attributes";

/// Outcome of applying the definitions.
pub struct Applied {
    /// One line per change, as `ghaf features apply` prints them.
    pub plan: String,
    pub changes: usize,
}

/// Applies the definitions; an apply that changes nothing is reported with zero changes.
pub async fn apply(client: &Client, project: &str) -> anyhow::Result<Applied> {
    let definitions = Definitions::from_yaml(DEFINITIONS)
        .context("the embedded examples/quickstart/features.yaml is invalid")?;
    let definitions = serde_json::to_value(&definitions)?;
    let applied = client
        .apply_features(project, &definitions)
        .await
        .context("cannot apply the feature definitions")?
        .value;
    Ok(Applied {
        plan: applied["text"].as_str().unwrap_or_default().to_owned(),
        changes: applied["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|change| change["action"] != "unchanged")
            .count(),
    })
}

/// An uploaded entity table.
pub struct EntityVersion {
    pub dataset: String,
    pub version: i64,
    pub rows: usize,
    pub created: bool,
}

/// Uploads the labelled flights among `rows` as a version of the entity dataset `dataset`,
/// creating the dataset first when it is missing. Identical content returns the existing
/// version.
pub async fn upload_entities<'a>(
    client: &Client,
    project: &str,
    dataset: &str,
    description: &str,
    rows: impl IntoIterator<Item = &'a Flight>,
    scratch: &Path,
) -> anyhow::Result<EntityVersion> {
    ensure_entity_dataset(client, project, dataset, description).await?;
    let (path, count) = flights::write_entities(rows, scratch.join(format!("{dataset}.csv")))?;
    let file = tokio::fs::File::open(&path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let query = [
        ("file_name", format!("{dataset}.csv")),
        ("format", "csv".to_owned()),
        ("null", ",".to_owned()),
    ];
    let outcome = client
        .upload_dataset_file(project, dataset, file, &query, Arc::new(|_| {}))
        .await
        .with_context(|| format!("cannot upload the entity table {dataset}"))?
        .value;
    let _ = std::fs::remove_file(&path);
    let version = outcome["version"]["version"]
        .as_i64()
        .with_context(|| format!("the ingest response for {dataset} has no version number"))?;
    Ok(EntityVersion {
        dataset: dataset.to_owned(),
        version,
        rows: count,
        created: outcome["created"] == Value::Bool(true),
    })
}

async fn ensure_entity_dataset(
    client: &Client,
    project: &str,
    dataset: &str,
    description: &str,
) -> anyhow::Result<()> {
    match client.get_dataset(project, dataset).await {
        Ok(_) => return Ok(()),
        Err(ClientError::Api { status: 404, .. }) => {}
        Err(error) => return Err(error).with_context(|| format!("cannot read dataset {dataset}")),
    }
    let text =
        |name: &str, nullable: bool| json!({"name": name, "type": "string", "nullable": nullable});
    let int = |name: &str| json!({"name": name, "type": "integer", "nullable": false});
    let body = json!({
        "name": dataset,
        "description": description,
        "schema": {"columns": [
            {"name": "event_timestamp", "type": "timestamp", "nullable": false},
            text("origin", false),
            text("tailnum", true),
            text("carrier", false),
            text("dest", false),
            int("hour"),
            int("day_of_week"),
            int("distance"),
            int("month"),
            int("day"),
            int("delayed"),
        ]},
    });
    client
        .create_dataset(project, &body)
        .await
        .with_context(|| format!("cannot create dataset {dataset}"))?;
    Ok(())
}

/// Builds a point-in-time training set of the feature service over an entity version, stored
/// as a new version of `output`, and returns that version's number and row count.
pub async fn build_training_set(
    client: &Client,
    project: &str,
    entities: &EntityVersion,
    output: &str,
) -> anyhow::Result<(i64, u64)> {
    let body = json!({
        "entity_dataset": entities.dataset,
        "entity_version": entities.version,
        "feature_service": FEATURE_SERVICE,
        "timestamp_column": "event_timestamp",
        "output_dataset": output,
    });
    let built = client
        .create_training_set(project, &body)
        .await
        .with_context(|| {
            format!(
                "cannot build the training set of {}@{} into {output}",
                entities.dataset, entities.version
            )
        })?
        .value;
    let version = built["version"]
        .as_i64()
        .context("the training-set response has no version")?;
    Ok((version, built["rows"].as_u64().unwrap_or(0)))
}

/// Materialises the static view into the online store once.
pub async fn materialize_static(client: &Client, project: &str) -> anyhow::Result<u64> {
    let done = client
        .materialize_features(project, STATIC_VIEW, &json!({}))
        .await
        .with_context(|| format!("cannot materialise {STATIC_VIEW}"))?
        .value;
    Ok(done["materialization"]["keys_written"]
        .as_u64()
        .unwrap_or(0))
}

/// Materialises the timed views from `start` to `end` (Unix milliseconds, both inclusive).
/// Without `start`, each view continues from the end of its last interval, or covers every
/// row up to `end` when it has none. The replay passes the previous end, because the server
/// reads every recorded interval of the view to find the last one.
pub async fn materialize_range(
    client: &Client,
    project: &str,
    start: Option<i64>,
    end: i64,
) -> anyhow::Result<()> {
    let end = flights::format_millis(end);
    let mut body = json!({"end": end});
    if let Some(start) = start {
        body["start"] = json!(flights::format_millis(start));
    }
    // The views are independent, so they are materialised concurrently.
    let mut runs = tokio::task::JoinSet::new();
    for view in TIMED_VIEWS {
        let (client, project, body) = (client.clone(), project.to_owned(), body.clone());
        runs.spawn(async move {
            client
                .materialize_features(&project, view, &body)
                .await
                .with_context(|| format!("cannot materialise {view} up to {}", body["end"]))
        });
    }
    while let Some(run) = runs.join_next().await {
        run.context("a materialisation task panicked")??;
    }
    Ok(())
}
