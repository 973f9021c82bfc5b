//! The `/api/v1` routes and the registry that builds the router from them.
//!
//! Every route is declared once, as a [`RouteInfo`] with the [`Action`] it performs (or
//! [`Access::Public`]). The registry wraps each non-public route in the guard that
//! authenticates, authorises and audits, and the same list feeds the OpenAPI document and the
//! authorisation-matrix test, so no route can exist without a decision about who may call it.

mod audit;
pub mod datasets;
pub mod endpoints;
pub mod features;
pub mod jobs;
pub mod lineage;
pub mod mlflow;
pub mod monitor;
pub mod rollouts;
mod system;
mod tenancy;
mod tokens;
mod tracking;
pub mod views;

use std::collections::BTreeMap;

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter};
use ghaf_auth::Action;

use crate::middleware::{self, Guard};
use crate::state::AppState;

/// The access rule of a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed: health, readiness, metrics and the API description.
    Public,
    /// A bearer token whose caller may perform the action.
    Action(Action),
}

/// Description of one route, used for routing, authorisation, OpenAPI and tests.
#[derive(Clone, Debug)]
pub struct RouteInfo {
    pub method: Method,
    /// axum path template, such as `/api/v1/projects/{project}`.
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    /// Schema name of the JSON request body, if the route takes one.
    pub request: Option<&'static str>,
    /// Schema name of the JSON response body; `None` for empty or non-JSON responses.
    pub response: Option<&'static str>,
    /// Status of a successful response.
    pub success: u16,
    /// Query parameters: name and description.
    pub query: &'static [(&'static str, &'static str)],
    /// An MLflow-compatible route: the project comes from the `X-Ghaf-Project` header, else
    /// the token's project, else the bootstrap project, and errors have MLflow's body and
    /// statuses.
    pub mlflow: bool,
    /// A Feast-compatible route whose path names no project: the project is chosen as on
    /// MLflow routes, but errors keep Ghaf's body.
    pub project_from_header: bool,
    /// An Open Inference Protocol route: errors have the protocol's `{"error": "<message>"}`
    /// body.
    pub oip: bool,
    /// The handler appends the route's audit entry in the transaction of its change (see
    /// [`crate::middleware::AuditInTransaction`]), so the guard skips its check of the audit
    /// chain before the call.
    pub audit_in_transaction: bool,
}

impl RouteInfo {
    pub fn new(method: Method, path: &'static str, access: Access, summary: &'static str) -> Self {
        Self {
            method,
            path,
            access,
            summary,
            request: None,
            response: None,
            success: 200,
            query: &[],
            mlflow: false,
            project_from_header: false,
            oip: false,
            audit_in_transaction: false,
        }
    }

    /// Marks the route as appending its audit entry in its own transaction (see
    /// [`RouteInfo::audit_in_transaction`]).
    pub fn audit_in_transaction(mut self) -> Self {
        self.audit_in_transaction = true;
        self
    }

    /// Marks the route as MLflow-compatible (see [`RouteInfo::mlflow`]).
    pub fn mlflow(mut self) -> Self {
        self.mlflow = true;
        self
    }

    /// Takes the project from the `X-Ghaf-Project` header (see
    /// [`RouteInfo::project_from_header`]).
    pub fn project_from_header(mut self) -> Self {
        self.project_from_header = true;
        self
    }

    /// Marks the route as an Open Inference Protocol route (see [`RouteInfo::oip`]).
    pub fn oip(mut self) -> Self {
        self.oip = true;
        self
    }

    pub fn request(mut self, schema: &'static str) -> Self {
        self.request = Some(schema);
        self
    }

    pub fn response(mut self, schema: &'static str) -> Self {
        self.response = Some(schema);
        self
    }

    pub fn status(mut self, success: u16) -> Self {
        self.success = success;
        self
    }

    pub fn query(mut self, params: &'static [(&'static str, &'static str)]) -> Self {
        self.query = params;
        self
    }
}

/// Builds one route's method router once the state is known.
type RouteBuilder = Box<dyn FnOnce(AppState) -> MethodRouter<AppState> + Send>;

/// Collects routes and builds the router from them.
#[derive(Default)]
pub struct ApiRouter {
    routes: Vec<RouteInfo>,
    builders: Vec<(&'static str, RouteBuilder)>,
}

impl ApiRouter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route. Non-public routes are wrapped in the guard for their action.
    pub fn add<H, T>(&mut self, info: RouteInfo, handler: H)
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(info.method.clone())
            .unwrap_or_else(|_| panic!("unsupported method {} on {}", info.method, info.path));
        let access = info.access;
        let mlflow_route = info.mlflow;
        let project_from_header = info.project_from_header;
        let audit_in_transaction = info.audit_in_transaction;
        let oip_route = info.oip;
        let build: RouteBuilder = Box::new(move |state: AppState| {
            let method_router: MethodRouter<AppState> = axum::routing::on(filter, handler);
            let method_router = match access {
                Access::Public => method_router,
                Access::Action(action) => {
                    let guard = Guard {
                        state,
                        action,
                        mlflow: mlflow_route,
                        project_from_header,
                        audit_in_transaction,
                    };
                    method_router.route_layer(axum::middleware::from_fn_with_state(
                        guard,
                        middleware::guard,
                    ))
                }
            };
            if mlflow_route {
                method_router.route_layer(axum::middleware::from_fn(mlflow::error_layer))
            } else if oip_route {
                method_router.route_layer(axum::middleware::from_fn(crate::oip::error_layer))
            } else {
                method_router
            }
        });
        self.builders.push((info.path, build));
        self.routes.push(info);
    }

    pub fn routes(&self) -> &[RouteInfo] {
        &self.routes
    }

    /// Builds the router that serves every added route.
    pub fn into_router(self, state: AppState) -> Router<AppState> {
        let mut by_path: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
        for (path, build) in self.builders {
            let method_router = build(state.clone());
            let merged = match by_path.remove(path) {
                Some(existing) => existing.merge(method_router),
                None => method_router,
            };
            by_path.insert(path, merged);
        }
        let mut router = Router::new();
        for (path, method_router) in by_path {
            router = router.route(path, method_router.fallback(middleware::method_not_allowed));
        }
        router
    }
}

