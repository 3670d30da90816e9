//! Gilraen Data API client (docs/providers.md; the provider documents it in
//! Russian).
//!
//! Every request is signed: `timestamp` (Unix seconds) and `key` join the
//! parameters, and `signature` = sha256 hex of
//! `METHOD + host + path + params + secret`, where `params` are all query and
//! body parameters except `signature`, sorted by name, RFC 3986-encoded and
//! joined as `k=v&k=v`. The document's worked example digest does not
//! reproduce from its own inputs (and names two different paths), so the
//! algorithm is implemented as described and tested with independently
//! computed vectors. Host and path prefix come from `base_url`.
//!
//! On the call path only the combined `GET /v1/number?opt_fields=...` is used,
//! asking for just the configured fields: each field costs one unit of the
//! plan's limit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use super::encode;
use super::{clamp_score, http_client, secret_from_env, send, snippet};

use crate::reputation::{Evidence, LiveSource, LookupFuture, Source, SourceError};

const PROVIDER: &str = "gilraen";

/// The `opt_fields` the combined method accepts.
pub const FIELDS: &[&str] = &[
    "bans",
    "index",
    "tags_top",
    "unwanted",
    "comments",
    "limits",
    "carrier_region",
];

/// The trust index meaning "no data" (range 0.00–10.00).
pub const INDEX_NO_DATA: f64 = 5.0;

/// `is_unwanted` raises the score to at least this (docs/providers.md).
pub const UNWANTED_FLOOR: u8 = 80;

/// How long the tag dictionary is trusted before it is fetched again.
pub const TAGS_TTL: Duration = Duration::from_secs(24 * 3600);

/// The signature of a request: sha256 hex of
/// `method + host + path + sorted-encoded-params + secret`.
/// `params` must not contain `signature`.
pub fn signature(
    method: &str,
    host: &str,
    path: &str,
    params: &[(&str, &str)],
    secret: &str,
) -> String {
    let mut sorted: Vec<(String, String)> =
        params.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    sorted.sort();
    let joined = sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut h = Sha256::new();
    for part in [method, host, path, &joined, secret] {
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// `{id, count}` of one tag in `tags_top`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct TagCount {
    pub id: u64,
    pub count: u64,
}

/// `tags_top`: up to five tags of each type.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TagsTop {
    pub caller_type: Option<TagCount>,
    pub categories: Vec<TagCount>,
    pub subcategories: Vec<TagCount>,
    pub call_reasons: Vec<TagCount>,
    pub emotags: Vec<TagCount>,
}

/// `data` of the combined `GET /v1/number`: only the requested fields appear.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct NumberData {
    pub bans: Option<u64>,
    /// Trust rating 0.00–10.00; 5.00 = no data.
    pub index: Option<f64>,
    pub is_unwanted: Option<bool>,
    pub tags: Option<TagsTop>,
    pub comments_count: Option<u64>,
    pub carrier: Option<String>,
    pub region: Option<String>,
    pub limits: Option<f64>,
}

/// One entry of the `tags_list` dictionary; `(type, id)` is unique.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Tag {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Deserialize)]
struct TagsList {
    #[serde(rename = "tagsList", default)]
    tags_list: Vec<Tag>,
}

#[derive(Debug, Deserialize)]
struct Limits {
    limits: f64,
}

/// Every answer: `status_code` is a number (0) on success but a string
/// ("401", "419") on error, and `data` an object or `""`.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    status_code: serde_json::Value,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    data: serde_json::Value,
}

impl Envelope {
    fn code(&self) -> Option<u16> {
        match &self.status_code {
            serde_json::Value::Number(n) => n.as_u64().map(|n| n as u16),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

struct Dictionary {
    names: HashMap<(String, u64), String>,
    fetched: Instant,
}

/// The Gilraen client.
pub struct Gilraen {
    http: reqwest::Client,
    base: String,
    /// `host[:port]` as signed.
    host: String,
    /// The path prefix of `base_url` (empty for the documented host).
    prefix: String,
    key: String,
    secret: String,
    fields: String,
    timeout: Duration,
    tags: ArcSwapOption<Dictionary>,
    refreshing: AtomicBool,
}

impl std::fmt::Debug for Gilraen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gilraen").field("base", &self.base).finish()
    }
}

impl Gilraen {
    pub fn from_config(c: &GilraenConfig) -> Result<Arc<Self>, SourceError> {
        let key = secret_from_env(PROVIDER, &c.key_env)?;
        let secret = secret_from_env(PROVIDER, &c.secret_env)?;
        Self::new(
            &c.base_url,
            key,
            secret,
            &c.fields,
            Duration::from_millis(c.timeout_ms),
        )
        .map(Arc::new)
    }

