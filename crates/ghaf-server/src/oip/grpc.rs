//! The gRPC service `inference.GRPCInferenceService`, served on the HTTP port.
//!
//! Model calls (ModelReady, ModelMetadata, ModelInfer) need the `authorization: Bearer
//! <token>` metadata and the `endpoints.infer` action on the project from the
//! `x-ghaf-project` metadata, else the token's project, else the bootstrap project: the same
//! checks the REST route guard makes. ServerLive, ServerReady and ServerMetadata are public.
//!
//! [`service`] checks the bearer token from the request headers before tonic reads the
//! request body, so a caller without a valid token cannot make the server decode a message.
//! The per-project checks need the model name from the message and run after decoding.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;

use axum::extract::State;
use axum::middleware::Next;

use ghaf_auth::{Action, AuthError, Caller};
use ghaf_core::ErrorCode;
use ghaf_core::audit::{AuditOutcome, NewAuditEntry, SYSTEM_CHAIN};
use ghaf_meta::Project;
use ghaf_runtime::{
    DataType, InferRequest, InferResponse, Parameter, RequestedOutput, Tensor, TensorData,
};
use ghaf_serving::{EndpointScope, InferContext, ServingError};
use tonic::metadata::MetadataMap;
use tonic::{Extensions, Request, Response, Status};
use tower::{Layer, Service};

use super::codec::{self, DecodeError, Limits};
use super::proto::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use super::proto::infer_parameter::ParameterChoice;
use super::proto::model_infer_request::InferInputTensor;
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::model_metadata_response::TensorMetadata;
use super::proto::*;
use super::{EXTENSIONS, OipError, SERVER_NAME};
use crate::middleware::PROJECT_HEADER;
use crate::state::AppState;

/// Route of every method of the service on the HTTP router.
pub const ROUTE: &str = "/inference.GRPCInferenceService/{*method}";

/// Methods that need no credentials.
const PUBLIC_METHODS: &[&str] = &["ServerLive", "ServerReady", "ServerMetadata"];

