//! The nycflights13 example: apply `examples/features`, build a training set for a sample of
//! flights and check every value against a computation straight from the CSV files.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit};
use ghaf_features::{Change, Definitions, EntitySource, FeatureSelection, TrainingSetRequest};

const HOUR: i64 = 3_600_000_000;

fn read_csv(name: &str) -> Vec<HashMap<String, String>> {
    let path = common::repo_root().join("data/nycflights13").join(name);
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            headers
                .iter()
                .zip(record.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

fn micros(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_micros()
}

fn number(text: &str) -> Option<f64> {
    (text != "NA" && !text.is_empty()).then(|| text.parse().unwrap())
}

fn schema(name: &str) -> String {
    std::fs::read_to_string(common::repo_root().join("data/nycflights13").join(name)).unwrap()
}

fn close(actual: Option<f64>, expected: Option<f64>) -> bool {
    match (actual, expected) {
        (None, None) => true,
        (Some(a), Some(e)) => (a - e).abs() <= 1e-9 * e.abs().max(1.0),
        _ => false,
    }
}

#[tokio::test]
async fn flights_training_set_matches_csv() {
    let h = common::sqlite().await;
    let data = common::repo_root().join("data/nycflights13");
    let options = common::csv_options();
    h.dataset(
        "weather",
        &schema("weather.schema.yaml"),
        &data.join("weather.csv.gz"),
        &options,
    )
    .await;
    h.dataset(
        "planes",
        &schema("planes.schema.yaml"),
        &data.join("planes.csv.gz"),
        &options,
    )
    .await;
    h.dataset(
        "flights",
        &schema("flights.schema.yaml"),
        &data.join("flights.csv.gz"),
        &options,
    )
    .await;

    // Apply the shipped definitions; a second plan has nothing to do.
    let definitions =
        Definitions::load_dir(&common::repo_root().join("examples/features")).unwrap();
    let plan = h
        .store
        .plan(&h.tenant, &h.project, &definitions)
        .await
        .unwrap();
    let rendered = plan.render();
    assert!(
        rendered.contains("+ feature_view origin_weather v1"),
        "{rendered}"
    );
    assert!(
        rendered.contains("+ feature_service delay_model"),
        "{rendered}"
    );
    assert_eq!(
        plan.changes
            .iter()
            .filter(|c| c.change == Change::Create)
            .count(),
        6
    );
    h.store
        .apply(&h.tenant, &h.project, &plan, "tester")
        .await
        .unwrap();
    let again = h
        .store
        .plan(&h.tenant, &h.project, &definitions)
        .await
        .unwrap();
    assert!(again.is_empty(), "{}", again.render());

    // The entity table: every 97th flight, one hour before its scheduled hour, plus a
    // duplicate row, an unknown tail number and a lookup before any data.
    let flights = read_csv("flights.csv.gz");
    let mut sample: Vec<(String, Option<String>, i64, Option<i64>)> = flights
        .iter()
        .step_by(97)
        .map(|f| {
            let tailnum = (f["tailnum"] != "NA").then(|| f["tailnum"].clone());
            let delay = number(&f["dep_delay"]).map(|d| d as i64);
            (
                f["origin"].clone(),
                tailnum,
                micros(&f["time_hour"]) - HOUR,
                delay,
            )
        })
        .collect();
    sample.push(sample[10].clone());
    sample.push((
        "JFK".to_owned(),
        Some("NOPLANE".to_owned()),
        sample[3].2,
        None,
    ));
    sample.push(("EWR".to_owned(), None, micros("2012-06-01T00:00:00Z"), None));
    let entity_schema = Schema::new(vec![
        Field::new("origin", DataType::Utf8, false),
        Field::new("tailnum", DataType::Utf8, true),
        Field::new(
            "prediction_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            false,
        ),
        Field::new("dep_delay", DataType::Int64, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            sample.iter().map(|s| s.0.as_str()),
        )),
        Arc::new(StringArray::from(
            sample.iter().map(|s| s.1.clone()).collect::<Vec<_>>(),
        )),
        Arc::new(
            TimestampMicrosecondArray::from(sample.iter().map(|s| s.2).collect::<Vec<_>>())
                .with_timezone("+00:00"),
        ),
        Arc::new(Int64Array::from(
            sample.iter().map(|s| s.3).collect::<Vec<_>>(),
        )),
    ];
    let entities = RecordBatch::try_new(Arc::new(entity_schema), columns).unwrap();

    let outcome = h
        .store
        .training_set(
            &h.tenant,
            &h.project,
            "p",
            TrainingSetRequest {
                entities: EntitySource::Rows {
                    batch: entities,
                    origin: "upload:sample.parquet".to_owned(),
                },
                selection: FeatureSelection {
                    features: None,
                    feature_service: Some("delay_model".to_owned()),
                },
                timestamp_column: Some("prediction_time".to_owned()),
                full_feature_names: true,
                output_dataset: "delay_training".to_owned(),
            },
            "tester",
        )
        .await
        .unwrap();
    assert_eq!(outcome.rows, sample.len() as u64);
    assert!(
        outcome.source.contains("origin_weather@v1(weather@v1)"),
        "{}",
        outcome.source
    );
    assert!(
        outcome.source.contains("entities=upload:sample.parquet"),
        "{}",
        outcome.source
    );
    assert_eq!(
        outcome.columns,
        [
            "origin",
            "tailnum",
            "prediction_time",
            "dep_delay",
            "origin_weather__temp",
            "origin_weather__wind_speed",
            "origin_weather__visib",
            "origin_weather__precip",
            "origin_weather__freezing",
            "plane_attributes__plane_year",
            "plane_attributes__seats",
            "plane_attributes__engines",
            "plane_attributes__manufacturer",
            "origin_delays__dep_delay_mean_3h",
            "origin_delays__departures_3h",
        ]
    );
    let out = h.read_version(&outcome.version).await;
    assert_eq!(out.num_rows(), sample.len());

    // Independent computation from the CSV files.
    let mut weather: HashMap<String, Vec<(i64, Option<f64>)>> = HashMap::new();
    for w in read_csv("weather.csv.gz") {
        weather
            .entry(w["origin"].clone())
            .or_default()
            .push((micros(&w["time_hour"]), number(&w["temp"])));
    }
    let planes: HashMap<String, (Option<f64>, Option<f64>)> = read_csv("planes.csv.gz")
        .into_iter()
        .map(|p| {
            (
                p["tailnum"].clone(),
                (number(&p["year"]), number(&p["seats"])),
            )
        })
        .collect();
    let mut departures: HashMap<String, Vec<(i64, Option<f64>)>> = HashMap::new();
    for f in &flights {
        departures
            .entry(f["origin"].clone())
            .or_default()
            .push((micros(&f["time_hour"]), number(&f["dep_delay"])));
    }

    let column = |name: &str| {
        out.column_by_name(name)
            .unwrap_or_else(|| panic!("column {name}"))
    };
    let temp = column("origin_weather__temp").as_primitive::<Float64Type>();
    let year = column("plane_attributes__plane_year").as_primitive::<Int64Type>();
    let seats = column("plane_attributes__seats").as_primitive::<Int64Type>();
    let mean = column("origin_delays__dep_delay_mean_3h").as_primitive::<Float64Type>();
    let count = column("origin_delays__departures_3h").as_primitive::<Int64Type>();
    let origin = column("origin").as_string::<i32>();
    let label = column("dep_delay").as_primitive::<Int64Type>();
    let get_f =
        |a: &arrow::array::PrimitiveArray<Float64Type>, i: usize| a.is_valid(i).then(|| a.value(i));
    let get_i = |a: &arrow::array::PrimitiveArray<Int64Type>, i: usize| {
        a.is_valid(i).then(|| a.value(i) as f64)
    };

    let mut ambiguous = 0;
    let mut weather_nulls = 0;
    for (i, (airport, tailnum, at, delay)) in sample.iter().enumerate() {
        // Input order and pass-through columns are kept.
        assert_eq!(origin.value(i), airport, "row {i}");
        assert_eq!(label.is_valid(i).then(|| label.value(i)), *delay, "row {i}");

        // Weather: the latest observation in [at - 3h, at]. Observations duplicated at one
        // hour (the DST change) are left unchecked.
        let candidates: Vec<_> = weather[airport]
            .iter()
            .filter(|(t, _)| *t <= *at && *t >= at - 3 * HOUR)
            .collect();
        let latest = candidates.iter().map(|(t, _)| *t).max();
        match latest {
            Some(latest) if candidates.iter().filter(|(t, _)| *t == latest).count() > 1 => {
                ambiguous += 1
            }
            Some(latest) => {
                let expected = candidates.iter().find(|(t, _)| *t == latest).unwrap().1;
                assert!(
                    close(get_f(temp, i), expected),
                    "row {i}: temp {:?} != {expected:?}",
                    get_f(temp, i)
                );
            }
            None => {
                weather_nulls += 1;
                assert!(temp.is_null(i), "row {i}: temp should be NULL");
            }
        }

        // Plane attributes: static, by tail number.
        let plane = tailnum.as_ref().and_then(|t| planes.get(t));
        assert!(
            close(get_i(year, i), plane.and_then(|p| p.0)),
            "row {i}: plane year"
        );
        assert!(
            close(get_i(seats, i), plane.and_then(|p| p.1)),
            "row {i}: seats"
        );

        // Delays: the latest scheduled hour T in [at - 6h, at], then the mean over the
        // flights scheduled in (T - 3h, T].
        let flights_here = &departures[airport];
        let hour = flights_here
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| *t <= *at && *t >= at - 6 * HOUR)
            .max();
        let (expected_mean, expected_count) = match hour {
            None => (None, None),
            Some(hour) => {
                let delays: Vec<f64> = flights_here
                    .iter()
                    .filter(|(t, _)| *t <= hour && *t > hour - 3 * HOUR)
                    .filter_map(|(_, d)| *d)
                    .collect();
                let mean =
                    (!delays.is_empty()).then(|| delays.iter().sum::<f64>() / delays.len() as f64);
                (mean, Some(delays.len() as f64))
            }
        };
        assert!(
            close(get_f(mean, i), expected_mean),
            "row {i}: mean {:?} != {expected_mean:?}",
            get_f(mean, i)
        );
        assert!(close(get_i(count, i), expected_count), "row {i}: count");
    }
    assert!(
        ambiguous < 5,
        "{ambiguous} rows with duplicated weather hours"
    );
    assert!(
        weather_nulls >= 1,
        "the lookup before any data must get NULL weather"
    );
    assert!(temp.is_null(sample.len() - 1));
    assert!(
        year.is_null(sample.len() - 2),
        "an unknown tail number gets NULL"
    );
    h.finish().await;
}
