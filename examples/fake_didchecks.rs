//! A stand-in DIDChecks API for latency measurements: answers
//! `GET /api/check/{phone}` after `--delay-ms` with a low spam score (so calls
//! are forwarded), or never answers with `--hang`.
//!
//! ```text
//! cargo run --release --example fake_didchecks -- 127.0.0.1:8091 --delay-ms 20
//! ```

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listen = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8091".into());
    let hang = args.iter().any(|a| a == "--hang");
    let delay = args
        .iter()
        .position(|a| a == "--delay-ms")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(20u64);
    let app = Router::new().route(
        "/api/check/{phone}",
        get(move |Path(phone): Path<String>| async move {
            if hang {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(delay)).await;
            axum::Json(serde_json::json!({
                "success": true,
                "data": {"phoneNumber": phone, "huhu": {"isSpam": false, "spamScore": 5, "spamType": "none"}},
                "cost": 1, "balance": 1000
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
    eprintln!("fake DIDChecks on http://{listen}/api (delay {delay} ms, hang {hang})");
    axum::serve(listener, app).await.expect("serve");
}