/// Builds the gRPC service for the HTTP router: the bearer-token check of
/// [`authenticate_call`] in front of the tonic server, which rejects request messages larger
/// than `oip.max_body_bytes`.
pub fn service(
    state: AppState,
) -> impl Service<
    axum::extract::Request,
    Response = axum::response::Response,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    let limit = super::limits(&state).max_body_bytes;
    let server = GrpcInferenceServiceServer::new(InferenceService {
        state: state.clone(),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(usize::MAX);
    axum::middleware::from_fn_with_state(state, authenticate_call).layer(server)
}

/// The caller that [`authenticate_call`] authenticated, passed to the service methods in the
/// request extensions.
#[derive(Clone)]
struct AuthenticatedCaller(Caller);

/// Authenticates the bearer token of a model call from its headers, before the body is read.
/// A call without a valid token gets its gRPC status (such as `UNAUTHENTICATED`) in a
/// trailers-only response, and the rejection is audited.
async fn authenticate_call(
    State(state): State<AppState>,
    mut request: axum::extract::Request,
    next: Next,
) -> axum::response::Response {
    let method = request
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    if PUBLIC_METHODS.contains(&method.as_str()) {
        return next.run(request).await;
    }
    let service = InferenceService::new(state);
    let metadata = MetadataMap::from_headers(request.headers().clone());
    match service.authenticate(&metadata).await {
        Ok(caller) => {
            request.extensions_mut().insert(AuthenticatedCaller(caller));
            next.run(request).await
        }
        Err(error) => {
            let status = OipError::new(error.code(), error.to_string()).to_status();
            // The model name is in the unread message.
            service
                .audit_rejection(&error, None, &metadata, &method, "")
                .await;
            status.into_http()
        }
    }
}

/// Implementation of the generated service trait over the server state.
pub struct InferenceService {
    state: AppState,
}

impl InferenceService {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// Authenticates the call, unless [`authenticate_call`] has already done so, and
    /// authorises `endpoints.infer` on its project. Rejections are audited as the REST guard
    /// audits them.
    async fn authorise(
        &self,
        metadata: &MetadataMap,
        extensions: &Extensions,
        method: &str,
        model: &str,
    ) -> Result<(Caller, Project), Status> {
        let authenticated = extensions
            .get::<AuthenticatedCaller>()
            .map(|found| found.0.clone());
        match self.try_authorise(metadata, authenticated).await {
            Ok(found) => Ok(found),
            Err((error, caller)) => {
                let status = OipError::new(error.code(), error.to_string()).to_status();
                self.audit_rejection(&error, caller.as_ref(), metadata, method, model)
                    .await;
                Err(status)
            }
        }
    }

    async fn try_authorise(
        &self,
        metadata: &MetadataMap,
        authenticated: Option<Caller>,
    ) -> Result<(Caller, Project), (AuthError, Option<Caller>)> {
        let caller = match authenticated {
            Some(caller) => caller,
            None => self
                .authenticate(metadata)
                .await
                .map_err(|error| (error, None))?,
        };
        let tenancy = self.state.tenancy();
        let fail = |error: AuthError| (error, Some(caller.clone()));
        let name = self.project_name(metadata, &caller).await.map_err(fail)?;
        let project = tenancy
            .visible_project(&caller, &name)
            .await
            .map_err(fail)?;
        caller
            .authorize_project(Action::EndpointsInfer, &project)
            .map_err(fail)?;
        Ok((caller, project))
    }

    /// Authenticates the bearer token of the `authorization` metadata.
    async fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, AuthError> {
        let token = bearer_token(metadata)?;
        self.state.tenancy().authenticate(token).await
    }

    /// Returns the project name: the `x-ghaf-project` metadata, else the token's project,
    /// else the bootstrap project.
    async fn project_name(
        &self,
        metadata: &MetadataMap,
        caller: &Caller,
    ) -> Result<String, AuthError> {
        if let Some(value) = metadata.get(PROJECT_HEADER) {
            return value
                .to_str()
                .map(|name| name.trim().to_owned())
                .map_err(|_| AuthError::NotFound {
                    what: "project",
                    name: String::from_utf8_lossy(value.as_encoded_bytes()).into_owned(),
                });
        }
        if let Some(id) = &caller.token_project {
            let project = self
                .state
                .store()
                .get_project(&caller.tenant, id)
                .await?
                .ok_or_else(|| AuthError::NotFound {
                    what: "project",
                    name: id.to_string(),
                })?;
            return Ok(project.name);
        }
        Ok(self.state.config().bootstrap.project.clone())
    }

    async fn audit_rejection(
        &self,
        error: &AuthError,
        caller: Option<&Caller>,
        metadata: &MetadataMap,
        method: &str,
        model: &str,
    ) {
        let outcome = if error.is_denial() || error.code() == ErrorCode::NotFound {
            AuditOutcome::Denied
        } else {
            AuditOutcome::Failed
        };
        let mut details = serde_json::json!({
            "method": "grpc",
            "error_code": error.code().as_str(),
        });
        let (mut tenant, mut actor) = (SYSTEM_CHAIN.to_owned(), "anonymous".to_owned());
        if let Some(caller) = caller {
            tenant = caller.tenant.to_string();
            actor = caller.principal.to_string();
            details["principal_name"] = caller.principal_name.clone().into();
            details["token_id"] = caller.token.to_string().into();
        } else if let Some(subject) = error.subject() {
            tenant = subject.tenant.to_string();
            actor = subject.principal.to_string();
            details["token_id"] = subject.token.to_string().into();
        } else if let Some(parsed) = bearer_token(metadata)
            .ok()
            .and_then(ghaf_auth::token::parse)
        {
            details["token_id"] = parsed.id.to_string().into();
        }
        if tenant == SYSTEM_CHAIN && !self.state.system_audit_limiter().try_acquire() {
            self.state.metrics().audit_suppressed();
            return;
        }
        let entry = NewAuditEntry {
            tenant,
            actor,
            action: Action::EndpointsInfer.name().to_owned(),
            resource: if model.is_empty() {
                format!("inference.GRPCInferenceService/{method}")
            } else {
                format!("inference.GRPCInferenceService/{method}/{model}")
            },
            outcome,
            status: error.code().http_status(),
            request_id: ghaf_core::RequestId::generate().to_string(),
            time: ghaf_core::now_millis(),
            details,
        };
        match self.state.store().append_audit(&entry).await {
            Ok(_) => self.state.metrics().audit_appended(entry.outcome.as_str()),
            Err(audit_error) => {
                self.state.metrics().audit_failed();
                tracing::error!(
                    error = %audit_error,
                    tenant = %entry.tenant,
                    actor = %entry.actor,
                    resource = %entry.resource,
                    "cannot append audit entry of a rejected gRPC call"
                );
            }
        }
    }

    fn serving(&self) -> Result<&ghaf_serving::ServingService, Status> {
        self.state
            .serving()
            .map(|service| service.as_ref())
            .ok_or_else(|| OipError::serving_unavailable().to_status())
    }
}

fn bearer_token(metadata: &MetadataMap) -> Result<&str, AuthError> {
    let value = metadata
        .get("authorization")
        .ok_or(AuthError::MissingCredentials)?;
    let value = value.to_str().map_err(|_| AuthError::InvalidToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::InvalidToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MissingCredentials);
    }
    Ok(token.trim())
}

