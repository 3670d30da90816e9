//! The sync client against a local fake of the Hiya Protect Cache API (a real
//! HTTP server on loopback): Basic auth, 307 to a signed URL that really
//! expires, ETag/304, and every documented error status on demand.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sipsentry::reputation::LocalSource;
use sipsentry::reputation::hiya_cache::build::BuildError;
use sipsentry::reputation::hiya_cache::sample::DEMO_IN;
use sipsentry::reputation::hiya_cache::store::{HiyaCache, current_generation};
use sipsentry::reputation::hiya_cache::sync::{SyncClient, SyncError, SyncOutcome, last_check};

const AUTH: &str = "Basic Y3JlZC1pZDpjcmVkLXNlY3JldA=="; // cred-id:cred-secret

#[derive(Default)]
struct Fake {
    base: Mutex<String>,
    files: Mutex<HashMap<String, (Vec<u8>, String)>>,
    /// Statuses the API answers before behaving normally.
    script: Mutex<VecDeque<u16>>,
    /// Signed URLs to issue already expired.
    expire_first: AtomicUsize,
    /// Serve only half of the file.
    truncate: AtomicBool,
    api_requests: AtomicUsize,
    signed_requests: AtomicUsize,
    auth_seen_on_signed: AtomicBool,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

async fn api(
    State(f): State<Arc<Fake>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    f.api_requests.fetch_add(1, Ordering::SeqCst);
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(AUTH)
    {
        return (StatusCode::UNAUTHORIZED, r#"{"message":"Unauthorized"}"#).into_response();
    }
    if let Some(code) = f.script.lock().unwrap().pop_front() {
        let status = StatusCode::from_u16(code).unwrap();
        let mut resp = (status, format!("scripted {code} from the fake")).into_response();
        if code == 429 {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, "7".parse().unwrap());
        }
        return resp;
    }
    let cc = q.get("country").cloned().unwrap_or_default();
    if !f.files.lock().unwrap().contains_key(&cc) {
        return (StatusCode::BAD_REQUEST, "country not supported").into_response();
    }
    let expired = f
        .expire_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let exp = if expired {
        now_ms() - 1
    } else {
        now_ms() + 30_000
    };
    let url = format!(
        "{}/signed/{cc}/cache-{}.tsv.gz?exp={exp}&sig=abc",
        f.base.lock().unwrap(),
        now_ms()
    );
    let mut resp = (
        StatusCode::TEMPORARY_REDIRECT,
        format!(r#"{{"url":"{url}"}}"#),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::LOCATION, url.parse().unwrap());
    resp
}

async fn signed(
    State(f): State<Arc<Fake>>,
    Path((cc, _name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    f.signed_requests.fetch_add(1, Ordering::SeqCst);
    if headers.contains_key(header::AUTHORIZATION) {
        f.auth_seen_on_signed.store(true, Ordering::SeqCst);
    }
    let exp: u128 = q.get("exp").and_then(|e| e.parse().ok()).unwrap_or(0);
    if now_ms() > exp {
        return (StatusCode::FORBIDDEN, "Request has expired").into_response();
    }
    let Some((bytes, etag)) = f.files.lock().unwrap().get(&cc).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let body = if f.truncate.load(Ordering::SeqCst) {
        bytes[..bytes.len() / 2].to_vec()
    } else {
        bytes
    };
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::ETAG, etag.parse().unwrap());
    resp
}

async fn start_fake() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    fake.files
        .lock()
        .unwrap()
        .insert("IN".into(), (DEMO_IN.to_vec(), "\"v1\"".into()));
    let app = Router::new()
        .route("/v1/caches/phones", get(api))
        .route("/signed/{cc}/{name}", get(signed))
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    *fake.base.lock().unwrap() = base.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, base)
}

fn client(base: &str) -> SyncClient {
    SyncClient::new(base, "cred-id".into(), "cred-secret".into())
}

#[tokio::test]
async fn sync_downloads_then_304_keeps_then_a_new_etag_rebuilds() {
    let (fake, base) = start_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&base);
    let first = match c.sync_country(dir.path(), "IN", 5.0).await.unwrap() {
        SyncOutcome::Updated(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!(first.etag.as_deref(), Some("\"v1\""));
    assert!(
        HiyaCache::open(dir.path(), &[])
            .lookup("+919000000001")
            .is_some()
    );
    assert!(last_check(&dir.path().join("IN")).is_some());

    assert!(matches!(
        c.sync_country(dir.path(), "IN", 5.0).await.unwrap(),
        SyncOutcome::NotModified
    ));
    assert_eq!(
        current_generation(&dir.path().join("IN")).as_deref(),
        Some(first.generation.as_str())
    );

    fake.files
        .lock()
        .unwrap()
        .insert("IN".into(), (DEMO_IN.to_vec(), "\"v2\"".into()));
    match c.sync_country(dir.path(), "IN", 5.0).await.unwrap() {
        SyncOutcome::Updated(m) => {
            assert_eq!(m.etag.as_deref(), Some("\"v2\""));
            assert_ne!(m.generation, first.generation);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !fake.auth_seen_on_signed.load(Ordering::SeqCst),
        "credentials leaked to the signed URL"
    );
}

#[tokio::test]
async fn an_expired_signed_url_is_replaced_by_a_fresh_one() {
    let (fake, base) = start_fake().await;
    fake.expire_first.store(1, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        client(&base)
            .sync_country(dir.path(), "IN", 5.0)
            .await
            .unwrap(),
        SyncOutcome::Updated(_)
    ));
    assert_eq!(fake.api_requests.load(Ordering::SeqCst), 2);
    assert_eq!(fake.signed_requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_408_is_retried() {
    let (fake, base) = start_fake().await;
    fake.script.lock().unwrap().push_back(408);
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        client(&base)
            .sync_country(dir.path(), "IN", 5.0)
            .await
            .unwrap(),
        SyncOutcome::Updated(_)
    ));
    assert_eq!(fake.api_requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn each_documented_error_status_maps_to_its_own_error() {
    let (fake, base) = start_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&base);
    for (code, check) in [
        (
            404u16,
            (|e: &SyncError| matches!(e, SyncError::NotFound { .. })) as fn(&SyncError) -> bool,
        ),
        (410, |e| matches!(e, SyncError::Gone { .. })),
        (
            429,
            |e| matches!(e, SyncError::RateLimited { retry_after, .. } if *retry_after == Duration::from_secs(7)),
        ),
        (400, |e| matches!(e, SyncError::Status { status: 400, .. })),
        (500, |e| matches!(e, SyncError::Status { status: 500, .. })),
    ] {
        fake.script.lock().unwrap().push_back(code);
        let err = c.sync_country(dir.path(), "IN", 5.0).await.unwrap_err();
        assert!(check(&err), "{code}: {err}");
        assert!(
            err.to_string().contains("IN"),
            "the error names the country: {err}"
        );
    }
    assert!(
        current_generation(&dir.path().join("IN")).is_none(),
        "no generation from failed syncs"
    );
}

#[tokio::test]
async fn wrong_credentials_get_a_clear_401() {
    let (_fake, base) = start_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let c = SyncClient::new(&base, "cred-id".into(), "wrong".into());
    let err = c.sync_country(dir.path(), "IN", 5.0).await.unwrap_err();
    assert!(
        matches!(err, SyncError::Status { status: 401, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("Unauthorized"), "{err}");
}

#[tokio::test]
async fn a_bad_country_is_refused_before_any_request() {
    let (fake, base) = start_fake().await;
    let dir = tempfile::tempdir().unwrap();
    for cc in ["in", "USA", "US"] {
        let err = client(&base)
            .sync_country(dir.path(), cc, 5.0)
            .await
            .unwrap_err();
        assert!(matches!(err, SyncError::Country(_)), "{cc}: {err}");
    }
    assert_eq!(fake.api_requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_truncated_download_leaves_the_serving_generation() {
    let (fake, base) = start_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&base);
    let SyncOutcome::Updated(good) = c.sync_country(dir.path(), "IN", 5.0).await.unwrap() else {
        panic!("first sync must build");
    };
    fake.files
        .lock()
        .unwrap()
        .insert("IN".into(), (DEMO_IN.to_vec(), "\"v3\"".into()));
    fake.truncate.store(true, Ordering::SeqCst);
    let err = c.sync_country(dir.path(), "IN", 5.0).await.unwrap_err();
    assert!(
        matches!(err, SyncError::Build(BuildError::Gzip { .. })),
        "{err}"
    );
    assert_eq!(
        current_generation(&dir.path().join("IN")).as_deref(),
        Some(good.generation.as_str())
    );
    let leftovers = std::fs::read_dir(dir.path().join("IN"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".download"))
        .count();
    assert_eq!(leftovers, 0, "the partial download is removed");
}

#[test]
fn missing_credentials_name_the_environment_variable() {
    let err = SyncClient::from_env(
        "http://127.0.0.1:1",
        "SIPSENTRY_TEST_UNSET_ID",
        "SIPSENTRY_TEST_UNSET_SECRET",
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("SIPSENTRY_TEST_UNSET_ID"), "{err}");
}

#[path = "common/binary.rs"]
mod binary;

fn sip_invite(from_number: &str, me: SocketAddr, branch: &str) -> String {
    format!(
        "INVITE sip:+15551234567@pbx.example SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch}\r\nMax-Forwards: 70\r\n\
         From: <sip:{from_number}@carrier.example;user=phone>;tag=1\r\nTo: <sip:+15551234567@pbx.example>\r\n\
         Call-ID: {branch}@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_syncs_configured_countries_and_then_screens_with_them() {
    let (fake, base) = start_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let (port, uas) = (
        binary::free_port(),
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    let cfg = format!(
        "[sip]\nlisten = \"127.0.0.1:{port}\"\nnext_hop = \"sip:{}\"\n[hiya_cache]\ncountries = [\"IN\"]\nbase_url = \"{base}\"\n\
         credential_id_env = \"TEST_HIYA_ID\"\ncredential_secret_env = \"TEST_HIYA_SECRET\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        uas.local_addr().unwrap()
    );
    std::fs::write(dir.path().join("sipsentry.toml"), cfg).unwrap();
    let child = std::process::Command::new(binary::BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env("TEST_HIYA_ID", "cred-id")
        .env("TEST_HIYA_SECRET", "cred-secret")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let serve = binary::Serve { child };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    tokio::task::spawn_blocking(move || binary::wait_until_answering(addr))
        .await
        .unwrap();

    // Until the first sync lands the FRAUD number is unknown; afterwards it is rejected.
    let trunk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = trunk.local_addr().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut rejected = false;
    for i in 0.. {
        if tokio::time::Instant::now() > deadline {
            break;
        }
        trunk
            .send_to(
                sip_invite("+919000000001", me, &format!("z9hG4bKsched{i}")).as_bytes(),
                addr,
            )
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(300), trunk.recv_from(&mut buf)).await
        {
            if buf[..n].starts_with(b"SIP/2.0 603") {
                rejected = true;
            }
        }
        if rejected {
            break;
        }
    }
    assert!(rejected, "the synced cache never took effect");
    assert!(fake.api_requests.load(Ordering::SeqCst) >= 1);
    assert!(serve.terminate().success());
}

#[test]
fn cache_sync_command_pulls_and_reports() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_fake, base) = rt.block_on(start_fake());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sipsentry.toml"),
        format!("[hiya_cache]\nbase_url = \"{base}\"\ncredential_id_env = \"T_ID\"\ncredential_secret_env = \"T_SECRET\"\n"),
    )
    .unwrap();
    let run = |args: &[&str], creds: bool| {
        let mut cmd = std::process::Command::new(binary::BIN);
        cmd.args(args).current_dir(dir.path());
        if creds {
            cmd.env("T_ID", "cred-id").env("T_SECRET", "cred-secret");
        }
        cmd.output().unwrap()
    };
    let out = run(&["cache", "sync", "--country", "IN"], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("IN: updated to g"));
    let again = run(&["cache", "sync", "--country", "IN"], true);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "IN: not modified"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&run(&["cache", "status", "--json"], true).stdout).unwrap();
    let status = &status["hiya"];
    assert_eq!(status[0]["etag"], "\"v1\"");
    assert!(status[0]["last_check_ms"].as_u64().is_some());
    let no_creds = run(&["cache", "sync", "--country", "IN"], false);
    assert_eq!(no_creds.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_creds.stderr).contains("T_ID"));
    drop(rt);
}
