//! Lineage events are posted to a configured OpenLineage endpoint: a minimal HTTP server on
//! a free 127.0.0.1 port receives START and COMPLETE of an ingest.

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Accepts HTTP/1.1 POSTs, responds 200, and forwards each request's path and JSON body.
async fn serve(listener: TcpListener, events: mpsc::UnboundedSender<(String, serde_json::Value)>) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let events = events.clone();
        tokio::spawn(async move {
            let mut received = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                let read = socket.read(&mut buffer).await.unwrap_or(0);
                if read == 0 {
                    return;
                }
                received.extend_from_slice(&buffer[..read]);
                let text = String::from_utf8_lossy(&received).into_owned();
                let Some(header_end) = text.find("\r\n\r\n") else {
                    continue;
                };
                let length = text[..header_end]
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                let body_start = header_end + 4;
                if received.len() < body_start + length {
                    continue;
                }
                let path = text
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let body =
                    serde_json::from_slice(&received[body_start..body_start + length]).unwrap();
                let _ = events.send((path, body));
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                return;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_posted_to_endpoint() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/api/v1/lineage", listener.local_addr().unwrap());
    let (sender, mut receiver) = mpsc::unbounded_channel();
    tokio::spawn(serve(listener, sender));

    let mut h = common::harness().await;
    h.service = h.service.clone().with_lineage_endpoint(Some(endpoint));
    h.create("points", "columns: [{name: id, type: integer}]")
        .await;
    let path = h.write("a.csv", b"id\n1\n2\n");
    let outcome = h
        .ingest("points", &path, &common::csv_options())
        .await
        .unwrap();

    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let (path, event) = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
            .await
            .expect("lineage events arrive within 10 s")
            .unwrap();
        assert_eq!(path, "/api/v1/lineage");
        assert_eq!(event["run"]["runId"], outcome.run_id);
        kinds.push(event["eventType"].as_str().unwrap().to_owned());
    }
    kinds.sort();
    assert_eq!(kinds, ["COMPLETE", "START"]);
}
