//! Many nodes, one view, against real servers: three sipsentry nodes behind
//! Debian's Kamailio (dispatcher, round robin) share one Redis. A fake
//! DIDChecks counts what it is asked. Under CI=true a missing kamailio or
//! redis-server is a failure.

mod common;

#[path = "common/binary.rs"]
mod binary;
#[path = "common/operator.rs"]
mod operator;
#[path = "common/servers.rs"]
mod servers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::fakes::{self, DC_TOKEN, dc_data};
use common::{Udp, invite, status};
use hmac::{Hmac, KeyInit, Mac};
use operator::{Operator, TOKEN};
use servers::{Postgres, Redis};

const DC_ENV: &str = "CLUSTER_TEST_DC_TOKEN";
const SECRET_ENV: &str = "CLUSTER_TEST_WEBHOOK_SECRET";
const SECRET: &str = "whsec_cluster";
const PG_ENV: &str = "CLUSTER_TEST_PG_PASSWORD";
const REDIS_PASSWORD: &str = "redis-test-password";

/// A node named `name` sharing `redis` (and, with `pg`, one PostgreSQL
/// history), looking up with DIDChecks at `dc`.
async fn node(name: &str, redis: &str, dc: &str, pg: Option<&Postgres>) -> Operator {
    let config = format!(
        "[cluster]\nredis_url = \"{redis}\"\nnode_id = \"{name}\"\nredis_timeout_ms = 250\n\
         [providers.didchecks]\nenabled = true\nbase_url = \"{dc}\"\ntoken_env = \"{DC_ENV}\"\n\
         webhook_secret_env = \"{SECRET_ENV}\"\n[policy]\nlookup_budget_ms = 2000\n"
    );
    let history = pg.map_or(String::new(), |pg| {
        format!(
            "backend = \"postgres\"\nurl = \"{}\"\npassword_env = \"{PG_ENV}\"\n\
             spool_path = \"data/history.spool\"\n",
            pg.url()
        )
    });
    Operator::start_full(
        "",
        &history,
        &config,
        Some(TOKEN),
        &[],
        &[
            (DC_ENV, DC_TOKEN),
            (SECRET_ENV, SECRET),
            (PG_ENV, Postgres::PASSWORD),
        ],
    )
    .await
}

/// One INVITE from `number` to `target`; the final response code.
async fn call(uac: &Udp, target: SocketAddr, tag: &str, number: &str) -> u16 {
    let branch = format!("z9hG4bKcl{tag}");
    let from = format!("<sip:{number}@carrier.example>");
    uac.send(target, &invite(uac.addr, "UDP", &branch, &from, ""))
        .await;
    let call_id = format!("{branch}@test");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Some((m, _)) = uac
        .recv_within(deadline - tokio::time::Instant::now())
        .await
    {
        if m.contains(&call_id) && status(&m) >= 200 {
            return status(&m);
        }
    }
    0
}