    pub fn new(
        base_url: &str,
        key: String,
        secret: String,
        fields: &[String],
        timeout: Duration,
    ) -> Result<Self, SourceError> {
        let url = reqwest::Url::parse(base_url).map_err(|e| SourceError::Transport {
            provider: PROVIDER,
            message: format!("base_url {base_url:?} is not a URL: {e}"),
        })?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => {
                return Err(SourceError::Transport {
                    provider: PROVIDER,
                    message: format!("base_url {base_url:?} has no host"),
                });
            }
        };
        Ok(Gilraen {
            http: http_client(timeout),
            base: base_url.trim_end_matches('/').to_string(),
            host,
            prefix: url.path().trim_end_matches('/').to_string(),
            key,
            secret,
            fields: fields.join(","),
            timeout,
            tags: ArcSwapOption::empty(),
            refreshing: AtomicBool::new(false),
        })
    }

    /// The signed query string for `GET {prefix}{method}` with `params`.
    fn signed_query(&self, method_path: &str, params: &[(&str, &str)], timestamp: u64) -> String {
        let ts = timestamp.to_string();
        let mut all: Vec<(&str, &str)> = params.to_vec();
        all.push(("key", &self.key));
        all.push(("timestamp", &ts));
        let path = format!("{}{}", self.prefix, method_path);
        let sig = signature("GET", &self.host, &path, &all, &self.secret);
        let mut q: Vec<String> = all
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        q.push(format!("signature={sig}"));
        q.join("&")
    }

