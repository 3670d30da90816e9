//! What serde cannot check: ranges, URIs, list syntax, cross-field rules.
//! Every refusal names the key and says what a good value looks like.

use super::{Config, ConfigError};
use crate::number::{Country, NumberPattern};
use crate::policy::{REJECT_CODES, THRESHOLD_NEVER};
use crate::sip::uri::SipUri;

/// Longest `sip.busy_poll_us`: past 10 ms a poll window saves nothing a
/// sleeping thread would not, and only burns CPU.
pub const MAX_BUSY_POLL_US: u32 = 10_000;

impl Config {
    /// Checks what serde cannot: ranges, URIs, list syntax, cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
        self.sip.next_hop.parse().map_err(|e| {
            invalid(
                "sip.next_hop",
                format!("{e}; expected e.g. \"sip:10.0.0.5:5060\""),
            )
        })?;
        if self.sip.accept_from.is_empty() {
            return Err(invalid(
                "sip.accept_from",
                "is empty, so every call would be refused; use [\"0.0.0.0/0\"] to accept all"
                    .into(),
            ));
        }
        if self.sip.busy_poll_us > MAX_BUSY_POLL_US {
            return Err(invalid(
                "sip.busy_poll_us",
                format!(
                    "{} µs is longer than the {MAX_BUSY_POLL_US} µs allowed; 1000 covers the gap between calls at 1,000 calls/s and above, 0 turns polling off",
                    self.sip.busy_poll_us
                ),
            ));
        }
        let max_trying = crate::sip::transaction::TRYING_DELAY.as_millis();
        if u128::from(self.sip.trying_delay_ms) > max_trying {
            return Err(invalid(
                "sip.trying_delay_ms",
                format!(
                    "{} ms is longer than the {max_trying} ms RFC 3261 allows before a 100 Trying; use 0–{max_trying} (0 sends it as the INVITE arrives)",
                    self.sip.trying_delay_ms
                ),
            ));
        }
        if self.sip.max_transactions == 0 {
            return Err(invalid(
                "sip.max_transactions",
                "is 0, so every call would get 503; at 2,000 calls/s about 66,000 are remembered (64×T1), so leave room above that".into(),
            ));
        }
        if self.sip.max_held_mb == 0 {
            return Err(invalid(
                "sip.max_held_mb",
                "is 0, so every call would get 503; give the memory remembered calls may use, e.g. 1024".into(),
            ));
        }
        let max_msg = crate::sip::message::MAX_MESSAGE_BYTES;
        if !(1024..=max_msg).contains(&self.sip.max_message_bytes) {
            return Err(invalid(
                "sip.max_message_bytes",
                format!(
                    "{} is out of range; use 1024–{max_msg} (an INVITE with SDP is usually 1–4 KB)",
                    self.sip.max_message_bytes
                ),
            ));
        }
        for (key, n) in [
            ("sip.tcp_max_connections", self.sip.tcp_max_connections),
            ("sip.tcp_max_outbound", self.sip.tcp_max_outbound),
            ("sip.tcp_max_per_source", self.sip.tcp_max_per_source),
            ("sip.tcp_idle_s", self.sip.tcp_idle_s as usize),
            (
                "sip.tcp_message_timeout_ms",
                self.sip.tcp_message_timeout_ms as usize,
            ),
            (
                "sip.tls_handshake_timeout_ms",
                self.sip.tls_handshake_timeout_ms as usize,
            ),
            (
                "sip.failover_timeout_ms",
                self.sip.failover_timeout_ms as usize,
            ),
            ("sip.ping_down_after", self.sip.ping_down_after as usize),
            ("sip.ping_up_after", self.sip.ping_up_after as usize),
        ] {
            if n == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if self.sip.tcp_max_per_source > self.sip.tcp_max_connections {
            return Err(invalid(
                "sip.tcp_max_per_source",
                format!(
                    "{} is more than sip.tcp_max_connections ({}); one source could then take every connection",
                    self.sip.tcp_max_per_source, self.sip.tcp_max_connections
                ),
            ));
        }
        let tls_listen = self
            .sip
            .tls_listen_addr()
            .map_err(|e| invalid("sip.tls_listen", e))?;
        let tls = self.sip.tls_options();
        match (&tls.cert, &tls.key) {
            (Some(_), None) => {
                return Err(invalid(
                    "sip.tls_key",
                    "is empty but sip.tls_cert is set; give the certificate's private key (PEM)"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "sip.tls_cert",
                    "is empty but sip.tls_key is set; give the certificate chain (PEM, leaf first)"
                        .into(),
                ));
            }
            (None, None) if tls_listen.is_some() => {
                return Err(invalid(
                    "sip.tls_listen",
                    "is set but sip.tls_cert and sip.tls_key are not; a TLS listener needs a certificate".into(),
                ));
            }
            _ => {}
        }
        if tls.client_ca.is_some() && tls_listen.is_none() {
            return Err(invalid(
                "sip.tls_client_ca",
                "is set but sip.tls_listen is not; client certificates are asked for on the TLS listener".into(),
            ));
        }
        if tls_listen.is_some_and(|a| {
            a.port() != 0 && a.port() == self.sip.listen.port() && a.ip() == self.sip.listen.ip()
        }) {
            return Err(invalid(
                "sip.tls_listen",
                format!(
                    "uses the port of sip.listen ({}), which TCP holds; use another port such as 5061",
                    self.sip.listen
                ),
            ));
        }
        if self.sip.timer_c_s == 0 {
            return Err(invalid(
                "sip.timer_c_s",
                "is 0, so every forwarded call would be cancelled at once; RFC 3261 asks for over 180 s, and 60–120 s is a common ring timeout".into(),
            ));
        }
        Country::from_iso(&self.numbers.default_country).ok_or_else(|| {
            invalid(
                "numbers.default_country",
                format!(
                    "unknown country {:?}; use an uppercase ISO code such as \"US\", \"GB\" or \"IN\" (supported: {})",
                    self.numbers.default_country,
                    Country::supported_list()
                ),
            )
        })?;
        let p = &self.policy;
        for (key, v) in [
            ("policy.tag_at", p.tag_at),
            ("policy.reject_at", p.reject_at),
            ("policy.divert_at", p.divert_at),
        ] {
            if v > THRESHOLD_NEVER {
                return Err(invalid(
                    key,
                    format!("{v} is out of range; use 0–100, or 101 for never"),
                ));
            }
        }
        // A threshold above the one checked before it never fires: the
        // reject threshold is looked at first, then divert, then tag.
        for (low_key, low, high_key, high) in [
            ("policy.tag_at", p.tag_at, "policy.reject_at", p.reject_at),
            ("policy.tag_at", p.tag_at, "policy.divert_at", p.divert_at),
        ] {
            if low < THRESHOLD_NEVER && high < THRESHOLD_NEVER && low > high {
                return Err(invalid(
                    low_key,
                    format!(
                        "{low} is above {high_key} = {high}, so no call would ever be tagged; lower {low_key} or raise {high_key} (101 means never)"
                    ),
                ));
            }
        }
        SipUri::parse_config(&p.divert_to).map_err(|e| {
            invalid(
                "policy.divert_to",
                format!("{e}; expected e.g. \"sip:voicemail@10.0.0.5\""),
            )
        })?;
        if !REJECT_CODES.contains(&p.reject_code) {
            return Err(invalid(
                "policy.reject_code",
                format!(
                    "{} is not supported; use one of 603, 607, 608, 486, 480",
                    p.reject_code
                ),
            ));
        }
        if !p.redress_url.is_empty() && !p.redress_url.contains("://") {
            return Err(invalid(
                "policy.redress_url",
                format!(
                    "{:?} is not an absolute URL; use e.g. \"https://redress.example\"",
                    p.redress_url
                ),
            ));
        }
        if p.redress_url.contains(['"', ';', '>', '<', '\r', '\n']) {
            return Err(invalid(
                "policy.redress_url",
                "must not contain quotes, ';', '<', '>' or line breaks (it is written into SIP headers)".into(),
            ));
        }
        if p.lookup_budget_ms == 0 || p.lookup_budget_ms > 10_000 {
            return Err(invalid(
                "policy.lookup_budget_ms",
                format!("{} is out of range; use 1–10000", p.lookup_budget_ms),
            ));
        }
        for (key, list) in [
            ("policy.allow", &p.allow),
            ("policy.deny", &p.deny),
            ("policy.screen_called", &p.screen_called),
            ("policy.skip_called", &p.skip_called),
        ] {
            for entry in list {
                NumberPattern::parse(entry)
                    .map_err(|e| invalid(key, format!("entry {entry:?}: {e}")))?;
            }
        }
        let h = &self.hiya_cache;
        if !(0.0..=100.0).contains(&h.max_bad_percent) {
            return Err(invalid(
                "hiya_cache.max_bad_percent",
                format!("{} is out of range; use 0–100", h.max_bad_percent),
            ));
        }
        for cc in &h.countries {
            crate::reputation::hiya_cache::check_country(cc)
                .map_err(|e| invalid("hiya_cache.countries", e))?;
        }
        if h.refresh_minutes == 0 {
            return Err(invalid(
                "hiya_cache.refresh_minutes",
                "must be at least 1".into(),
            ));
        }
        if !(1..=1000).contains(&self.history.batch_ms) {
            return Err(invalid(
                "history.batch_ms",
                format!(
                    "{} is out of range; use 1–1000 (20 keeps inserts to a few large transactions a second)",
                    self.history.batch_ms
                ),
            ));
        }
        if self.history.backend == crate::history::Backend::Postgres {
            if self.history.url.trim().is_empty() {
                return Err(invalid(
                    "history.url",
                    "backend = \"postgres\" needs url = \"postgres://user@host:5432/database\""
                        .into(),
                ));
            }
            if let Err(e) = crate::history::PgTarget::new(&self.history.url, None, None) {
                return Err(invalid("history.url", e.to_string()));
            }
            if self.history.spool_max_mb == 0 {
                return Err(invalid(
                    "history.spool_max_mb",
                    "must be at least 1 (records wait there while PostgreSQL is down)".into(),
                ));
            }
        }
        if !(1..=1000).contains(&self.admin.event_clients) {
            return Err(invalid(
                "admin.event_clients",
                format!("{} is out of range; use 1–1000", self.admin.event_clients),
            ));
        }
        let st = &self.stir;
        if !(1..=3600).contains(&st.max_age_s) {
            return Err(invalid(
                "stir.max_age_s",
                format!(
                    "{} is out of range; use 1–3600 (ATIS-1000074 uses 60)",
                    st.max_age_s
                ),
            ));
        }
        if !(1..=10_000).contains(&st.fetch_timeout_ms) {
            return Err(invalid(
                "stir.fetch_timeout_ms",
                format!("{} is out of range; use 1–10000", st.fetch_timeout_ms),
            ));
        }
        if st.cert_cache_entries == 0 {
            return Err(invalid(
                "stir.cert_cache_entries",
                "must be at least 1".into(),
            ));
        }
        if st.mode == crate::stir::StirMode::Verify && st.trust_anchors.as_os_str().is_empty() {
            return Err(invalid(
                "stir.trust_anchors",
                "stir.mode = \"verify\" needs a PEM bundle of the STI certificate authorities to trust".into(),
            ));
        }
        if self.policy.not_spam_days == 0 {
            return Err(invalid(
                "policy.not_spam_days",
                "must be at least 1 (a not_spam report allowlists the number for that many days)"
                    .into(),
            ));
        }
        self.validate_providers()?;
        self.own_numbers
            .validate()
            .map_err(|e| invalid("own_numbers", e.to_string()))?;
        if self.own_numbers.watches(crate::own::Provider::HiyaStatus)
            && self.providers.hiya_status.base_url.is_empty()
        {
            return Err(invalid(
                "providers.hiya_status.base_url",
                "own_numbers are watched with hiya_status, which needs the API's base_url (and its key in providers.hiya_status.api_key_env)".into(),
            ));
        }
        if self.labels.display_prefix.contains(['"', '\\', '\r', '\n']) {
            return Err(invalid(
                "labels.display_prefix",
                "must not contain quotes, backslashes or line breaks".into(),
            ));
        }
        Ok(())
    }

