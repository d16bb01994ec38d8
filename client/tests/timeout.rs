//! The client times out instead of hanging.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::time::{Duration, Instant};

use client::{Client, ClientError, ClientOptions};

#[tokio::test]
async fn a_node_that_never_answers_gives_a_timeout_not_a_hang() {
    // A listener that accepts and then says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let started = Instant::now();
    let opts = ClientOptions {
        timeout: Duration::from_millis(300),
        client_name: "t".into(),
        ..ClientOptions::default()
    };
    let err = Client::connect(&addr, opts).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains(&addr), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    hold.abort();
}
