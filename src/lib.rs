//! sipsentry: an inline SIP call-screening proxy.
//!
//! A call moves through these modules, in order:
//!
//! - [`sip::transport`]: UDP and TCP on one port, bounded queues.
//! - [`sip::message`]: framing and a lazy header view over the received bytes.
//! - [`sip::proxy`] + [`sip::transaction`]: RFC 3261 §16–17 proxying; INVITEs are
//!   held in a server transaction while they are screened.
//! - [`sip::caller`] + [`number`]: who is calling, as E.164.
//! - [`pipeline`]: the screening phases (lists, anonymous, local and live
//!   reputation sources from [`reputation`], score) ending in a [`policy::Decision`].
//!   The local source in production is [`reputation::hiya_cache`]: synced,
//!   validated, fst-indexed and memory-mapped per country.
//!   Live providers ([`reputation::providers`]) sit behind [`reputation::live`]:
//!   the live cache, single flight, deadlines and circuit breakers.
//! - [`sip::relay`]: the decision applied by splicing edits into the original bytes.
//! - [`history`]: every decision, written to SQLite off the call path.
//!
//! Around the call path: [`admin`] (HTTP API, DIDChecks webhook), [`metrics`]
//! (`/metrics`), [`reload`] (policy reload on SIGHUP or by API).
//!
//! [`config`] is the TOML contract; [`server`] starts and drains it all;
//! [`cli`] holds the command implementations behind the thin `main.rs`;
//! [`bench`](mod@bench) is `sipsentry bench`, the per-call latency instrument.

pub mod admin;
pub mod bench;
pub mod cli;
pub mod config;
pub mod history;
pub mod metrics;
pub mod number;
pub mod pipeline;
pub mod policy;
pub mod reload;
pub mod reputation;
pub mod server;
pub mod sip;
