//! What the proxy asks of call screening, and what it gets back.
//!
//! The proxy core knows SIP, not reputation: for each new INVITE it hands
//! the screening side a [`NewCall`] and gets a [`Verdict`] (relay it, with
//! these labels and this Request-URI; or answer it here with this final
//! response). Screening that can decide at once does so on the SIP thread
//! ([`Screened::Decided`]); a call that needs a live lookup hands back its
//! per-call state ([`Screen::Call`], in the manner of pingora's `CTX`), and
//! the proxy finishes it on a task ([`Screen::finish`]) while the INVITE
//! waits in its server transaction.

use std::future::Future;
use std::net::SocketAddr;

use crate::sip::message::Message;

/// A new INVITE, as screening sees it.
#[derive(Debug, Clone, Copy)]
pub struct NewCall<'a> {
    pub invite: &'a Message,
    /// Where it came from.
    pub source: SocketAddr,
    /// Whether `source` is in `sip.trusted_peers`, whose identity headers
    /// (P-Asserted-Identity, Remote-Party-ID) may be believed.
    pub trusted: bool,
}

/// The first phase's answer.
#[derive(Debug)]
pub enum Screened<C> {
    Decided(Verdict),
    /// Screening must wait for somebody (a live provider): finish `C` on a
    /// task.
    Pending(C),
}

/// What to do with a screened INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Relay it to the next hop.
    Relay {
        /// A new Request-URI (a call diverted by retargeting).
        retarget: Option<String>,
        /// Label headers to add (a tagged call).
        labels: Option<Labels>,
        /// Screening's own name for the call: when set, the final response
        /// the trunk gets for it is reported to [`Screen::relayed_final`].
        track: Option<String>,
        /// The `verstat` to put on the caller's identity (P-Asserted-Identity,
        /// else From), replacing any received one.
        verstat: Option<&'static str>,
    },
    /// Answer it here with a final response (rejected, redirected).
    Answer {
        code: u16,
        /// Extra header lines, without line ends (`Reason: …`, `Contact: …`).
        headers: Vec<String>,
    },
}

impl Verdict {
    /// Relay unchanged.
    pub const PASS: Verdict = Verdict::Relay {
        retarget: None,
        labels: None,
        track: None,
        verstat: None,
    };
}

/// The labels of a tagged call, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    /// Whole header lines, each ending in CRLF, added at the end of the
    /// header section.
    pub lines: String,
    /// Put before the display name in From and P-Asserted-Identity (empty:
    /// leave them alone).
    pub display_prefix: std::sync::Arc<str>,
}

/// Call screening, as the proxy uses it.
pub trait Screen: Send + Sync + 'static {
    /// Per-call state between the first phase and the last.
    type Call: Send + 'static;

    /// Screens a new INVITE on the SIP thread. Must not wait: anything
    /// that would is left to [`Screen::finish`].
    fn begin(&self, call: NewCall<'_>) -> Screened<Self::Call>;

    /// Finishes screening a pending call (off the SIP thread).
    fn finish(&self, call: Self::Call) -> impl Future<Output = Verdict> + Send;

    /// The verdict for a pending call the proxy has no room to wait for
    /// (too many calls under screening at once).
    fn overloaded(&self, call: Self::Call) -> Verdict;

    /// The final response the trunk got for a relayed call whose verdict
    /// had a `track`: the PBX's, or the proxy's own 408 or 487 when the PBX
    /// did not answer in time or the call was cancelled. `after` is the
    /// time from relaying the INVITE. Called on the SIP thread: must not
    /// wait. The track is handed over, so keeping it costs no copy.
    fn relayed_final(&self, track: String, code: u16, after: std::time::Duration) {
        let _ = (track, code, after);
    }
}
