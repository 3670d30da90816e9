//! Local fakes of the live provider APIs, speaking the documented protocols
//! on real loopback HTTP servers. Each checks its credential the way the real
//! API does, answers from a per-number table, and can be made slow, broken or
//! silent on demand.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const DC_TOKEN: &str = "spk_live_test_token";
pub const GL_KEY: &str = "nO0hy3rrzaCP9VPz8cPnCe1eyc5wiAjM3dAp2U38MB02l";
pub const GL_SECRET: &str = "test-secret";
pub const HS_KEY: &str = "hiya-status-key";

/// How a fake behaves right now.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    /// Answer every request with this documented error.
    Error(u16),
    /// 200 with a body that is not the documented JSON.
    Garbage,
    /// Accept the request and never answer.
    Hang,
    /// Answer the next request 429 with `Retry-After: N`, then go back to
    /// normal.
    LimitedOnce(u64),
}

#[derive(Debug)]
pub struct FakeState {
    pub mode: Mutex<Mode>,
    pub delay: Mutex<Duration>,
    /// (path, query, arrival) of every request that passed authentication.
    pub requests: Mutex<Vec<(String, String, Instant)>>,
    /// Requests refused for credentials or signature.
    pub refused: Mutex<u32>,
    /// Per-number answers (the provider's `data` object).
    pub numbers: Mutex<HashMap<String, Value>>,
    /// DIDChecks routines, as `GET /routines` lists them.
    pub routines: Mutex<Vec<Value>>,
}

impl FakeState {
    fn new() -> Arc<Self> {
        Arc::new(FakeState {
            mode: Mutex::new(Mode::Normal),
            delay: Mutex::new(Duration::ZERO),
            requests: Mutex::new(Vec::new()),
            refused: Mutex::new(0),
            numbers: Mutex::new(HashMap::new()),
            routines: Mutex::new(Vec::new()),
        })
    }

    pub fn set_mode(&self, m: Mode) {
        *self.mode.lock() = m;
    }

    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock() = d;
    }

    pub fn answer(&self, number: &str, data: Value) {
        self.numbers.lock().insert(number.to_string(), data);
    }

    pub fn count(&self, path_prefix: &str) -> usize {
        self.requests
            .lock()
            .iter()
            .filter(|(p, _, _)| p.starts_with(path_prefix))
            .count()
    }

    /// Records the request, then applies delay and mode. `Some` short-cuts
    /// the handler with that response.
    async fn enter(
        &self,
        path: &str,
        query: &str,
        error: impl Fn(u16) -> Response,
    ) -> Option<Response> {
        self.requests
            .lock()
            .push((path.to_string(), query.to_string(), Instant::now()));
        let delay = *self.delay.lock();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mode = self.mode.lock().clone();
        match mode {
            Mode::Normal => None,
            Mode::Error(code) => Some(error(code)),
            Mode::Garbage => {
                Some((StatusCode::OK, "<html>upstream proxy error</html>").into_response())
            }
            Mode::Hang => {
                std::future::pending::<()>().await;
                None
            }
            Mode::LimitedOnce(secs) => {
                *self.mode.lock() = Mode::Normal;
                let mut r = error(429);
                r.headers_mut()
                    .insert("retry-after", secs.to_string().parse().unwrap());
                Some(r)
            }
        }
    }
}

pub struct Fake {
    pub addr: SocketAddr,
    pub base: String,
    pub state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(app: Router, state: Arc<FakeState>, prefix: &str) -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Fake {
        addr,
        base: format!("http://{addr}{prefix}"),
        state,
        task,
    }
}

// ---------------------------------------------------------------- DIDChecks

