//! A deployed endpoint for the Open Inference Protocol tests: a GBDT trained by ghaf-train,
//! registered as a signed model version in the bootstrap project `default`, and served by
//! the endpoint `scorer`.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use ghaf_serving::{DeploySpec, EndpointScope};
use ghaf_tracking::{NewLoggedModel, NewRun, RegisterVersion, Scope};
use ghaf_train::{Column, Dataset, GbdtParams, Model, train_gbdt};

use crate::common::TestApp;

pub const ENDPOINT: &str = "scorer";

/// The deployed endpoint and the model behind it, to compute expected predictions.
pub struct Deployed {
    pub scope: EndpointScope,
    pub model: Model,
    pub version: i64,
    pub input: String,
    pub output: String,
}

/// Trains a GBDT over `amount` and `age` whose label is `amount > 0.5`.
fn trained_model() -> Model {
    let rows = 300;
    let first: Vec<f64> = (0..rows).map(|i| (i as f64 * 0.37).sin()).collect();
    let second: Vec<f64> = (0..rows).map(|i| (i % 50) as f64).collect();
    let label: Vec<f64> = first.iter().map(|&v| f64::from(v > 0.5)).collect();
    let data = Dataset::new(
        vec![Column::f64("amount", first), Column::f64("age", second)],
        label,
    )
    .unwrap();
    let params = GbdtParams {
        n_estimators: 8,
        ..GbdtParams::default()
    };
    Model::Gbdt(train_gbdt(&data, None, &params).unwrap().model)
}

/// Trains, registers and deploys the model as endpoint `scorer`, and waits until it is
/// ready.
pub async fn deploy(app: &TestApp) -> Deployed {
    let project = app
        .state
        .store()
        .get_project_by_name(&ghaf_core::TenantId::from_stored("default"), "default")
        .await
        .unwrap()
        .expect("bootstrap project");
    let scope = Scope {
        tenant: project.tenant.clone(),
        project: project.id.clone(),
    };
    let tracking = app.state.tracking().expect("tracking service").clone();
    let store = tracking.store();
    let run = store.create_run(&scope, &NewRun::default()).await.unwrap();
    let logged = store
        .create_logged_model(
            &scope,
            &NewLoggedModel {
                name: "model".into(),
                source_run_id: run.info.run_id.clone(),
                ..NewLoggedModel::default()
            },
        )
        .await
        .unwrap();
    let model = trained_model();
    let prefix = ghaf_tracking::artifact_uri_path(&logged.artifact_uri).unwrap();
    let files = [
        (
            "MLmodel",
            b"flavors:\n  ghaf:\n    model_file: model.ghaf\n".to_vec(),
        ),
        ("model.ghaf", model.to_bytes()),
    ];
    for (file, content) in files {
        tracking
            .put_artifact(
                &scope,
                &format!("{prefix}/{file}"),
                futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(content))]),
            )
            .await
            .unwrap();
    }
    store
        .create_registered_model(&scope, "scorer-model", "", "admin", &[])
        .await
        .unwrap();
    let version = tracking
        .register_version(
            &scope,
            &RegisterVersion {
                name: "scorer-model".into(),
                source: format!("models:/{}", logged.model_id),
                run_id: run.info.run_id.clone(),
                model_id: logged.model_id.clone(),
                ..RegisterVersion::default()
            },
        )
        .await
        .unwrap()
        .version;

    let serving = app.state.serving().expect("serving service").clone();
    let scope = EndpointScope {
        tenant: project.tenant.clone(),
        project: project.id.clone(),
    };
    let spec = DeploySpec {
        model: "scorer-model".into(),
        version,
        ..DeploySpec::default()
    };
    serving
        .create(&scope, "default", ENDPOINT, &spec, "admin")
        .await
        .unwrap();
    for _ in 0..600 {
        if serving
            .model_ready(&scope, ENDPOINT, None)
            .await
            .unwrap_or(false)
        {
            let metadata = serving
                .model_metadata(&scope, ENDPOINT, None)
                .await
                .unwrap();
            return Deployed {
                scope,
                model,
                version,
                input: metadata.signature.inputs[0].name.clone(),
                output: metadata.signature.outputs[0].name.clone(),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = serving.get(&scope, ENDPOINT).await.unwrap();
    panic!("endpoint {ENDPOINT} is not ready: {:?}", info.status);
}

impl Deployed {
    /// Returns the model's predictions for rows of two features.
    pub fn predict(&self, rows: &[[f64; 2]]) -> Vec<f64> {
        rows.iter().map(|row| self.model.predict(row)).collect()
    }
}
