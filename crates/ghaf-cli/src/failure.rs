//! Error reporting and exit codes.
//!
//! Exit codes: 0 on success, 1 when the command failed (an API error, an unreachable server,
//! a broken audit chain), 2 when the command line or the configuration is invalid.

use std::process::ExitCode;

use ghaf_client::ClientError;

/// Exit code of a failed command.
pub const EXIT_FAILURE: u8 = 1;

/// Exit code of an invalid command line or configuration, the same code clap uses.
pub const EXIT_USAGE: u8 = 2;

/// An invalid command line, profile or configuration; the process exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Makes a write to a closed stdout (`ghaf ... | head`) end the process quietly with code
/// 0. Rust ignores SIGPIPE, so `println!` to a closed pipe panics with "failed printing to
/// stdout: Broken pipe"; this panic hook exits for that one panic and passes every other
/// panic to the default hook.
pub fn exit_quietly_on_closed_pipe() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
}

/// Prints `error: MESSAGE` to stderr, with the error code and request id of an API error,
/// and returns the exit code for `error`.
pub fn report(error: &anyhow::Error) -> ExitCode {
    eprint!("{}", describe(error));
    ExitCode::from(exit_code(error))
}

/// Formats the lines that [`report`] prints.
pub fn describe(error: &anyhow::Error) -> String {
    let api_error = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<ClientError>());
    let Some(ClientError::Api {
        status,
        code,
        message,
        details,
        request_id,
    }) = api_error
    else {
        return format!("error: {}\n", chain_message(error));
    };

    // The headline is the server's message alone unless a caller added context to it.
    // `anyhow::Error::downcast_ref` also finds an error under context, so check the
    // outermost error of the chain instead.
    let is_top_level = error
        .chain()
        .next()
        .is_some_and(|outer| outer.is::<ClientError>());
    let headline = if is_top_level {
        message.clone()
    } else {
        chain_message(error)
    };
    let mut text = format!("error: {headline}\n  code: {code} (HTTP {status})\n");
    if let Some(request_id) = request_id {
        text.push_str(&format!("  request id: {request_id}\n"));
    }
    let extra_details = match details {
        serde_json::Value::Object(map) => map.iter().any(|(key, _)| key != "request_id"),
        serde_json::Value::Null => false,
        _ => true,
    };
    if extra_details {
        text.push_str(&format!("  details: {details}\n"));
    }
    text
}

/// Joins the messages of the error chain with `: `. The chain stops at a client error,
/// because its message already names its root cause.
fn chain_message(error: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in error.chain() {
        parts.push(cause.to_string());
        if cause.is::<ClientError>() {
            break;
        }
    }
    parts.join(": ")
}

/// Returns 2 for usage and configuration errors and 1 for every other failure.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    let is_usage = error.chain().any(|cause| {
        cause.is::<UsageError>()
            || cause.is::<ghaf_server::config::ConfigError>()
            || matches!(
                cause.downcast_ref::<ClientError>(),
                Some(
                    ClientError::InvalidUrl { .. }
                        | ClientError::InvalidToken
                        | ClientError::InvalidPathSegment { .. }
                )
            )
    });
    if is_usage { EXIT_USAGE } else { EXIT_FAILURE }
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    fn api_error(details: serde_json::Value, request_id: Option<&str>) -> ClientError {
        ClientError::Api {
            status: 401,
            code: "unauthenticated".into(),
            message: "the token is not valid".into(),
            details,
            request_id: request_id.map(str::to_owned),
        }
    }

    #[test]
    fn api_error_shows_code_and_request_id() {
        let error = anyhow::Error::from(api_error(serde_json::Value::Null, Some("req-1")));
        let text = describe(&error);
        assert_eq!(
            text,
            "error: the token is not valid\n  code: unauthenticated (HTTP 401)\n  request id: req-1\n"
        );
        assert_eq!(exit_code(&error), EXIT_FAILURE);
    }

    #[test]
    fn api_error_shows_details_other_than_request_id() {
        let only_id = anyhow::Error::from(api_error(serde_json::json!({"request_id": "r"}), None));
        assert!(!describe(&only_id).contains("details"));

        let with_field = anyhow::Error::from(api_error(serde_json::json!({"field": "name"}), None));
        assert!(describe(&with_field).contains("  details: {\"field\":\"name\"}\n"));
    }

    #[test]
    fn context_is_kept_in_headline() {
        let error = Err::<(), _>(api_error(serde_json::Value::Null, None))
            .context("step 3 failed")
            .unwrap_err();
        let text = describe(&error);
        assert!(
            text.starts_with("error: step 3 failed: the token is not valid"),
            "{text}"
        );
        assert!(text.contains("  code: unauthenticated"), "{text}");
    }

    #[test]
    fn usage_errors_exit_with_2() {
        let usage = anyhow::Error::from(UsageError::new("no token"));
        assert_eq!(exit_code(&usage), EXIT_USAGE);
        assert_eq!(describe(&usage), "error: no token\n");

        let config = anyhow::Error::from(ghaf_server::config::ConfigError::Invalid("x".into()));
        assert_eq!(exit_code(&config), EXIT_USAGE);

        let url = anyhow::Error::from(ClientError::InvalidUrl {
            url: "x".into(),
            reason: "y".into(),
        });
        assert_eq!(exit_code(&url), EXIT_USAGE);
    }

    #[test]
    fn chain_stops_at_client_error() {
        let inner = ClientError::InvalidPathSegment {
            segment: "..".into(),
        };
        let error = Err::<(), _>(inner)
            .context("cannot get project")
            .unwrap_err();
        assert_eq!(
            describe(&error),
            "error: cannot get project: invalid name \"..\": names and ids in a URL path must not be empty, `.` or `..`\n"
        );
    }

    #[test]
    fn other_errors_exit_with_1() {
        assert_eq!(exit_code(&anyhow::anyhow!("disk full")), EXIT_FAILURE);
    }
}
