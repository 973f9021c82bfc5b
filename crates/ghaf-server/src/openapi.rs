//! The OpenAPI 3.1 document, built from the route registry so it lists exactly the routes
//! the server serves.

use std::sync::OnceLock;

use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem,
    PathsBuilder, Ref, Required,
};

use crate::api::{Access, RouteInfo};

/// Builds the document for the given routes.
pub fn document(routes: &[RouteInfo]) -> OpenApi {
    let mut paths = PathsBuilder::new();
    for route in routes {
        let mut operation = OperationBuilder::new()
            .summary(Some(route.summary))
            .operation_id(Some(operation_id(route)));
        if let Access::Action(action) = route.access {
            operation = operation
                .description(Some(format!("Action `{}`.", action.name())))
                .security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        }
        for name in path_parameters(route.path) {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True),
            );
        }
        for (name, description) in route.query {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(*name)
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False)
                    .description(Some(*description)),
            );
        }
        if let Some(schema) = route.request {
            operation = operation.request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(schema)))
                            .build(),
                    )
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        let mut success = ResponseBuilder::new().description("Success");
        if let Some(schema) = route.response {
            success = success.content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(schema)))
                    .build(),
            );
        }
        let error = ResponseBuilder::new()
            .description("Error with a stable code")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        operation = operation
            .response(route.success.to_string(), success.build())
            .response("default", error);
        paths = paths.path(
            route.path,
            PathItem::new(http_method(&route.method), operation.build()),
        );
    }

    let mut components = ComponentsBuilder::new().security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    for (name, schema) in crate::api::schemas() {
        components = components.schema(name, schema);
    }

    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Ghaf API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Ghaf's own REST API. Errors are `{\"error\": {\"code\", \"message\", \"details\"}}` \
                     with codes from one stable table.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components.build()))
        .build()
}

/// Returns the document for the full API, rendered once.
pub fn document_json() -> String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let routes = crate::app::route_table();
        serde_json::to_string_pretty(&document(&routes)).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot render the OpenAPI document");
            "{}".into()
        })
    })
    .clone()
}

fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

fn operation_id(route: &RouteInfo) -> String {
    let mut id = route.method.as_str().to_ascii_lowercase();
    for segment in route
        .path
        .split('/')
        .filter(|s| !s.is_empty() && *s != "api" && *s != "v1")
    {
        id.push('_');
        id.push_str(&segment.replace(['{', '}'], "").replace(['-', '.'], "_"));
    }
    id
}

fn http_method(method: &axum::http::Method) -> HttpMethod {
    match *method {
        axum::http::Method::POST => HttpMethod::Post,
        axum::http::Method::PUT => HttpMethod::Put,
        axum::http::Method::PATCH => HttpMethod::Patch,
        axum::http::Method::DELETE => HttpMethod::Delete,
        axum::http::Method::HEAD => HttpMethod::Head,
        axum::http::Method::OPTIONS => HttpMethod::Options,
        _ => HttpMethod::Get,
    }
}