/// The documented error body for a status.
pub fn dc_error(code: u16) -> Response {
    let (error, kind, details) = match code {
        400 => (
            "Invalid phone number",
            "INVALID_PHONE",
            json!({"field": "phone"}),
        ),
        401 => ("Invalid API token", "UNAUTHORIZED", Value::Null),
        402 => (
            "Insufficient verifications",
            "INSUFFICIENT_VERIFICATIONS",
            json!({"required": 1, "balance": 0}),
        ),
        404 => ("Number not found", "NOT_FOUND", Value::Null),
        429 => ("Too many requests", "RATE_LIMITED", json!({"limit": 10})),
        _ => ("Internal error", "INTERNAL_ERROR", Value::Null),
    };
    let mut body = json!({"success": false, "error": error, "code": kind});
    if !details.is_null() {
        body["details"] = details;
    }
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

/// The documented example answer for a number, with a chosen score.
pub fn dc_data(number: &str, score: u8, kind: &str) -> Value {
    json!({
        "phoneNumber": number,
        "huhu": {"isSpam": score >= 50, "spamScore": score, "spamType": kind, "numberType": "MOBILE",
                 "countryCode": "FR", "carrier": "Orange", "lineType": "MOBILE_mobile"},
        "hiya": {"reputationLevel": "negative"},
        "truecaller": {"spamScore": 7, "spamType": "sales", "numReports": 150, "numReports60days": 45},
        "orange": {"isSpam": true, "negativeReviews": 64, "positiveReviews": 0, "mainSpamType": "SCAM",
                   "spamTypesRepartition": [{"category": "SCAM", "ratio": 0.89}, {"category": "TELEMARKETING", "ratio": 0.11}]}
    })
}

fn dc_authorized(state: &FakeState, headers: &HeaderMap) -> bool {
    let ok = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {DC_TOKEN}"));
    if !ok {
        *state.refused.lock() += 1;
    }
    ok
}

async fn dc_check(
    State(s): State<Arc<FakeState>>,
    Path(phone): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !dc_authorized(&s, &headers) {
        return dc_error(401);
    }
    if let Some(r) = s.enter(&format!("/check/{phone}"), "", dc_error).await {
        return r;
    }
    match s.numbers.lock().get(&phone) {
        Some(data) => axum::Json(json!({"success": true, "data": data, "cost": 1, "balance": 14}))
            .into_response(),
        None => dc_error(404),
    }
}

async fn dc_bulk(State(s): State<Arc<FakeState>>, headers: HeaderMap, body: String) -> Response {
    if !dc_authorized(&s, &headers) {
        return dc_error(401);
    }
    if let Some(r) = s.enter("/check/bulk", "", dc_error).await {
        return r;
    }
    let req: Value = serde_json::from_str(&body).unwrap_or_default();
    let Some(numbers) = req["phoneNumbers"].as_array() else {
        return dc_error(400);
    };
    if numbers.is_empty() || numbers.len() > 100 {
        return dc_error(400);
    }
    let table = s.numbers.lock();
    let results: Vec<Value> = numbers
        .iter()
        .filter_map(|n| table.get(n.as_str()?).cloned())
        .collect();
    let spam = results
        .iter()
        .filter(|r| r["huhu"]["isSpam"] == true)
        .count();
    axum::Json(json!({
        "success": true,
        "data": {"results": results, "summary": {
            "totalChecked": results.len(), "spamCount": spam,
            "cleanCount": results.len() - spam, "errorCount": numbers.len() - results.len()}},
        "cost": results.len(), "unitCost": 1, "balance": 40
    }))
    .into_response()
}

async fn dc_balance(State(s): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    if !dc_authorized(&s, &headers) {
        return dc_error(401);
    }
    if let Some(r) = s.enter("/credits/balance", "", dc_error).await {
        return r;
    }
    axum::Json(json!({"success": true, "data": {"balance": 47, "checkPrice": 1}})).into_response()
}

async fn dc_routines(State(s): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    if !dc_authorized(&s, &headers) {
        return dc_error(401);
    }
    if let Some(r) = s.enter("GET /routines", "", dc_error).await {
        return r;
    }
    let routines = s.routines.lock().clone();
    axum::Json(json!({"success": true, "data": {"routines": routines}})).into_response()
}

/// The documented routine fields from a request's settings.
fn dc_routine(id: &str, number: &str, settings: &Value) -> Value {
    let mut r = json!({
        "id": id, "phoneNumber": number,
        "scheduleType": settings["scheduleType"], "notifyVia": settings["notifyVia"],
        "notifyOnlyIfSpam": settings.get("notifyOnlyIfSpam").cloned().unwrap_or(json!(true)),
        "isActive": true, "lastScore": null, "lastCheckedAt": null,
    });
    for k in ["intervalDays", "weeklyDays"] {
        if let Some(v) = settings.get(k) {
            r[k] = v.clone();
        }
    }
    r
}

async fn dc_routines_bulk(
    State(s): State<Arc<FakeState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !dc_authorized(&s, &headers) {
        return dc_error(401);
    }
    if let Some(r) = s.enter("POST /routines/bulk", &body, dc_error).await {
        return r;
    }
    let req: Value = serde_json::from_str(&body).unwrap_or_default();
    let (Some(numbers), Some(settings)) =
        (req["phoneNumbers"].as_array(), req.get("defaultSettings"))
    else {
        return dc_error(400);
    };
    if numbers.is_empty() || numbers.len() > 100 || settings["scheduleType"].as_str().is_none() {
        return dc_error(400);
    }
    let mut routines = s.routines.lock();
    for n in numbers {
        let id = format!("r{}", routines.len() + 1000);
        routines.push(dc_routine(&id, n.as_str().unwrap_or_default(), settings));
    }
    axum::Json(json!({"success": true, "data": {"created": numbers.len()}, "balance": 40}))
        .into_response()
}

async fn dc_routines_bulk_delete(
    State(s): State<Arc<FakeState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !dc_authorized(&s, &headers) {
        return dc_error(401);
    }
    if let Some(r) = s.enter("DELETE /routines/bulk", &body, dc_error).await {
        return r;
    }
    let req: Value = serde_json::from_str(&body).unwrap_or_default();
    let Some(ids) = req["ids"].as_array() else {
        return dc_error(400);
    };
    s.routines.lock().retain(|r| !ids.contains(&r["id"]));
    axum::Json(json!({"success": true})).into_response()
}

async fn dc_routine_one(
    State(s): State<Arc<FakeState>>,
    Path(id): Path<String>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !dc_authorized(&s, &headers) {
        return dc_error(401);
    }
    if let Some(r) = s
        .enter(&format!("{method} /routines/{id}"), &body, dc_error)
        .await
    {
        return r;
    }
    let mut routines = s.routines.lock();
    let Some(i) = routines.iter().position(|r| r["id"] == id.as_str()) else {
        return dc_error(404);
    };
    if method == axum::http::Method::DELETE {
        routines.remove(i);
        return axum::Json(json!({"success": true})).into_response();
    }
    let change: Value = serde_json::from_str(&body).unwrap_or_default();
    let Some(change) = change.as_object() else {
        return dc_error(400);
    };
    for (k, v) in change {
        routines[i][k] = v.clone();
    }
    axum::Json(json!({"success": true, "data": routines[i].clone()})).into_response()
}

/// DIDChecks under `/api`, as at `https://num.huhu.fr/api`.
pub async fn didchecks() -> Fake {
    let state = FakeState::new();
    let app = Router::new()
        .route("/api/check/bulk", post(dc_bulk))
        .route("/api/check/{phone}", get(dc_check))
        .route("/api/credits/balance", get(dc_balance))
        .route("/api/routines", get(dc_routines))
        .route(
            "/api/routines/bulk",
            post(dc_routines_bulk).delete(dc_routines_bulk_delete),
        )
        .route(
            "/api/routines/{id}",
            axum::routing::put(dc_routine_one).delete(dc_routine_one),
        )
        .with_state(Arc::clone(&state));
    serve(app, state, "/api").await
}

// ------------------------------------------------------------------ Gilraen

/// RFC 3986 encoding, written here independently of the library's.
fn rfc3986(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The documented signature, recomputed from what the server received.
pub fn gilraen_signature(
    host: &str,
    path: &str,
    params: &[(String, String)],
    secret: &str,
) -> String {
    let mut p: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "signature")
        .map(|(k, v)| (rfc3986(k), rfc3986(v)))
        .collect();
    p.sort();
    let joined: Vec<String> = p.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let text = format!("GET{host}{path}{}{secret}", joined.join("&"));
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn gl_error(code: u16) -> Response {
    let (status, message) = match code {
        401 => ("Unauthorized", "Unauthorized or limit used up"),
        419 => ("signature error", "signature failed verification"),
        _ => ("error", "internal error"),
    };
    // Error bodies carry status_code as a string.
    (
        StatusCode::from_u16(code).unwrap(),
        axum::Json(json!({"status_code": code.to_string(), "status": status, "message": message, "data": ""})),
    )
        .into_response()
}

fn gl_ok(data: Value) -> Response {
    axum::Json(json!({"status_code": 0, "status": "success", "message": "", "data": data}))
        .into_response()
}

/// Checks key, timestamp and signature like the real API; `Some` is the refusal.
fn gl_verify(
    s: &FakeState,
    headers: &HeaderMap,
    path: &str,
    q: &[(String, String)],
) -> Option<Response> {
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if get("key").as_deref() != Some(GL_KEY) {
        *s.refused.lock() += 1;
        return Some(gl_error(401));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let fresh = get("timestamp")
        .and_then(|t| t.parse::<u64>().ok())
        .is_some_and(|t| t.abs_diff(now) < 300);
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let expected = gilraen_signature(host, path, q, GL_SECRET);
    if !fresh || get("signature").as_deref() != Some(expected.as_str()) {
        *s.refused.lock() += 1;
        return Some(gl_error(419));
    }
    None
}

async fn gl_number(
    State(s): State<Arc<FakeState>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = gl_verify(&s, &headers, "/gl/v1/number", &q) {
        return r;
    }
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if let Some(r) = s.enter("/v1/number", &get("opt_fields"), gl_error).await {
        return r;
    }
    let full = s
        .numbers
        .lock()
        .get(&get("number"))
        .cloned()
        .unwrap_or_else(|| {
            json!({"bans": 0, "index": 5.0, "is_unwanted": false, "comments_count": 0,
               "tags": {"categories": []}, "carrier": "", "region": ""})
        });
    // Only the requested fields, each costing one unit.
    let mut data = serde_json::Map::new();
    for f in get("opt_fields").split(',') {
        let keys: &[&str] = match f {
            "unwanted" => &["is_unwanted"],
            "comments" => &["comments_count"],
            "tags_top" => &["tags"],
            "carrier_region" => &["carrier", "region"],
            "limits" => &["limits"],
            other => &[other][..],
        };
        for k in keys {
            if let Some(v) = full.get(*k) {
                data.insert(k.to_string(), v.clone());
            } else if *k == "limits" {
                data.insert("limits".into(), json!(354));
            }
        }
    }
    gl_ok(Value::Object(data))
}

async fn gl_limits(
    State(s): State<Arc<FakeState>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = gl_verify(&s, &headers, "/gl/v1/limits", &q) {
        return r;
    }
    if let Some(r) = s.enter("/v1/limits", "", gl_error).await {
        return r;
    }
    gl_ok(json!({"limits": 354}))
}

async fn gl_tags(
    State(s): State<Arc<FakeState>>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = gl_verify(&s, &headers, "/gl/v1/tags_list", &q) {
        return r;
    }
    if let Some(r) = s.enter("/v1/tags_list", "", gl_error).await {
        return r;
    }
    gl_ok(json!({"tagsList": [
        {"type": "CALLER_TYPE", "id": 10, "name": "Person"},
        {"type": "CATEGORY", "id": 1145, "name": "Transport"},
        {"type": "CATEGORY", "id": 1146, "name": "Collectors"},
        {"type": "SUBCATEGORY", "id": 10041, "name": "Taxi"},
        {"type": "CALL_REASON", "id": 100009, "name": "SPAM"},
        {"type": "EMOTAG", "id": 200000, "name": "Like"}
    ]}))
}

/// Gilraen under the path prefix `/gl` (the prefix is part of what is signed).
pub async fn gilraen() -> Fake {
    let state = FakeState::new();
    let app = Router::new()
        .route("/gl/v1/number", get(gl_number))
        .route("/gl/v1/limits", get(gl_limits))
        .route("/gl/v1/tags_list", get(gl_tags))
        .with_state(Arc::clone(&state));
    serve(app, state, "/gl").await
}

// ----------------------------------------------------- Hiya reputation status

fn hs_error(code: u16) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        axum::Json(json!({"error": format!("status {code}")})),
    )
        .into_response()
}

async fn hs_status(
    State(s): State<Arc<FakeState>>,
    Path(phone): Path<String>,
    headers: HeaderMap,
) -> Response {
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(HS_KEY) {
        *s.refused.lock() += 1;
        return hs_error(401);
    }
    if let Some(r) = s.enter(&format!("/status/{phone}"), "", hs_error).await {
        return r;
    }
    match s.numbers.lock().get(&phone) {
        Some(v) => axum::Json(v.clone()).into_response(),
        None => hs_error(404),
    }
}

/// Hiya reputation status at `{base}/status/{phone}`, key in `X-Api-Key`.
pub async fn hiya_status() -> Fake {
    let state = FakeState::new();
    let app = Router::new()
        .route("/rep/status/{phone}", get(hs_status))
        .with_state(Arc::clone(&state));
    serve(app, state, "/rep").await
}
