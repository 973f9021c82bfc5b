//! `ghaf features` end to end: a real server as a child process on a free 127.0.0.1 port,
//! the shipped weather table ingested, a view applied from a definitions directory,
//! materialised, read online and joined into a training set.

use std::io::Write;
use std::process::Output;

use std::process::Stdio;

use crate::server::{data_file, ghaf, run, start_server};

const DEFINITIONS: &str = "
entities:
  - {name: origin, value_type: string}
feature_views:
  - name: origin_weather
    entities: [origin]
    source: {dataset: weather}
    event_time: time_hour
    ttl: 3h
    features:
      - {name: temp}
      - {name: windy, expression: \"wind_speed > 20\"}
";

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn features_apply_materialize_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("data"));
    let schema = data_file("weather.schema.yaml");
    let input = data_file("weather.csv.gz");
    run(
        &server,
        &[
            "datasets",
            "create",
            "weather",
            "--schema",
            schema.to_str().unwrap(),
        ],
    );
    run(
        &server,
        &[
            "datasets",
            "ingest",
            "weather",
            input.to_str().unwrap(),
            "--null",
            "NA",
            "--null",
            "",
        ],
    );

    let definitions = dir.path().join("features");
    std::fs::create_dir_all(&definitions).unwrap();
    std::fs::File::create(definitions.join("weather.yaml"))
        .unwrap()
        .write_all(DEFINITIONS.as_bytes())
        .unwrap();
    let definitions = definitions.to_str().unwrap();

    // Without a terminal and without --yes, apply prints the plan and stops.
    let unconfirmed = ghaf(&["features", "apply", definitions])
        .args(["--url", &server.url, "--token", &server.token])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!unconfirmed.status.success());
    assert!(
        stdout(&unconfirmed).contains("+ feature_view origin_weather v1"),
        "{}",
        stdout(&unconfirmed)
    );
    assert!(String::from_utf8_lossy(&unconfirmed.stderr).contains("--yes"));

    let applied = run(&server, &["features", "apply", definitions, "--yes"]);
    assert!(
        stdout(&applied).contains("Applied 2 change(s)"),
        "{}",
        stdout(&applied)
    );
    let again = run(&server, &["features", "apply", definitions, "--plan-only"]);
    assert!(
        stdout(&again).contains("= feature_view origin_weather unchanged"),
        "{}",
        stdout(&again)
    );
    let listed = run(&server, &["features", "list"]);
    assert!(
        stdout(&listed).contains("origin_weather"),
        "{}",
        stdout(&listed)
    );

    let materialized = run(
        &server,
        &[
            "features",
            "materialize",
            "origin_weather",
            "--end",
            "2013-01-01T12:00:00Z",
        ],
    );
    assert!(
        stdout(&materialized).contains("3 key(s) written"),
        "{}",
        stdout(&materialized)
    );

    // JFK's 12:00 observation on 2013-01-01 has temp 39.02 in weather.csv.gz; the reads
    // happen now, years after, so the 3h TTL withholds the values.
    let online = run(
        &server,
        &[
            "--output",
            "json",
            "features",
            "get-online",
            "--features",
            "origin_weather:temp",
            "--entity",
            "origin=JFK,XXX",
        ],
    );
    let body: serde_json::Value = serde_json::from_slice(&online.stdout).unwrap();
    assert_eq!(
        body["metadata"]["feature_names"],
        serde_json::json!(["origin", "temp"])
    );
    assert_eq!(
        body["results"][1]["statuses"],
        serde_json::json!(["OUTSIDE_MAX_AGE", "NOT_FOUND"])
    );

    let training = run(
        &server,
        &[
            "features",
            "training-set",
            "--entities",
            "weather@v1",
            "--features",
            "origin_weather:temp,origin_weather:windy",
            "--timestamp-column",
            "time_hour",
            "--output-dataset",
            "weather_training",
            "--full-names",
        ],
    );
    let text = stdout(&training);
    assert!(text.contains("as weather_training@v1"), "{text}");
    assert!(text.contains("origin_weather__windy"), "{text}");
}