fn sign(body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn status_changed(number: &str, score: u8) -> String {
    serde_json::json!({
        "event": "spam_status_changed", "timestamp": "2026-01-24T10:30:00Z",
        "data": {"routineId": "routine_cluster", "phoneNumber": number,
                 "previousStatus": {"isSpam": false, "spamScore": 20},
                 "currentStatus": {"isSpam": true, "spamScore": score, "spamType": "Scam"}}
    })
    .to_string()
}

/// A metric's value in a node's `/metrics` (summed over label sets matching
/// `labels`).
async fn metric(node: &Operator, name: &str, labels: &str) -> f64 {
    let (_, text) = node.get("/metrics").await;
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn numbers() -> Vec<String> {
    (0..10).map(|i| format!("+3361000{i:04}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_behind_kamailio_pay_once_share_one_history_lists_and_webhooks() {
    if !binary::installed("kamailio", "kamailio") {
        return;
    }
    let Some(redis) = Redis::start() else { return };
    let Some(pg) = Postgres::start() else { return };
    let dc = fakes::didchecks().await;
    // Slow enough that the calls of one round overlap on every node.
    dc.state.set_delay(Duration::from_millis(60));
    for n in numbers() {
        dc.state.answer(&n, dc_data(&n, 20, "Telemarketing"));
    }
    let mut nodes = Vec::new();
    for name in ["node1", "node2", "node3"] {
        nodes.push(node(name, &redis.url(), &dc.base, Some(&pg)).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let kam_port = binary::free_port();
    let sips: Vec<SocketAddr> = nodes.iter().map(|n| n.sip).collect();
    let _kam = binary::kamailio_dispatcher(dir.path(), kam_port, &sips);
    let kam: SocketAddr = format!("127.0.0.1:{kam_port}").parse().unwrap();

    // 30 rounds; in each, 10 trunks call at once from the same number, so a
    // number's first calls miss on several nodes together.
    let trunks: Vec<Arc<Udp>> = futures_join(10, |_| async { Arc::new(Udp::new().await) }).await;
    let mut codes = Vec::new();
    for round in 0..30 {
        let number = numbers()[round % 10].clone();
        let calls = trunks.iter().enumerate().map(|(w, uac)| {
            let (uac, number) = (Arc::clone(uac), number.clone());
            tokio::spawn(async move { call(&uac, kam, &format!("r{round}w{w}"), &number).await })
        });
        for c in calls.collect::<Vec<_>>() {
            codes.push(c.await.unwrap());
        }
    }
    assert_eq!(codes.len(), 300);
    assert!(
        codes.iter().all(|&c| c == 486),
        "every call passed to the PBX (486): {codes:?}"
    );
    assert_eq!(
        dc.state.count("/check/"),
        10,
        "one paid lookup per number across the cluster"
    );
    // Every node screened some of them.
    let mut screened = 0.0;
    for n in &nodes {
        let here = metric(n, "sipsentry_calls_total", "").await;
        assert!(here > 0.0, "a node got no call");
        screened += here;
    }
    assert!(screened >= 300.0, "{screened}");
    let shared_hits = {
        let mut sum = 0.0;
        for n in &nodes {
            sum += metric(n, "sipsentry_cluster_shared_total", "kind=\"hit\"").await;
        }
        sum
    };
    assert!(
        shared_hits >= 1.0,
        "nodes answered from each other's lookups"
    );

    // All 300 decisions in PostgreSQL, each with the node that made it.
    let per_node = wait_rows(&pg, 300).await;
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    assert_eq!(
        per_node.iter().map(|(_, n)| n).sum::<u64>(),
        300,
        "{per_node:?}"
    );
    // Any node's `sipsentry history` shows them all.
    let out = nodes[2].cli(&["history", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 300);
    for name in ["node1", "node2", "node3"] {
        assert!(
            rows.iter().any(|r| r["node_id"] == name),
            "{name}'s calls shown on node 3"
        );
    }
    // And its API.
    let (code, body) = nodes[0].get("/api/v1/history?limit=1").await;
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["total"],
        300
    );

    // A deny entry added on node 1 rejects the next call on node 3.
    let denied = "+33699999999";
    let (code, _) = nodes[0]
        .post_json(
            "/api/v1/lists/deny",
            serde_json::json!({"pattern": denied, "comment": "cluster test"}),
        )
        .await;
    assert_eq!(code, 201);
    let uac = Udp::new().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut code = 0;
    let mut attempt = 0;
    while tokio::time::Instant::now() < deadline {
        code = call(&uac, nodes[2].sip, &format!("deny{attempt}"), denied).await;
        if code == 603 {
            break;
        }
        attempt += 1;
    }
    assert_eq!(
        code, 603,
        "node 3 applies node 1's deny entry within a second"
    );

    // A status change delivered to node 2 changes node 1's next decision.
    let lookups = dc.state.count("/check/");
    let target = &numbers()[0];
    let body = status_changed(target, 95);
    let r = nodes[1]
        .http
        .post(format!("{}/api/v1/webhooks/didchecks", nodes[1].admin))
        .header("X-HUHU-Signature", sign(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut attempt = 0;
    while tokio::time::Instant::now() < deadline {
        code = call(&uac, nodes[0].sip, &format!("wh{attempt}"), target).await;
        if code == 603 {
            break;
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        code, 603,
        "node 1 rejects after node 2's webhook, within a second"
    );
    assert!(
        metric(
            &nodes[0],
            "sipsentry_cluster_shared_total",
            "kind=\"update_applied\""
        )
        .await
            >= 1.0
    );
    assert_eq!(
        dc.state.count("/check/"),
        lookups,
        "the webhook cost no lookup"
    );
}

/// Decisions per node in PostgreSQL, once at least `want` are there.
async fn wait_rows(pg: &Postgres, want: u64) -> Vec<(String, u64)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = pg.query("SELECT node_id, COUNT(*) FROM decisions GROUP BY 1 ORDER BY 1");
        let rows: Vec<(String, u64)> = out
            .lines()
            .filter_map(|l| {
                let (n, c) = l.split_once('|')?;
                Some((n.to_string(), c.parse().ok()?))
            })
            .collect();
        let total: u64 = rows.iter().map(|(_, n)| n).sum();
        if total >= want || tokio::time::Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `n` futures made by `f` and collects their outputs in order.
async fn futures_join<T, F, Fut>(n: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(f(i).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_providers_rate_limit_holds_across_the_cluster() {
    // With a password, given to the nodes in the environment.
    let Some(redis) = Redis::start_with(Some(REDIS_PASSWORD)) else {
        return;
    };
    let dc = fakes::didchecks().await;
    let fresh: Vec<String> = (0..12).map(|i| format!("+3362000{i:04}")).collect();
    for n in &fresh {
        dc.state.answer(n, dc_data(n, 20, "Telemarketing"));
    }
    let keys = "max_requests_per_second = 5\ntimeout_ms = 3000\n";
    let mut nodes = Vec::new();
    for name in ["rate1", "rate2", "rate3"] {
        nodes.push(node_with_provider_keys(name, &redis.url(), &dc.base, keys).await);
    }
    // A first lookup from each node opens its connection to the provider
    // (the first request of a process is slower than the rest).
    let (warm, fresh) = fresh.split_at(3);
    for (i, n) in warm.iter().enumerate() {
        let uac = Udp::new().await;
        assert_eq!(call(&uac, nodes[i].sip, &format!("warm{i}"), n).await, 486);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warmed = dc.state.requests.lock().len();
    // Three numbers per node, all at once: each node alone would send its
    // three 200 ms apart, the three nodes together at the same instants.
    let mut calls = Vec::new();
    for (i, n) in fresh.iter().enumerate() {
        let sip = nodes[i % 3].sip;
        let n = n.clone();
        calls.push(tokio::spawn(async move {
            let uac = Udp::new().await;
            call(&uac, sip, &format!("rate{i}"), &n).await
        }));
    }
    for c in calls {
        assert_eq!(c.await.unwrap(), 486);
    }
    let mut arrivals: Vec<_> = dc
        .state
        .requests
        .lock()
        .iter()
        .skip(warmed)
        .filter(|(p, _, _)| p.starts_with("/check/"))
        .map(|(_, _, t)| *t)
        .collect();
    assert_eq!(arrivals.len(), 9);
    arrivals.sort();
    let gaps: Vec<u128> = arrivals
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    // 5/s is one request per 200 ms; loopback jitter is far below 50 ms.
    assert!(
        gaps.iter().all(|&g| g >= 150),
        "requests 200 ms apart cluster-wide: gaps {gaps:?} ms"
    );
}

/// As [`node`], with more keys in its `[providers.didchecks]` table.
async fn node_with_provider_keys(name: &str, redis: &str, dc: &str, keys: &str) -> Operator {
    let config = format!(
        "[cluster]\nredis_url = \"{redis}\"\nnode_id = \"{name}\"\nredis_timeout_ms = 250\n\
         [providers.didchecks]\nenabled = true\nbase_url = \"{dc}\"\ntoken_env = \"{DC_ENV}\"\n\
         webhook_secret_env = \"{SECRET_ENV}\"\n{keys}[policy]\nlookup_budget_ms = 5000\n"
    );
    Operator::start_full(
        "",
        "",
        &config,
        Some(TOKEN),
        &[],
        &[
            (DC_ENV, DC_TOKEN),
            (SECRET_ENV, SECRET),
            ("SIPSENTRY_REDIS_PASSWORD", REDIS_PASSWORD),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_go_on_while_redis_is_down_and_sharing_resumes_when_it_returns() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let dc = fakes::didchecks().await;
    let fresh: Vec<String> = (0..12).map(|i| format!("+3363000{i:04}")).collect();
    for n in &fresh {
        dc.state.answer(n, dc_data(n, 95, "Scam"));
    }
    let a = node("fault1", &redis.url(), &dc.base, None).await;
    let uac = Udp::new().await;
    // Redis up: the answer is shared.
    assert_eq!(call(&uac, a.sip, "f0", &fresh[0]).await, 603);
    let key = format!("GET sipsentry:answer:{{didchecks:{}}}", fresh[0]);
    assert!(redis.command(&key).unwrap().contains("\"score\":95"));
    assert_eq!(metric(&a, "sipsentry_cluster_redis_up", "").await, 1.0);

    // Redis gone: every call is still screened with the provider's answer.
    redis.stop();
    for (i, n) in fresh[1..7].iter().enumerate() {
        assert_eq!(
            call(&uac, a.sip, &format!("f{}", i + 1), n).await,
            603,
            "screened without Redis"
        );
    }
    assert_eq!(metric(&a, "sipsentry_cluster_redis_up", "").await, 0.0);
    assert!(
        metric(&a, "sipsentry_cluster_shared_total", "kind=\"skipped\"").await >= 1.0,
        "once down, Redis is not asked (no wait at all)"
    );
    assert_eq!(dc.state.count("/check/"), 7);

    // Back: the node reconnects by itself and shares again.
    redis.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(&a, "sipsentry_cluster_redis_up", "").await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconnect after Redis returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(call(&uac, a.sip, "f8", &fresh[8]).await, 603);
    let key = format!("GET sipsentry:answer:{{didchecks:{}}}", fresh[8]);
    assert!(redis.command(&key).unwrap().contains("\"score\":95"));
    assert!(metric(&a, "sipsentry_cluster_redis_downs_total", "").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_shares_lookups_over_rediss_with_a_private_ca() {
    let (ca, cert, key) = common::pki::loopback_pki();
    let Some(redis) = Redis::start_tls(&cert, &key) else {
        return;
    };
    let dc = fakes::didchecks().await;
    let number = "+33640000001";
    dc.state.answer(number, dc_data(number, 95, "Scam"));
    let url = format!("rediss://127.0.0.1:{}/0", redis.tls_port.unwrap());
    let config = format!(
        "[cluster]\nredis_url = \"{url}\"\nredis_ca_file = \"ca.pem\"\nnode_id = \"tls1\"\n\
         redis_timeout_ms = 250\n[providers.didchecks]\nenabled = true\nbase_url = \"{}\"\n\
         token_env = \"{DC_ENV}\"\n[policy]\nlookup_budget_ms = 2000\n",
        dc.base
    );
    let op = Operator::start_full(
        "",
        "",
        &config,
        Some(TOKEN),
        &[("ca.pem", &ca)],
        &[(DC_ENV, DC_TOKEN)],
    )
    .await;
    let uac = Udp::new().await;
    assert_eq!(call(&uac, op.sip, "tls0", number).await, 603);
    let key = format!("GET sipsentry:answer:{{didchecks:{number}}}");
    assert!(
        redis.command(&key).unwrap().contains("\"score\":95"),
        "the answer went to Redis over TLS"
    );
    assert_eq!(metric(&op, "sipsentry_cluster_redis_up", "").await, 1.0);
    assert_eq!(
        metric(&op, "sipsentry_cluster_shared_total", "kind=\"error\"").await,
        0.0
    );
}