/// Registers every route of the API.
pub fn register_all(api: &mut ApiRouter) {
    system::register(api);
    tenancy::register(api);
    tokens::register(api);
    audit::register(api);
    datasets::register(api);
    endpoints::register(api);
    features::register(api);
    jobs::register(api);
    lineage::register(api);
    mlflow::register(api);
    monitor::register(api);
    rollouts::register(api);
    tracking::register(api);
    crate::oip::register(api);
}

/// Returns every schema referenced by a route, for the OpenAPI document.
pub fn schemas() -> Vec<(
    String,
    utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
)> {
    use views::*;

    fn entry<T: utoipa::ToSchema>() -> (
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    ) {
        (T::name().into_owned(), T::schema())
    }

    vec![
        entry::<ghaf_core::ErrorBody>(),
        entry::<ghaf_core::error::ErrorDetail>(),
        entry::<TenantView>(),
        entry::<TenantList>(),
        entry::<CreateTenantRequest>(),
        entry::<CreatedTenant>(),
        entry::<ProjectView>(),
        entry::<ProjectList>(),
        entry::<CreateProjectRequest>(),
        entry::<PrincipalView>(),
        entry::<PrincipalList>(),
        entry::<CreatePrincipalRequest>(),
        entry::<TokenView>(),
        entry::<TokenList>(),
        entry::<IssuedTokenView>(),
        entry::<CreateTokenRequest>(),
        entry::<RoleBindingView>(),
        entry::<RoleBindingList>(),
        entry::<GrantRoleRequest>(),
        entry::<GrantMemberRequest>(),
        entry::<WhoamiView>(),
        entry::<PrincipalRef>(),
        entry::<AuditPage>(),
        entry::<AuditEntryView>(),
        entry::<ghaf_core::audit::AuditOutcome>(),
        entry::<ghaf_auth::audit::ChainReport>(),
        entry::<AuditVerifyView>(),
        entry::<HealthView>(),
        entry::<mlflow::MlflowMessage>(),
        entry::<tracking::ExperimentView>(),
        entry::<tracking::ExperimentList>(),
        entry::<tracking::RunView>(),
        entry::<tracking::RunList>(),
        entry::<tracking::RegisteredModelView>(),
        entry::<tracking::ModelList>(),
        entry::<tracking::ManifestFileView>(),
        entry::<tracking::ModelVersionView>(),
        entry::<tracking::ModelVersionList>(),
        entry::<tracking::VerificationView>(),
        entry::<tracking::ModelCardRequest>(),
        entry::<tracking::SetAliasRequest>(),
        entry::<datasets::CreateDatasetRequest>(),
        entry::<datasets::UpdateSchemaRequest>(),
        entry::<datasets::DatasetView>(),
        entry::<datasets::DatasetList>(),
        entry::<datasets::SchemaVersionView>(),
        entry::<datasets::DatasetVersionView>(),
        entry::<datasets::DatasetVersionList>(),
        entry::<datasets::IngestResponse>(),
        entry::<datasets::PushResponse>(),
        entry::<lineage::LineagePage>(),
        entry::<features::ApplyFeaturesRequest>(),
        entry::<features::FeaturePlanView>(),
        entry::<features::FeatureRegistryView>(),
        entry::<features::FeatureViewVersionsView>(),
        entry::<features::TrainingSetBody>(),
        entry::<features::TrainingSetView>(),
        entry::<features::MaterializeBody>(),
        entry::<features::MaterializeView>(),
        entry::<features::OnlineFeaturesRequest>(),
        entry::<features::OnlineFeaturesResponse>(),
        entry::<features::FeaturePushRequest>(),
        entry::<features::FeaturePushResponse>(),
        entry::<jobs::JobSpecBody>(),
        entry::<jobs::JobView>(),
        entry::<jobs::JobList>(),
        entry::<monitor::MonitorSpecBody>(),
        entry::<monitor::AlertRuleSpecBody>(),
        entry::<monitor::MonitorView>(),
        entry::<monitor::MonitorList>(),
        entry::<monitor::EvaluationView>(),
        entry::<monitor::ReportList>(),
        entry::<monitor::AlertRuleView>(),
        entry::<monitor::AlertRuleList>(),
        entry::<monitor::CreatedAlertRuleView>(),
        entry::<monitor::AlertView>(),
        entry::<monitor::AlertList>(),
        entry::<monitor::DeliveryView>(),
        entry::<monitor::DeliveryList>(),
        entry::<monitor::DriftRequest>(),
        entry::<monitor::DriftView>(),
        entry::<endpoints::CreateEndpointRequest>(),
        entry::<endpoints::UpdateEndpointRequest>(),
        entry::<endpoints::EndpointView>(),
        entry::<endpoints::EndpointList>(),
        entry::<endpoints::PolicyRequest>(),
        entry::<endpoints::EndpointStatsView>(),
        entry::<endpoints::LabelsRequest>(),
        entry::<endpoints::LabelsResponse>(),
        entry::<endpoints::PredictionList>(),
        entry::<rollouts::StartRolloutRequest>(),
        entry::<rollouts::RolloutView>(),
        entry::<rollouts::EndpointHistory>(),
        entry::<rollouts::AnalysisView>(),
    ]
}

pub use audit::AuditVerifyView;
