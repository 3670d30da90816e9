//! sipsentry: an inline SIP call-screening proxy.
//!
//! The layers, each depending only on those listed before it
//! (docs/architecture.md has the map and the call path):
//!
//! - [`number`], [`metrics`], [`pem`]: leaves (E.164 numbers; the `/metrics`
//!   registry every module reports to; PEM certificates and keys).
//! - [`sip`]: SIP on the wire ([`sip::message`], [`sip::header`],
//!   [`sip::uri`], [`sip::relay`]), the transport ([`sip::transport`]),
//!   INVITE transactions and timers ([`sip::transaction`]) and the proxy
//!   core ([`sip::proxy`]), which reaches call screening only through its
//!   [`sip::proxy::Screen`] trait.
//! - [`reputation`]: evidence and its sources: the Hiya local cache, the
//!   live providers behind the live cache; [`stir`]: caller-ID
//!   authentication (STIR/SHAKEN), whose outcome is evidence too.
//! - [`policy`]: from evidence to an [`policy::Action`]; [`history`]: every
//!   decision, written to SQLite off the call path; [`lists`]: the
//!   operator's runtime allow/deny lists and spam reports, kept beside it.
//! - [`pipeline`]: the screening phases, and the proxy's `Screen`.
//! - [`own`]: the operator's own numbers, watched for spam labels (Hiya
//!   status on a schedule, DIDChecks routines), results kept over time.
//! - [`cluster`]: the state nodes share through Redis (the live lookups'
//!   second level, claims, rate slots, updates to every node).
//! - [`config`]: the TOML file, assembled from each module's own options.
//! - [`check`], [`reload`], [`server`], [`admin`]: one number explained, the
//!   policy reloaded, the SIP service, the HTTP API.
//! - [`app`]: the composition root that builds and runs it all; [`cli`]:
//!   the commands behind the thin `main.rs`; [`error`]: their error and
//!   exit code; [`bench`](mod@bench): `sipsentry bench`, the per-call
//!   latency instrument.

pub mod admin;
pub mod app;
pub mod bench;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod error;
pub mod history;
pub mod lists;
pub mod metrics;
pub mod number;
pub mod own;
pub mod pem;
pub mod pipeline;
pub mod policy;
pub mod reload;
pub mod reputation;
pub mod server;
pub mod sip;
pub mod stir;

pub use error::{Error, ErrorKind, Result};