    async fn get<T: DeserializeOwned>(
        &self,
        method_path: &str,
        params: &[(&str, &str)],
    ) -> Result<T, SourceError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let url = format!(
            "{}{}?{}",
            self.base,
            method_path,
            self.signed_query(method_path, params, now)
        );
        let (status, body) = send(PROVIDER, self.timeout, self.http.get(url)).await?;
        let env: Option<Envelope> = serde_json::from_slice(&body).ok();
        let code = env.as_ref().and_then(Envelope::code);
        match (status, env) {
            (200, Some(env)) if code == Some(0) => {
                serde_json::from_value(env.data).map_err(|e| SourceError::Malformed {
                    provider: PROVIDER,
                    message: format!("{e}; body starts {}", snippet(&body)),
                })
            }
            (200, None) => Err(SourceError::Malformed {
                provider: PROVIDER,
                message: format!("not the documented JSON: {}", snippet(&body)),
            }),
            (status, env) => {
                // An error status may come in the body of a 200 as well.
                let code = if status == 200 {
                    code.unwrap_or(status)
                } else {
                    status
                };
                let message = env
                    .map(|e| {
                        let m = e.message.unwrap_or_default();
                        match e.status {
                            Some(s) if m.is_empty() => s,
                            Some(s) => format!("{s}: {m}"),
                            None => m,
                        }
                    })
                    .unwrap_or_else(|| snippet(&body));
                Err(error_for(code, message))
            }
        }
    }

    /// The combined method for one E.164 number, asking for the configured fields.
    pub async fn number(&self, e164: &str) -> Result<NumberData, SourceError> {
        let digits = e164.trim_start_matches('+');
        self.get(
            "/v1/number",
            &[("number", digits), ("opt_fields", &self.fields)],
        )
        .await
    }

    /// `GET /v1/limits`: requests left on the plan (free of charge).
    pub async fn limits(&self) -> Result<f64, SourceError> {
        Ok(self.get::<Limits>("/v1/limits", &[]).await?.limits)
    }

    /// `GET /v1/tags_list`, cached as the dictionary for naming tags.
    pub async fn tags_list(&self) -> Result<Vec<Tag>, SourceError> {
        let list = self.get::<TagsList>("/v1/tags_list", &[]).await?.tags_list;
        let names = list
            .iter()
            .map(|t| ((t.kind.clone(), t.id), t.name.clone()))
            .collect();
        self.tags.store(Some(Arc::new(Dictionary {
            names,
            fetched: Instant::now(),
        })));
        Ok(list)
    }

    /// A tag's name from the cached dictionary.
    pub fn tag_name(&self, kind: &str, id: u64) -> Option<String> {
        self.tags
            .load()
            .as_ref()?
            .names
            .get(&(kind.to_string(), id))
            .cloned()
    }

    /// Fetches the dictionary in the background when it is missing or stale,
    /// so naming tags never adds a request to a call.
    fn refresh_tags_if_stale(self: &Arc<Self>) {
        let stale = self
            .tags
            .load()
            .as_ref()
            .is_none_or(|d| d.fetched.elapsed() > TAGS_TTL);
        if !stale || !self.fields.contains("tags_top") {
            return;
        }
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::clone(self);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = me.tags_list().await {
                    tracing::warn!(error = %e, "Gilraen tag dictionary not fetched; tags shown by id");
                }
                me.refreshing.store(false, Ordering::Release);
            });
        } else {
            self.refreshing.store(false, Ordering::Release);
        }
    }

    /// The default mapping: `clamp((5 − index) × 20, 0, 100)`, raised to at least 80
    /// by `is_unwanted`. An index of 5.00 with nothing else known is no data.
    pub fn evidence(&self, data: &NumberData, latency_us: u64) -> Option<Evidence> {
        let unwanted = data.is_unwanted == Some(true);
        let index = data.index.unwrap_or(INDEX_NO_DATA);
        let no_data = index == INDEX_NO_DATA
            && !unwanted
            && data.bans.unwrap_or(0) == 0
            && data.tags.as_ref().is_none_or(|t| t.categories.is_empty());
        if no_data {
            return None;
        }
        let mut score = clamp_score((INDEX_NO_DATA - index) * 20.0);
        if unwanted {
            score = score.max(UNWANTED_FLOOR);
        }
        let top_category = data
            .tags
            .as_ref()
            .and_then(|t| t.categories.iter().max_by_key(|c| c.count))
            .map(|c| {
                self.tag_name("CATEGORY", c.id)
                    .unwrap_or_else(|| format!("tag-{}", c.id))
            });
        let category = if unwanted {
            Some("Unwanted".to_string())
        } else {
            top_category.clone()
        };
        let mut raw = serde_json::to_value(data).unwrap_or_default();
        if let (Some(name), Some(obj)) = (top_category, raw.as_object_mut()) {
            obj.insert("top_category".into(), name.into());
        }
        Some(Evidence {
            source: Source::Gilraen,
            score,
            category,
            cached: false,
            latency_us,
            raw: raw.into(),
        })
    }
}

/// Maps Gilraen's error codes: 401 is "unauthorized or limit used up", 419 a
/// signature the server did not accept.
fn error_for(code: u16, message: String) -> SourceError {
    let provider = PROVIDER;
    match code {
        400 => SourceError::BadRequest {
            provider,
            code: "400".into(),
            message,
        },
        401 | 403 => SourceError::Unauthorized { provider, message },
        404 => SourceError::NotFound { provider, message },
        419 => SourceError::Signature { provider, message },
        429 => SourceError::RateLimited {
            provider,
            message,
            retry_after: None,
        },
        500..=599 => SourceError::Server {
            provider,
            status: code,
            message,
        },
        status => SourceError::Status {
            provider,
            status,
            message,
        },
    }
}

/// A [`LiveSource`] over a shared client (the dictionary refresh needs the `Arc`).
pub struct GilraenSource(pub Arc<Gilraen>);

