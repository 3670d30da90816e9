//! Why a live source gave no answer.
//!
//! One enum for every provider, so the pipeline, the circuit breaker and the
//! metrics treat "the provider refused us" alike whoever the provider is. Each
//! message carries the provider's own words and says what to check; none ever
//! carries a token, key, secret or a signed URL.

/// A live lookup that produced no evidence, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error("{provider}: no credential: set the environment variable {env}")]
    MissingCredential { provider: &'static str, env: String },
    #[error("{provider}: request refused as invalid (HTTP 400, {code}): {message}")]
    BadRequest {
        provider: &'static str,
        code: String,
        message: String,
    },
    #[error("{provider}: unauthorized (HTTP 401): {message}; check the API credential")]
    Unauthorized {
        provider: &'static str,
        message: String,
    },
    #[error("{provider}: out of credit (HTTP 402): {message}; top up the account")]
    PaymentRequired {
        provider: &'static str,
        message: String,
    },
    #[error("{provider}: not found (HTTP 404): {message}")]
    NotFound {
        provider: &'static str,
        message: String,
    },
    #[error(
        "{provider}: request signature refused (HTTP 419): {message}; check the secret and this machine's clock"
    )]
    Signature {
        provider: &'static str,
        message: String,
    },
    #[error(
        "{provider}: rate limited (HTTP 429): {message}; lower the request rate for this provider"
    )]
    RateLimited {
        provider: &'static str,
        message: String,
        /// The provider's `Retry-After`, when it sent one in seconds.
        retry_after: Option<std::time::Duration>,
    },
    #[error("{provider}: held back by our own limit of {per_second} requests/s")]
    Throttled {
        provider: &'static str,
        per_second: u32,
    },
    #[error("{provider}: server error (HTTP {status}): {message}")]
    Server {
        provider: &'static str,
        status: u16,
        message: String,
    },
    #[error(
        "{provider}: unexpected HTTP {status}: {message}; check that base_url points at the provider's API"
    )]
    Status {
        provider: &'static str,
        status: u16,
        message: String,
    },
    #[error(
        "{provider}: malformed response: {message}; not the documented format (check base_url, or the provider changed its API)"
    )]
    Malformed {
        provider: &'static str,
        message: String,
    },
    #[error("{provider}: {message} (check base_url and that the host is reachable)")]
    Transport {
        provider: &'static str,
        message: String,
    },
    #[error(
        "{provider}: no answer within {ms} ms; raise its timeout_ms or check the provider's status"
    )]
    Timeout { provider: &'static str, ms: u64 },
    #[error("{provider}: skipped: circuit breaker open after repeated failures")]
    CircuitOpen { provider: &'static str },
    #[error("{provider}: skipped: {limit} requests already in flight")]
    Saturated {
        provider: &'static str,
        limit: usize,
    },
    /// For sources supplied by an embedding program.
    #[error("{provider}: {message}")]
    Failed {
        provider: &'static str,
        message: String,
    },
}

impl SourceError {
    /// Whether this failure counts against the provider's circuit breaker
    /// (401/402/419/429/5xx, and anything that means the
    /// provider is unreachable or broken). A 400 or 404 is about one number,
    /// and our own throttling or skipping is not the provider's fault.
    pub fn trips_breaker(&self) -> bool {
        !matches!(
            self,
            SourceError::BadRequest { .. }
                | SourceError::NotFound { .. }
                | SourceError::Throttled { .. }
                | SourceError::CircuitOpen { .. }
                | SourceError::Saturated { .. }
                | SourceError::MissingCredential { .. }
        )
    }

    /// A short stable name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::MissingCredential { .. } => "no_credential",
            SourceError::BadRequest { .. } => "bad_request",
            SourceError::Unauthorized { .. } => "unauthorized",
            SourceError::PaymentRequired { .. } => "payment_required",
            SourceError::NotFound { .. } => "not_found",
            SourceError::Signature { .. } => "signature",
            SourceError::RateLimited { .. } => "rate_limited",
            SourceError::Throttled { .. } => "throttled",
            SourceError::Server { .. } => "server_error",
            SourceError::Status { .. } => "http_status",
            SourceError::Malformed { .. } => "malformed",
            SourceError::Transport { .. } => "transport",
            SourceError::Timeout { .. } => "timeout",
            SourceError::CircuitOpen { .. } => "circuit_open",
            SourceError::Saturated { .. } => "saturated",
            SourceError::Failed { .. } => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_number_answers_and_our_own_limits_do_not_trip_the_breaker() {
        let p = "x";
        assert!(
            !SourceError::NotFound {
                provider: p,
                message: String::new()
            }
            .trips_breaker()
        );
        assert!(
            !SourceError::Throttled {
                provider: p,
                per_second: 10
            }
            .trips_breaker()
        );
        assert!(SourceError::Timeout { provider: p, ms: 1 }.trips_breaker());
        assert!(
            SourceError::Signature {
                provider: p,
                message: String::new()
            }
            .trips_breaker()
        );
        assert!(
            SourceError::Server {
                provider: p,
                status: 503,
                message: String::new()
            }
            .trips_breaker()
        );
    }
}
