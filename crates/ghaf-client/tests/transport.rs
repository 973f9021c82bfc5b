//! Client behaviour against a canned HTTP responder on 127.0.0.1: headers sent, request ids
//! read, error bodies and connection failures.

use ghaf_client::{AuditFilter, Client, ClientError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Serves one connection with `response` and returns the request head it received.
async fn serve_once(response: String) -> (String, oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (sender, receiver) = oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buffer = [0u8; 1024];
        while !head.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = socket.read(&mut buffer).await.unwrap();
            if read == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..read]);
        }
        socket.write_all(response.as_bytes()).await.unwrap();
        socket.shutdown().await.unwrap();
        let _ = sender.send(String::from_utf8_lossy(&head).into_owned());
    });
    (url, receiver)
}

fn http_response(status: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut response = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(body);
    response
}

#[tokio::test]
async fn sends_token_and_user_agent() {
    let body = r#"{"status":"ok"}"#;
    let (url, head) = serve_once(http_response(
        "200 OK",
        &[("content-type", "application/json")],
        body,
    ))
    .await;
    let client = Client::new(&url, Some("ghaf_abc_def".into())).unwrap();

    let response = client.healthz().await.unwrap();
    let head = head.await.unwrap().to_ascii_lowercase();

    assert_eq!(response.value.status, "ok");
    assert_eq!(response.body, body);
    assert!(head.starts_with("get /healthz "), "{head}");
    assert!(
        head.contains("authorization: bearer ghaf_abc_def"),
        "{head}"
    );
    assert!(
        head.contains(&format!("user-agent: ghaf/{}", env!("CARGO_PKG_VERSION"))),
        "{head}"
    );
}

#[tokio::test]
async fn success_captures_request_id() {
    let response = http_response(
        "200 OK",
        &[("x-request-id", "req-42")],
        r#"{"status":"ready"}"#,
    );
    let (url, _head) = serve_once(response).await;
    let client = Client::new(&url, None).unwrap();

    let response = client.readyz().await.unwrap();

    assert_eq!(response.request_id.as_deref(), Some("req-42"));
}

#[tokio::test]
async fn error_body_becomes_api_error() {
    let body = r#"{"error":{"code":"unauthenticated","message":"the token is not valid"}}"#;
    let (url, _head) = serve_once(http_response(
        "401 Unauthorized",
        &[("x-request-id", "req-7")],
        body,
    ))
    .await;
    let client = Client::new(&url, Some("bad".into())).unwrap();

    let error = client.whoami().await.unwrap_err();

    assert_eq!(error.code(), Some("unauthenticated"));
    assert_eq!(error.status(), Some(401));
    assert_eq!(error.request_id(), Some("req-7"));
}

#[tokio::test]
async fn text_error_body_is_kept() {
    let (url, _head) = serve_once(http_response("502 Bad Gateway", &[], "no upstream")).await;
    let client = Client::new(&url, None).unwrap();

    let error = client.list_projects().await.unwrap_err();

    let ClientError::Api { code, message, .. } = error else {
        panic!("expected an API error, got {error:?}");
    };
    assert_eq!(code, "http_502");
    assert_eq!(message, "no upstream");
}

#[tokio::test]
async fn wrong_json_is_decode_error() {
    let (url, _head) = serve_once(http_response("200 OK", &[], r#"{"projects": 5}"#)).await;
    let client = Client::new(&url, None).unwrap();

    let error = client.list_projects().await.unwrap_err();

    assert!(matches!(error, ClientError::Decode { .. }), "{error:?}");
    assert!(error.to_string().contains("/api/v1/projects"), "{error}");
}

#[tokio::test]
async fn empty_success_body_decodes_as_unit() {
    let (url, head) = serve_once(http_response("204 No Content", &[], "")).await;
    let client = Client::new(&url, Some("t".into())).unwrap();

    let response = client
        .revoke_role("ana", ghaf_core::Role::Auditor, Some("fraud detection"))
        .await
        .unwrap();
    let head = head.await.unwrap();

    assert_eq!(response.body, "");
    assert!(
        head.starts_with("DELETE /api/v1/role-bindings/ana/auditor?project=fraud+detection "),
        "{head}"
    );
}

#[tokio::test]
async fn audit_filter_becomes_query() {
    let (url, head) = serve_once(http_response(
        "200 OK",
        &[],
        r#"{"entries":[],"next_after":null}"#,
    ))
    .await;
    let client = Client::new(&url, Some("t".into())).unwrap();
    let filter = AuditFilter {
        action: Some("projects.create".into()),
        since: Some("2026-01-01T00:00:00Z".into()),
        limit: Some(5),
        ..AuditFilter::default()
    };

    let page = client.list_audit(&filter).await.unwrap().value;
    let head = head.await.unwrap();

    assert!(page.entries.is_empty());
    assert!(
        head.starts_with(
            "GET /api/v1/audit?action=projects.create&since=2026-01-01T00%3A00%3A00Z&limit=5 "
        ),
        "{head}"
    );
}

#[tokio::test]
async fn closed_port_is_connect_error() {
    // Binding and dropping a listener leaves a port that refuses connections.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = Client::new(&url, None).unwrap();

    let error = client.healthz().await.unwrap_err();

    assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("not reachable"), "{message}");
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("ghaf server"), "{message}");
    assert!(message.contains("--url"), "{message}");
}