impl LiveSource for GilraenSource {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn lookup<'a>(&'a self, e164: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            self.0.refresh_tags_if_stale();
            let started = Instant::now();
            match self.0.number(e164).await {
                Ok(data) => Ok(self.0.evidence(&data, started.elapsed().as_micros() as u64)),
                Err(SourceError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GilraenConfig {
    pub enabled: bool,
    pub base_url: String,
    pub key_env: String,
    pub secret_env: String,
    pub fields: Vec<String>,
    pub timeout_ms: u64,
}

impl Default for GilraenConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: "https://api.gilraen.biz".into(),
            key_env: "GILRAEN_KEY".into(),
            secret_env: "GILRAEN_SECRET".into(),
            fields: vec!["index".into(), "unwanted".into(), "bans".into()],
            timeout_ms: 250,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors computed outside this code, with coreutils:
    //   printf 'GETapi.gilraen.biz/v1/limitskey=nO0hy3rrzaCP9VPz8cPnCe1eyc5wiAjM3dAp2U38MB02lQmclm&timestamp=1616541199test' | sha256sum
    #[test]
    fn signature_matches_an_independently_computed_vector() {
        let params = [
            ("timestamp", "1616541199"),
            ("key", "nO0hy3rrzaCP9VPz8cPnCe1eyc5wiAjM3dAp2U38MB02lQmclm"),
        ];
        assert_eq!(
            signature("GET", "api.gilraen.biz", "/v1/limits", &params, "test"),
            "86ffc71c2764adc505d9e19473a97cacad861c01a6549974ca9d741e399950c3"
        );
        // The document's own example digest does not reproduce (see module docs).
        assert_ne!(
            signature("GET", "api.gilraen.biz", "/v1/limits", &params, "test"),
            "ddb8e8062e93d3fca4c3a624b770a29d8f4ce59c270803163c101a21b4bd5fd1"
        );
    }

    // The secret is appended raw, after the encoded parameters:
    //   printf 'GETapi.gilraen.biz/v1/numberkey=k&number=79991234567&opt_fields=bans%%2Cindex%%2Cunwanted&timestamp=1616541199s3cr+t' | sha256sum
    #[test]
    fn parameters_are_sorted_and_rfc3986_encoded() {
        let params = [
            ("opt_fields", "bans,index,unwanted"),
            ("timestamp", "1616541199"),
            ("number", "79991234567"),
            ("key", "k"),
        ];
        assert_eq!(
            signature("GET", "api.gilraen.biz", "/v1/number", &params, "s3cr+t"),
            "bc09155ec1a6f17df3345b04057136e1e6879f6b64886bb94b959355d1a9e862"
        );
        assert_eq!(encode("a b~c,d/é"), "a%20b~c%2Cd%2F%C3%A9");
    }

    fn client() -> Gilraen {
        Gilraen::new(
            "http://127.0.0.1:9/prefix/",
            "k".into(),
            "s".into(),
            &["index".into()],
            Duration::from_millis(10),
        )
        .unwrap()
    }

    #[test]
    fn host_and_path_prefix_come_from_base_url() {
        let g = client();
        assert_eq!(
            (g.host.as_str(), g.prefix.as_str()),
            ("127.0.0.1:9", "/prefix")
        );
        let q = g.signed_query("/v1/limits", &[], 1616541199);
        let expect = signature(
            "GET",
            "127.0.0.1:9",
            "/prefix/v1/limits",
            &[("key", "k"), ("timestamp", "1616541199")],
            "s",
        );
        assert_eq!(q, format!("key=k&timestamp=1616541199&signature={expect}"));
    }

    #[test]
    fn index_maps_to_score_and_unwanted_raises_it() {
        let g = client();
        let d = |index: Option<f64>, unwanted: Option<bool>| NumberData {
            index,
            is_unwanted: unwanted,
            bans: Some(3),
            ..Default::default()
        };
        assert_eq!(g.evidence(&d(Some(0.0), None), 0).unwrap().score, 100);
        assert_eq!(g.evidence(&d(Some(1.5), None), 0).unwrap().score, 70);
        assert_eq!(g.evidence(&d(Some(6.45), None), 0).unwrap().score, 0);
        let u = g.evidence(&d(Some(4.0), Some(true)), 0).unwrap();
        assert_eq!((u.score, u.category.as_deref()), (80, Some("Unwanted")));
        let nothing = NumberData {
            index: Some(5.0),
            is_unwanted: Some(false),
            ..Default::default()
        };
        assert_eq!(g.evidence(&nothing, 0), None);
    }

    #[test]
    fn error_bodies_carry_status_code_as_a_string() {
        let env: Envelope = serde_json::from_str(
            r#"{"status_code":"419","status":"signature error","message":"signature failed verification","data":""}"#,
        )
        .unwrap();
        assert_eq!(env.code(), Some(419));
        let ok: Envelope = serde_json::from_str(
            r#"{"status_code":0,"status":"success","message":"","data":{"limits":354}}"#,
        )
        .unwrap();
        assert_eq!(ok.code(), Some(0));
    }
}
