//! Request extractors that turn every decoding failure into an [`ApiError`] naming the
//! field, instead of axum's plain-text rejections.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use bytes::Bytes;
use ghaf_core::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body decoded into `T`. Rejects a missing or non-JSON content type (`415`), an
/// oversize body (`413`), invalid JSON (`400 malformed_body`, with line and column) and a
/// value of the wrong shape (`400 invalid_argument`, with the path of the field).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "the request body must be JSON: send `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        ErrorCode::PayloadTooLarge,
                        "the request body exceeds the server's limit (http.max_body_bytes)",
                    )
                } else {
                    ApiError::new(
                        ErrorCode::MalformedBody,
                        format!("cannot read the request body: {rejection}"),
                    )
                }
            })?;
        // Every request body is a JSON object; serde would also take a struct as an array.
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|&b| b == b'[') {
            return Err(ApiError::invalid_field(
                ".",
                "the request body must be a JSON object, not an array",
            ));
        }
        decode_json(&bytes).map(ApiJson)
    }
}

/// Decodes JSON bytes into `T`, with errors that name the failing field.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        json_error(&path, &inner)
    })?;
    deserializer
        .end()
        .map_err(|error| json_error(".", &error))?;
    Ok(value)
}

fn json_error(path: &str, error: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            ErrorCode::MalformedBody,
            format!(
                "the request body is not valid JSON: {error}; check the syntax at line {}, column {}",
                error.line(),
                error.column()
            ),
        ),
        Category::Data => {
            let field = if path == "." {
                String::new()
            } else {
                path.to_owned()
            };
            let message = strip_position(&error.to_string());
            let message = if field.is_empty() {
                format!("invalid request body: {message}")
            } else {
                format!("invalid value at `{field}`: {message}")
            };
            ApiError::invalid_field(if field.is_empty() { "." } else { &field }, message)
        }
    }
}

/// Removes serde_json's " at line X column Y" suffix, which adds nothing once the field
/// path is named.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// Query parameters decoded into `T`, rejecting unknown or invalid ones with `400`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|error| {
                let field = error.path().to_string();
                let message = error.into_inner().to_string();
                ApiError::invalid_field(
                    &field,
                    format!("invalid query parameter `{field}`: {message}"),
                )
            })
    }
}

/// Path parameters decoded into `T`, rejecting undecodable segments with `400`.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|rejection| path_error(&rejection))
    }
}

/// Converts a path rejection into an `invalid_argument` error naming the path.
pub fn path_error(rejection: &axum::extract::rejection::PathRejection) -> ApiError {
    ApiError::invalid_field(
        "path",
        format!(
            "invalid path parameter: {}; check the URL encoding",
            rejection.body_text()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: ghaf_core::Name,
        count: u32,
    }

    #[test]
    fn wrong_type_names_the_field() {
        let error = decode_json::<Body>(br#"{"name": "a", "count": "x"}"#).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert_eq!(error.details["field"], "count");
        assert!(error.message.contains("count"), "{}", error.message);
    }

    #[test]
    fn unknown_field_is_named() {
        let error = decode_json::<Body>(br#"{"name": "a", "count": 1, "extra": 2}"#).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert!(error.message.contains("extra"), "{}", error.message);
    }

    #[test]
    fn invalid_name_is_explained() {
        let error = decode_json::<Body>(br#"{"name": "Bad Name", "count": 1}"#).unwrap_err();
        assert_eq!(error.details["field"], "name");
        assert!(error.message.contains("lowercase"), "{}", error.message);
    }

    #[test]
    fn syntax_error_is_malformed_body() {
        let error = decode_json::<Body>(br#"{"name": "#).unwrap_err();
        assert_eq!(error.code, ErrorCode::MalformedBody);
        let trailing = decode_json::<Body>(br#"{"name": "a", "count": 1} x"#).unwrap_err();
        assert_eq!(trailing.code, ErrorCode::MalformedBody);
    }

    #[test]
    fn missing_field_is_reported() {
        let error = decode_json::<Body>(br#"{"name": "a"}"#).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert!(error.message.contains("count"), "{}", error.message);
    }
}
