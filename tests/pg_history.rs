//! The PostgreSQL history against a real server (Debian's postgresql, its
//! own cluster on loopback): decisions written through an outage, spooled
//! and sent once it ends, exactly once each; a node stopped while the
//! database is down sends its spool at the next start. Under CI=true a
//! missing PostgreSQL is a failure.

mod common;

#[path = "common/binary.rs"]
mod binary;
#[path = "common/operator.rs"]
mod operator;
#[path = "common/servers.rs"]
mod servers;

use std::time::Duration;

use common::{Udp, invite};
use operator::{Operator, TOKEN};
use servers::Postgres;

const PG_ENV: &str = "PG_TEST_PASSWORD";

async fn node(pg: &Postgres, name: &str) -> Operator {
    let history = format!(
        "backend = \"postgres\"\nurl = \"{}\"\npassword_env = \"{PG_ENV}\"\n\
         spool_path = \"data/history.spool\"\n",
        pg.url()
    );
    let extra = format!("[cluster]\nnode_id = \"{name}\"\n");
    Operator::start_full(
        "",
        &history,
        &extra,
        Some(TOKEN),
        &[],
        &[(PG_ENV, Postgres::PASSWORD)],
    )
    .await
}

/// (rows, distinct decisions) of `node` in the database.
fn counts(pg: &Postgres, node: &str) -> (u64, u64) {
    let out = pg.query(&format!(
        "SELECT COUNT(*), COUNT(DISTINCT decision_id) FROM decisions WHERE node_id = '{node}'"
    ));
    let mut it = out.trim().split('|').map(|v| v.parse::<u64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// Sends `n` INVITEs at `per_second` without waiting for answers; each is
/// one decision.
async fn load(op: &Operator, tag: &str, n: usize, per_second: u64) {
    let uac = Udp::new().await;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_second));
    for i in 0..n {
        tick.tick().await;
        let from = format!("<sip:+1555{:07}@carrier.example>", i % 10_000_000);
        let msg = invite(uac.addr, "UDP", &format!("z9hG4bK{tag}{i}"), &from, "");
        uac.send(op.sip, &msg).await;
    }
}

async fn wait_for(pg: &Postgres, node: &str, want: u64, within: Duration) -> (u64, u64) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let c = counts(pg, node);
        if c.0 >= want || tokio::time::Instant::now() > deadline {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn metric(op: &Operator, name: &str) -> f64 {
    let (_, text) = op.get("/metrics").await;
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decisions_made_while_postgres_is_down_are_spooled_and_written_once() {
    let Some(pg) = Postgres::start() else { return };
    let op = node(&pg, "pg1").await;
    let calls = 14 * 500;
    // 14 s at 500 calls/s; PostgreSQL is down from the 2nd second to the 12th.
    let run = load(&op, "out", calls, 500);
    let outage = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        pg.stop();
        tokio::time::sleep(Duration::from_secs(10)).await;
        pg.restart();
    };
    tokio::join!(run, outage);
    // Every INVITE that reached the node was screened once (UDP sent in a
    // burst may lose a packet on the way: the node's count is the truth).
    let screened = metric(&op, "sipsentry_calls_total").await as u64;
    assert!(screened >= calls as u64 * 99 / 100, "{screened} of {calls}");
    let (rows, distinct) = wait_for(&pg, "pg1", screened, Duration::from_secs(30)).await;
    assert_eq!(
        (rows, distinct),
        (screened, screened),
        "every decision in PostgreSQL exactly once"
    );
    assert!(
        metric(&op, "sipsentry_history_spooled_total").await > 0.0,
        "the outage went through the spool"
    );
    assert_eq!(metric(&op, "sipsentry_history_dropped_total").await, 0.0);
    assert_eq!(metric(&op, "sipsentry_history_spool_bytes").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_stopped_while_postgres_is_down_sends_its_spool_at_the_next_start() {
    let Some(pg) = Postgres::start() else { return };
    let mut op = node(&pg, "pg2").await;
    load(&op, "before", 50, 200).await;
    assert_eq!(
        wait_for(&pg, "pg2", 50, Duration::from_secs(10)).await.0,
        50
    );
    // The PBX's answers (486, 30 ms apart) reach their rows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = pg.query("SELECT COUNT(*) FROM decisions WHERE final_code = 486");
        if n.trim() == "50" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "final responses: {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pg.stop();
    load(&op, "during", 100, 200).await;
    // SIGTERM with the database down, and a start while it is still down.
    op.restart().await;
    pg.restart();
    let (rows, distinct) = wait_for(&pg, "pg2", 150, Duration::from_secs(20)).await;
    assert_eq!((rows, distinct), (150, 150));
    // `sipsentry history` reads PostgreSQL.
    let out = op.cli(&["history", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 150);
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["node_id"] == "pg2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_only_postgres_is_written_with_its_certificate_verified() {
    let (ca, cert, key) = common::pki::loopback_pki();
    let Some(pg) = Postgres::start_tls(&cert, &key) else {
        return;
    };
    let history = format!(
        "backend = \"postgres\"\nurl = \"{}\"\npassword_env = \"{PG_ENV}\"\n\
         spool_path = \"data/history.spool\"\nca_file = \"ca.pem\"\n",
        pg.url()
    );
    let op = Operator::start_full(
        "",
        &history,
        "[cluster]\nnode_id = \"tls1\"\n",
        Some(TOKEN),
        &[("ca.pem", &ca)],
        &[(PG_ENV, Postgres::PASSWORD)],
    )
    .await;
    load(&op, "tls", 20, 200).await;
    assert_eq!(
        wait_for(&pg, "tls1", 20, Duration::from_secs(10)).await,
        (20, 20)
    );
    let tls = pg.sql("SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'sipsentry' AND s.ssl");
    assert_ne!(tls.trim(), "0", "the node's connections are encrypted");

    // The same database without the CA: TLS is required by the URL and the
    // server's certificate is not trusted, so nothing is read.
    let config = std::fs::read_to_string(op.dir.path().join("sipsentry.toml"))
        .unwrap()
        .replace("ca_file = \"ca.pem\"\n", "")
        .replace("/sipsentry\"", "/sipsentry?sslmode=require\"");
    std::fs::write(op.dir.path().join("untrusted.toml"), config).unwrap();
    let out = op.cli(&["history", "-c", "untrusted.toml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");
}
