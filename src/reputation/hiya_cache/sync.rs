//! Downloading a country's cache from the Hiya Protect Cache API.
//!
//! `GET {base_url}/v1/caches/phones?country=CC` with HTTP Basic auth answers
//! `307` with a signed URL (Location header, and in the body) that lives 30
//! seconds. The client follows it itself, not reqwest's redirect policy, for
//! two reasons: the Basic credentials must not travel to the signed URL's
//! host, and each status of the signed URL means something different
//! (`304` keep, `403` expired: ask for a fresh URL). The file is streamed to
//! disk and built by [`super::build`]; the file name is never relied on.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_NONE_MATCH, LOCATION, RETRY_AFTER};
use tokio::io::AsyncWriteExt;

use super::build::{BuildError, BuildOptions, Manifest, build_generation};
use super::store::current_generation;

/// After a 404 the spec says to try again in an hour.
pub const RETRY_AFTER_NOT_FOUND: Duration = Duration::from_secs(3600);
/// 429 without a usable Retry-After: wait this long.
pub const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// How many fresh signed URLs (after 403 expired) or 408 retries per sync.
pub const MAX_ATTEMPTS: usize = 3;
/// The file that records the last successful check of a country (unix ms).
pub const LAST_CHECK_FILE: &str = "last_check";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    #[error("{0}")]
    Country(String),
    #[error(
        "Hiya credentials missing: set the environment variable {env} (named by hiya_cache.{key})"
    )]
    Credentials { env: String, key: &'static str },
    #[error(
        "cannot reach the Hiya cache API for {country} ({source}); check hiya_cache.base_url and this machine's network"
    )]
    Network {
        country: String,
        source: reqwest::Error,
    },
    #[error("the Hiya cache API answered {status} for {country}: {message}")]
    Status {
        country: String,
        status: u16,
        message: String,
    },
    #[error("the Hiya cache for {country} is not available right now (404); retrying in an hour")]
    NotFound { country: String },
    #[error(
        "the Hiya cache API no longer serves {country} (410 Gone); remove it from hiya_cache.countries"
    )]
    Gone { country: String },
    #[error(
        "the Hiya cache API rate-limited the sync of {country} (429); retrying in {retry_after:?}"
    )]
    RateLimited {
        country: String,
        retry_after: Duration,
    },
    #[error(
        "the signed download URL for {country} kept expiring or timing out after {MAX_ATTEMPTS} attempts"
    )]
    Exhausted { country: String },
    #[error(
        "cannot store the download for {country} ({source}); check the free space and permissions of hiya_cache.dir"
    )]
    Io {
        country: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl SyncError {
    /// When the scheduler should try this country again (`None`: never).
    pub fn retry_after(&self, normal: Duration) -> Option<Duration> {
        match self {
            SyncError::Gone { .. } | SyncError::Country(_) => None,
            SyncError::NotFound { .. } => Some(RETRY_AFTER_NOT_FOUND),
            SyncError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => Some(normal),
        }
    }
}

/// What a sync did.
#[derive(Debug)]
#[non_exhaustive]
pub enum SyncOutcome {
    /// A new generation was built and made current.
    Updated(Manifest),
    /// 304: the serving generation is still the newest.
    NotModified,
}

pub struct SyncClient {
    http: reqwest::Client,
    base_url: String,
    id: String,
    secret: String,
    /// Show a download progress bar when stderr is a terminal (the CLI);
    /// `serve` leaves it off and stays quiet.
    progress: bool,
}

impl SyncClient {
    /// A client with credentials from the environment variables the config names.
    pub fn from_env(base_url: &str, id_env: &str, secret_env: &str) -> Result<Self, SyncError> {
        let get = |env: &str, key| {
            std::env::var(env)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| SyncError::Credentials {
                    env: env.to_string(),
                    key,
                })
        };
        Ok(Self::new(
            base_url,
            get(id_env, "credential_id_env")?,
            get(secret_env, "credential_secret_env")?,
        ))
    }

    pub fn new(base_url: &str, id: String, secret: String) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("static HTTP client configuration");
        SyncClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            id,
            secret,
            progress: false,
        }
    }

    /// Shows download progress on a terminal.
    pub fn with_progress(mut self) -> Self {
        self.progress = true;
        self
    }

    /// Syncs one country into `<dir>/<CC>`: builds a new generation when the
    /// file changed, leaves the serving one untouched otherwise or on error.
    pub async fn sync_country(
        &self,
        dir: &Path,
        country: &str,
        max_bad_percent: f64,
    ) -> Result<SyncOutcome, SyncError> {
        super::check_country(country).map_err(SyncError::Country)?;
        let country_dir = dir.join(country);
        let etag = stored_etag(&country_dir);
        let net = |source| SyncError::Network {
            country: country.to_string(),
            source,
        };
        for _ in 0..MAX_ATTEMPTS {
            let signed = match self.signed_url(country).await? {
                Some(url) => url,
                None => continue, // 408: ask again
            };
            let mut req = self.http.get(&signed);
            if let Some(tag) = &etag {
                req = req.header(IF_NONE_MATCH, tag);
            }
            let resp = req.send().await.map_err(net)?;
            match resp.status() {
                StatusCode::OK => {
                    let new_etag = resp
                        .headers()
                        .get(ETAG)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let file = self.download(resp, &country_dir, country).await?;
                    let mut opts = BuildOptions::new(country);
                    opts.etag = new_etag;
                    opts.max_bad_percent = max_bad_percent;
                    let (cdir, f) = (country_dir.clone(), file.clone());
                    let built = tokio::task::spawn_blocking(move || {
                        let input = std::fs::File::open(&f).map_err(|e| BuildError::Io {
                            path: f.clone(),
                            source: e,
                        })?;
                        build_generation(std::io::BufReader::new(input), &cdir, &opts)
                    })
                    .await
                    .map_err(|e| SyncError::Io {
                        country: country.to_string(),
                        source: std::io::Error::other(e),
                    })?;
                    let _ = std::fs::remove_file(&file);
                    let manifest = built?;
                    record_check(&country_dir);
                    return Ok(SyncOutcome::Updated(manifest));
                }
                StatusCode::NOT_MODIFIED => {
                    record_check(&country_dir);
                    return Ok(SyncOutcome::NotModified);
                }
                // The signed URL expired before we used it: ask for a fresh one.
                StatusCode::FORBIDDEN | StatusCode::REQUEST_TIMEOUT => continue,
                StatusCode::NOT_FOUND => {
                    return Err(SyncError::NotFound {
                        country: country.into(),
                    });
                }
                other => return Err(status_error(country, other, resp).await),
            }
        }
        Err(SyncError::Exhausted {
            country: country.into(),
        })
    }

    /// Asks the API for a signed URL. `Ok(None)`: 408, try again.
    async fn signed_url(&self, country: &str) -> Result<Option<String>, SyncError> {
        let resp = self
            .http
            // `country` is checked as [A-Z]{2}: nothing to escape.
            .get(format!(
                "{}/v1/caches/phones?country={country}",
                self.base_url
            ))
            .basic_auth(&self.id, Some(&self.secret))
            .send()
            .await
            .map_err(|source| SyncError::Network {
                country: country.to_string(),
                source,
            })?;
        match resp.status() {
            StatusCode::TEMPORARY_REDIRECT => {
                let location = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let url =
                    match location {
                        Some(url) => url,
                        // The body carries the URL too (as JSON or plain text).
                        None => url_in_body(&resp.text().await.unwrap_or_default()).ok_or_else(
                            || SyncError::Status {
                                country: country.into(),
                                status: 307,
                                message: "redirect without a Location header or URL in the body"
                                    .into(),
                            },
                        )?,
                    };
                Ok(Some(url))
            }
            StatusCode::REQUEST_TIMEOUT => Ok(None),
            StatusCode::NOT_FOUND => Err(SyncError::NotFound {
                country: country.into(),
            }),
            StatusCode::GONE => Err(SyncError::Gone {
                country: country.into(),
            }),
            StatusCode::TOO_MANY_REQUESTS => {
                let retry_after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(DEFAULT_RATE_LIMIT_WAIT, Duration::from_secs);
                Err(SyncError::RateLimited {
                    country: country.into(),
                    retry_after,
                })
            }
            other => Err(status_error(country, other, resp).await),
        }
    }

    /// Streams the body to a file next to the generations (never whole in memory).
    async fn download(
        &self,
        resp: reqwest::Response,
        country_dir: &Path,
        country: &str,
    ) -> Result<PathBuf, SyncError> {
        let io = |source| SyncError::Io {
            country: country.to_string(),
            source,
        };
        tokio::fs::create_dir_all(country_dir).await.map_err(io)?;
        let path = country_dir.join(format!(".download-{}.tsv.gz", std::process::id()));
        let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
        let bar = {
            use std::io::IsTerminal;
            (self.progress && std::io::stderr().is_terminal()).then(|| {
                let bar = indicatif::ProgressBar::new(resp.content_length().unwrap_or(0));
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix} {bar:40} {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar.set_prefix(country.to_string());
                bar
            })
        };
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| SyncError::Network {
                country: country.to_string(),
                source,
            })?;
            file.write_all(&chunk).await.map_err(io)?;
            if let Some(b) = &bar {
                b.inc(chunk.len() as u64);
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        file.sync_all().await.map_err(io)?;
        Ok(path)
    }
}