fn scope(project: &Project) -> EndpointScope {
    EndpointScope {
        tenant: project.tenant.clone(),
        project: project.id.clone(),
    }
}

fn version(version: &str) -> Option<&str> {
    (!version.is_empty()).then_some(version)
}

/// Converts a serving error to a status, logging internal errors once with the ids.
fn serving_status(error: ServingError, caller: &Caller, project: &Project, model: &str) -> Status {
    let error = OipError::from(error);
    if error.code.http_status() >= 500 {
        tracing::error!(
            code = error.code.as_str(),
            error = %error.message,
            tenant = %caller.tenant,
            principal = %caller.principal,
            project = %project.id,
            endpoint = model,
            "gRPC inference call failed"
        );
    }
    let mut status = error.to_status();
    if let Some(seconds) = error.retry_after_secs
        && let Ok(value) = seconds.to_string().parse()
    {
        status.metadata_mut().insert("retry-after", value);
    }
    status
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _request: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = match self.state.store().ping().await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "server not ready: the metadata database does not respond");
                false
            }
        };
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: SERVER_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            extensions: EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let (caller, project) = self
            .authorise(&metadata, &extensions, "ModelReady", &message.name)
            .await?;
        let result = self
            .serving()?
            .model_ready(&scope(&project), &message.name, version(&message.version))
            .await;
        let ready = match result {
            Ok(ready) => ready,
            Err(ServingError::NotReady { .. } | ServingError::LoadFailed { .. }) => false,
            Err(error) => return Err(serving_status(error, &caller, &project, &message.name)),
        };
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let (caller, project) = self
            .authorise(&metadata, &extensions, "ModelMetadata", &message.name)
            .await?;
        let found = self
            .serving()?
            .model_metadata(&scope(&project), &message.name, version(&message.version))
            .await
            .map_err(|error| serving_status(error, &caller, &project, &message.name))?;
        let convert = |tensors: Vec<ghaf_runtime::TensorMeta>| {
            tensors
                .into_iter()
                .map(|meta| TensorMetadata {
                    name: meta.name,
                    datatype: meta.datatype.as_str().to_owned(),
                    shape: meta.shape,
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: found.name,
            versions: found.versions,
            platform: found.signature.platform,
            inputs: convert(found.signature.inputs),
            outputs: convert(found.signature.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let (metadata, extensions, mut message) = request.into_parts();
        let model = std::mem::take(&mut message.model_name);
        let model_version = std::mem::take(&mut message.model_version);
        let (caller, project) = self
            .authorise(&metadata, &extensions, "ModelInfer", &model)
            .await?;

        let limits = super::limits(&self.state);
        let infer_request = request_from_proto(message, &limits)
            .map_err(|error| OipError::from(error).to_status())?;
        let request_id = infer_request.id.clone();
        let context = InferContext {
            principal: caller.principal.to_string(),
            headers: forwarded_metadata(&metadata),
        };

        let mut response = self
            .serving()?
            .infer(
                &scope(&project),
                &model,
                version(&model_version),
                infer_request,
                &context,
            )
            .await
            .map_err(|error| serving_status(error, &caller, &project, &model))?;

        if response.id.is_none() {
            response.id = request_id;
        }
        if response.model_name.is_empty() {
            response.model_name = model;
        }
        Ok(Response::new(response_to_proto(response)))
    }
}

/// Returns the call's metadata that serving may route on, without credentials.
fn forwarded_metadata(metadata: &MetadataMap) -> Vec<(String, String)> {
    super::rest::forwarded_headers(&metadata.clone().into_headers())
}

// ---------------------------------------------------------------------------------------
// Conversion between protobuf messages and runtime types
// ---------------------------------------------------------------------------------------

/// Converts a gRPC inference request. Inputs carry typed `contents` or, for all inputs at
/// once, `raw_input_contents` in the binary layout; FP16 works only as raw contents.
pub fn request_from_proto(
    message: ModelInferRequest,
    limits: &Limits,
) -> Result<InferRequest, DecodeError> {
    let raw = message.raw_input_contents;
    if !raw.is_empty() && raw.len() != message.inputs.len() {
        return Err(DecodeError::invalid(format!(
            "raw_input_contents has {} entries but there are {} inputs; send one entry per \
             input, in the order of the inputs",
            raw.len(),
            message.inputs.len()
        )));
    }
    let mut names = HashSet::new();
    let mut inputs = Vec::with_capacity(message.inputs.len());
    for (index, input) in message.inputs.into_iter().enumerate() {
        if !names.insert(input.name.clone()) {
            return Err(DecodeError::invalid(format!(
                "input {:?} appears more than once",
                input.name
            )));
        }
        let name = input.name.clone();
        let tensor =
            convert_input(input, raw.get(index).map(Vec::as_slice), limits).map_err(|error| {
                DecodeError {
                    message: format!("input {name:?}: {}", error.message),
                    too_large: error.too_large,
                }
            })?;
        inputs.push(tensor);
    }
    let mut outputs = Vec::with_capacity(message.outputs.len());
    let mut output_names = HashSet::new();
    for output in message.outputs {
        if output.name.is_empty() {
            return Err(DecodeError::invalid("a requested output has an empty name"));
        }
        if !output_names.insert(output.name.clone()) {
            return Err(DecodeError::invalid(format!(
                "output {:?} is requested more than once",
                output.name
            )));
        }
        let what = format!("output {:?}", output.name);
        outputs.push(RequestedOutput {
            parameters: parameters_from_proto(&what, output.parameters)?,
            name: output.name,
        });
    }
    Ok(InferRequest {
        id: (!message.id.is_empty()).then_some(message.id),
        parameters: parameters_from_proto("request", message.parameters)?,
        inputs,
        outputs,
    })
}

fn convert_input(
    input: InferInputTensor,
    raw: Option<&[u8]>,
    limits: &Limits,
) -> Result<Tensor, DecodeError> {
    if input.name.is_empty() {
        return Err(DecodeError::invalid("the input name is empty"));
    }
    let datatype = codec::parse_datatype(&input.datatype)?;
    let elements = codec::checked_elements(&input.shape, limits)?;
    let data = match raw {
        Some(bytes) => {
            if input.contents.is_some() {
                return Err(DecodeError::invalid(
                    "has contents although the request uses raw_input_contents; use one form \
                     for all inputs",
                ));
            }
            codec::decode_binary(datatype, elements, bytes)?
        }
        None => contents_to_data(datatype, elements, input.contents.unwrap_or_default())?,
    };
    Ok(Tensor {
        name: input.name,
        shape: input.shape,
        data,
        parameters: parameters_from_proto("input", input.parameters)?,
    })
}

/// Converts typed contents: only the field that matches `datatype` may be set, and its
/// length must equal `elements`.
fn contents_to_data(
    datatype: DataType,
    elements: usize,
    contents: InferTensorContents,
) -> Result<TensorData, DecodeError> {
    let filled = [
        ("bool_contents", contents.bool_contents.len()),
        ("int_contents", contents.int_contents.len()),
        ("int64_contents", contents.int64_contents.len()),
        ("uint_contents", contents.uint_contents.len()),
        ("uint64_contents", contents.uint64_contents.len()),
        ("fp32_contents", contents.fp32_contents.len()),
        ("fp64_contents", contents.fp64_contents.len()),
        ("bytes_contents", contents.bytes_contents.len()),
    ];
    let field = match datatype {
        DataType::Bool => "bool_contents",
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "int_contents",
        DataType::Int64 => "int64_contents",
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => "uint_contents",
        DataType::Uint64 => "uint64_contents",
        DataType::Fp32 => "fp32_contents",
        DataType::Fp64 => "fp64_contents",
        DataType::Bytes => "bytes_contents",
        DataType::Fp16 => {
            return Err(DecodeError::invalid(
                "FP16 data has no typed contents field; send it in raw_input_contents",
            ));
        }
    };
    if let Some((name, _)) = filled
        .iter()
        .find(|(name, length)| *name != field && *length > 0)
    {
        return Err(DecodeError::invalid(format!(
            "a {datatype} tensor carries {name}; its elements belong in {field}"
        )));
    }
    let length = filled
        .iter()
        .find(|(name, _)| *name == field)
        .map_or(0, |(_, length)| *length);
    if length != elements {
        return Err(DecodeError::invalid(format!(
            "{field} has {length} elements but the shape implies {elements}"
        )));
    }

    fn narrow<S: Copy + std::fmt::Display, T: TryFrom<S>>(
        values: Vec<S>,
        datatype: DataType,
    ) -> Result<Vec<T>, DecodeError> {
        values
            .into_iter()
            .enumerate()
            .map(|(index, value)| {
                T::try_from(value).map_err(|_| {
                    DecodeError::invalid(format!(
                        "element {index}: {value} is outside the {datatype} range"
                    ))
                })
            })
            .collect()
    }

    Ok(match datatype {
        DataType::Bool => TensorData::Bool(contents.bool_contents),
        DataType::Int8 => TensorData::Int8(narrow(contents.int_contents, datatype)?),
        DataType::Int16 => TensorData::Int16(narrow(contents.int_contents, datatype)?),
        DataType::Int32 => TensorData::Int32(contents.int_contents),
        DataType::Int64 => TensorData::Int64(contents.int64_contents),
        DataType::Uint8 => TensorData::Uint8(narrow(contents.uint_contents, datatype)?),
        DataType::Uint16 => TensorData::Uint16(narrow(contents.uint_contents, datatype)?),
        DataType::Uint32 => TensorData::Uint32(contents.uint_contents),
        DataType::Uint64 => TensorData::Uint64(contents.uint64_contents),
        DataType::Fp32 => TensorData::Fp32(contents.fp32_contents),
        DataType::Fp64 => TensorData::Fp64(contents.fp64_contents),
        DataType::Bytes | DataType::Fp16 => TensorData::Bytes(contents.bytes_contents),
    })
}

fn parameters_from_proto(
    owner: &str,
    parameters: std::collections::HashMap<String, InferParameter>,
) -> Result<BTreeMap<String, Parameter>, DecodeError> {
    let mut converted = BTreeMap::new();
    for (name, parameter) in parameters {
        let value = match parameter.parameter_choice {
            Some(ParameterChoice::BoolParam(value)) => Parameter::Bool(value),
            Some(ParameterChoice::Int64Param(value)) => Parameter::Int(value),
            Some(ParameterChoice::StringParam(value)) => Parameter::String(value),
            Some(ParameterChoice::DoubleParam(value)) => Parameter::Double(value),
            Some(ParameterChoice::Uint64Param(value)) => Parameter::Uint(value),
            None => {
                return Err(DecodeError::invalid(format!(
                    "{owner} parameter {name:?} has no value"
                )));
            }
        };
        converted.insert(name, value);
    }
    Ok(converted)
}

fn parameter_to_proto(parameter: Parameter) -> InferParameter {
    let choice = match parameter {
        Parameter::Bool(value) => ParameterChoice::BoolParam(value),
        Parameter::Int(value) => ParameterChoice::Int64Param(value),
        Parameter::Uint(value) => ParameterChoice::Uint64Param(value),
        Parameter::Double(value) => ParameterChoice::DoubleParam(value),
        Parameter::String(value) => ParameterChoice::StringParam(value),
    };
    InferParameter {
        parameter_choice: Some(choice),
    }
}

/// Converts a response. Every output goes in `raw_output_contents`, as Triton answers, so
/// FP16 and BYTES outputs need no special case.
pub fn response_to_proto(response: InferResponse) -> ModelInferResponse {
    let mut outputs = Vec::with_capacity(response.outputs.len());
    let mut raw = Vec::with_capacity(response.outputs.len());
    for tensor in response.outputs {
        let mut bytes = Vec::with_capacity(codec::binary_size(&tensor.data));
        codec::encode_binary(&tensor.data, &mut bytes);
        raw.push(bytes);
        outputs.push(InferOutputTensor {
            datatype: tensor.datatype().as_str().to_owned(),
            name: tensor.name,
            shape: tensor.shape,
            parameters: tensor
                .parameters
                .into_iter()
                .map(|(name, value)| (name, parameter_to_proto(value)))
                .collect(),
            contents: None,
        });
    }
    ModelInferResponse {
        model_name: response.model_name,
        model_version: response.model_version.unwrap_or_default(),
        id: response.id.unwrap_or_default(),
        parameters: response
            .parameters
            .into_iter()
            .map(|(name, value)| (name, parameter_to_proto(value)))
            .collect(),
        outputs,
        raw_output_contents: raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, datatype: &str, shape: Vec<i64>) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            parameters: Default::default(),
            contents: None,
        }
    }

    #[test]
    fn typed_contents_convert() {
        let mut x = input("x", "INT8", vec![2]);
        x.contents = Some(InferTensorContents {
            int_contents: vec![-1, 7],
            ..Default::default()
        });
        let request = request_from_proto(
            ModelInferRequest {
                id: "a".into(),
                inputs: vec![x],
                ..Default::default()
            },
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(request.id.as_deref(), Some("a"));
        assert_eq!(request.inputs[0].data, TensorData::Int8(vec![-1, 7]));
    }

    #[test]
    fn narrowing_is_checked() {
        let mut x = input("x", "UINT8", vec![1]);
        x.contents = Some(InferTensorContents {
            uint_contents: vec![256],
            ..Default::default()
        });
        let error = request_from_proto(
            ModelInferRequest {
                inputs: vec![x],
                ..Default::default()
            },
            &Limits::default(),
        )
        .unwrap_err();
        assert!(error.message.contains("outside the UINT8 range"), "{error}");
    }

    #[test]
    fn wrong_contents_field_is_named() {
        let mut x = input("x", "FP32", vec![1]);
        x.contents = Some(InferTensorContents {
            fp64_contents: vec![1.0],
            ..Default::default()
        });
        let error = request_from_proto(
            ModelInferRequest {
                inputs: vec![x],
                ..Default::default()
            },
            &Limits::default(),
        )
        .unwrap_err();
        assert!(error.message.contains("fp64_contents"), "{error}");
        assert!(error.message.contains("fp32_contents"), "{error}");
    }

    #[test]
    fn raw_contents_count_must_match_inputs() {
        let error = request_from_proto(
            ModelInferRequest {
                inputs: vec![input("a", "FP32", vec![1]), input("b", "FP32", vec![1])],
                raw_input_contents: vec![1f32.to_le_bytes().to_vec()],
                ..Default::default()
            },
            &Limits::default(),
        )
        .unwrap_err();
        assert!(
            error.message.contains("1 entries but there are 2"),
            "{error}"
        );
    }

    #[test]
    fn raw_fp16_is_accepted() {
        let request = request_from_proto(
            ModelInferRequest {
                inputs: vec![input("h", "FP16", vec![2])],
                raw_input_contents: vec![vec![0x00, 0x3c, 0x00, 0xc0]],
                ..Default::default()
            },
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            request.inputs[0].data,
            TensorData::Fp16(vec![0x3c00, 0xc000])
        );
    }

    #[test]
    fn response_uses_raw_contents() {
        let response = response_to_proto(InferResponse {
            model_name: "m".into(),
            model_version: Some("2".into()),
            id: None,
            parameters: BTreeMap::new(),
            outputs: vec![Tensor::new("y", vec![1], TensorData::Fp64(vec![0.5]))],
        });
        assert_eq!(response.model_version, "2");
        assert_eq!(response.outputs[0].datatype, "FP64");
        assert_eq!(
            response.raw_output_contents,
            vec![0.5f64.to_le_bytes().to_vec()]
        );
    }
}