    fn validate_providers(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
        let p = &self.providers;
        for (key, ms) in [
            ("providers.didchecks.timeout_ms", p.didchecks.timeout_ms),
            ("providers.gilraen.timeout_ms", p.gilraen.timeout_ms),
            ("providers.hiya_status.timeout_ms", p.hiya_status.timeout_ms),
        ] {
            if ms == 0 || ms > 60_000 {
                return Err(invalid(key, format!("{ms} is out of range; use 1–60000")));
            }
        }
        for (key, url, enabled) in [
            (
                "providers.didchecks.base_url",
                &p.didchecks.base_url,
                p.didchecks.enabled,
            ),
            (
                "providers.gilraen.base_url",
                &p.gilraen.base_url,
                p.gilraen.enabled,
            ),
            (
                "providers.hiya_status.base_url",
                &p.hiya_status.base_url,
                p.hiya_status.enabled,
            ),
        ] {
            if (enabled || !url.is_empty()) && reqwest::Url::parse(url).is_err() {
                return Err(invalid(
                    key,
                    format!(
                        "{url:?} is not an absolute http(s) URL; use e.g. \"https://api.example.com\""
                    ),
                ));
            }
        }
        if p.didchecks.max_requests_per_second == 0 {
            return Err(invalid(
                "providers.didchecks.max_requests_per_second",
                "must be at least 1 (the API documents 10)".into(),
            ));
        }
        if p.gilraen.fields.is_empty() {
            return Err(invalid(
                "providers.gilraen.fields",
                "is empty; use e.g. [\"index\", \"unwanted\", \"bans\"]".into(),
            ));
        }
        let known = crate::reputation::providers::gilraen::FIELDS;
        for f in &p.gilraen.fields {
            if !known.contains(&f.as_str()) {
                return Err(invalid(
                    "providers.gilraen.fields",
                    format!("unknown field {f:?}; use any of {}", known.join(", ")),
                ));
            }
        }
        if !p.hiya_status.path.starts_with('/') || !p.hiya_status.path.contains("{phone}") {
            return Err(invalid(
                "providers.hiya_status.path",
                "must start with '/' and contain {phone}, e.g. \"/v1/reputation/status/{phone}\""
                    .into(),
            ));
        }
        if p.hiya_status.auth_header.is_empty()
            || reqwest::header::HeaderName::from_bytes(p.hiya_status.auth_header.as_bytes())
                .is_err()
        {
            return Err(invalid(
                "providers.hiya_status.auth_header",
                "is not a valid HTTP header name; use e.g. \"Authorization\"".into(),
            ));
        }
        let c = &self.live_cache;
        if c.ttl_minutes == 0 || c.negative_ttl_minutes == 0 {
            return Err(invalid(
                "live_cache.ttl_minutes",
                "ttl_minutes and negative_ttl_minutes must be at least 1".into(),
            ));
        }
        if c.max_entries == 0 {
            return Err(invalid(
                "live_cache.max_entries",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