async fn status_error(country: &str, status: StatusCode, resp: reqwest::Response) -> SyncError {
    let body = resp.text().await.unwrap_or_default();
    let message: String = body.trim().chars().take(300).collect();
    SyncError::Status {
        country: country.to_string(),
        status: status.as_u16(),
        message: if message.is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            message
        },
    }
}

/// A URL in a 307 body: `{"url": "..."}` or the text itself.
fn url_in_body(body: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        for key in ["url", "location", "signedUrl", "signed_url"] {
            if let Some(u) = v.get(key).and_then(|u| u.as_str()) {
                return Some(u.to_string());
            }
        }
    }
    let t = body.trim();
    (t.starts_with("http://") || t.starts_with("https://")).then(|| t.to_string())
}

/// The ETag of the serving generation, for If-None-Match.
fn stored_etag(country_dir: &Path) -> Option<String> {
    let generation = current_generation(country_dir)?;
    let text = std::fs::read(
        country_dir
            .join(generation)
            .join(super::build::MANIFEST_FILE),
    )
    .ok()?;
    serde_json::from_slice::<Manifest>(&text).ok()?.etag
}

fn record_check(country_dir: &Path) {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let _ = std::fs::write(country_dir.join(LAST_CHECK_FILE), ms.to_string());
}

/// The last successful check of a country (unix ms), if any.
pub fn last_check(country_dir: &Path) -> Option<u64> {
    std::fs::read_to_string(country_dir.join(LAST_CHECK_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_url_is_found_in_json_or_text_bodies() {
        assert_eq!(
            url_in_body(r#"{"url":"https://s3.example/x?sig=1"}"#).as_deref(),
            Some("https://s3.example/x?sig=1")
        );
        assert_eq!(
            url_in_body("https://s3.example/y\n").as_deref(),
            Some("https://s3.example/y")
        );
        assert_eq!(url_in_body("nothing"), None);
    }

    #[test]
    fn retry_policy_follows_the_spec() {
        let normal = Duration::from_secs(600);
        assert_eq!(
            SyncError::NotFound {
                country: "IN".into()
            }
            .retry_after(normal),
            Some(RETRY_AFTER_NOT_FOUND)
        );
        assert_eq!(
            SyncError::Gone {
                country: "IN".into()
            }
            .retry_after(normal),
            None
        );
        let limited = SyncError::RateLimited {
            country: "IN".into(),
            retry_after: Duration::from_secs(7),
        };
        assert_eq!(limited.retry_after(normal), Some(Duration::from_secs(7)));
    }
}
