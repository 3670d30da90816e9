//! Embedding the proxy with a reputation source of your own.
//!
//! The screening pipeline takes local sources (answered from memory on the
//! packet path, like the Hiya cache) and live sources (async, within the
//! lookup budget). This example scores one number as a known robocaller and
//! runs the proxy on the default addresses:
//!
//!     cargo run --example custom_source
//!     sipsentry bench --uas 127.0.0.1:5080 &
//!     echo "+15557654321" > callers.txt
//!     sipsentry bench --target 127.0.0.1:5060 --callers callers.txt --count 5

use std::sync::Arc;

use sipsentry::config::Config;
use sipsentry::pipeline::Pipeline;
use sipsentry::reputation::{Evidence, LocalSource, Source};
use sipsentry::server::Server;

struct KnownRobocaller;

impl LocalSource for KnownRobocaller {
    fn lookup(&self, e164: &str) -> Option<Evidence> {
        (e164 == "+15557654321").then(|| Evidence {
            source: Source::Custom,
            score: 95,
            category: Some("Robocaller".into()),
            cached: false,
            latency_us: 0,
            raw: serde_json::json!({ "list": "example" }).into(),
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Arc::new(Config::load(None)?);
    let pipeline = Pipeline::new(Arc::new(config.policy()?)).with_local(Arc::new(KnownRobocaller));
    let server = Server::bind(config.sip.clone(), Arc::new(pipeline)).await?;
    eprintln!(
        "screening on {}; +15557654321 is rejected (score 95)",
        server.local_addr()
    );
    server.run(sipsentry::cli::shutdown_signal()).await;
    Ok(())
}
