//! The pipeline as the proxy's [`Screen`]: who is calling, read from the
//! INVITE; the phases run; and the decision turned into what the proxy
//! does on the wire (the labels of a tag, the Request-URI of a retarget,
//! the final response of a reject or redirect).

use std::sync::Arc;
use std::time::Duration;

use super::{CallCtx, Pipeline};
use crate::policy::{Action, Decision, DivertMode, LabelsConfig, Policy, Rule};
use crate::sip::caller;
use crate::sip::header::lossy;
use crate::sip::proxy::{Labels, NewCall, Screen, Screened, Verdict};
use crate::sip::relay::push_quoted_safe;
use crate::sip::uri::Uri;

impl Screen for Pipeline {
    type Call = CallCtx;

    fn begin(&self, call: NewCall<'_>) -> Screened<CallCtx> {
        // One policy for the whole call: identification, screening and the
        // verdict (a reload mid-call does not mix two).
        let policy = self.policy();
        let msg = call.invite;
        let who = caller::identify(msg, call.trusted, &policy.country);
        let called = Uri::parse(&lossy(msg.request_uri()))
            .and_then(|u| u.user_base().map(|u| u.into_owned()))
            .unwrap_or_default();
        let call_id = lossy(msg.call_id()).into_owned();
        let mut ctx =
            CallCtx::new(call_id, call.source, who, called).with_policy(Arc::clone(&policy));
        ctx.trusted = call.trusted;
        if self.stir().is_some() {
            ctx.identity = identity_header(msg);
        }
        match self.screen_now(&mut ctx) {
            Some(d) => Screened::Decided(self.tracked(&policy, d)),
            None => Screened::Pending(ctx),
        }
    }

    async fn finish(&self, mut ctx: CallCtx) -> Verdict {
        let d = self.screen_live(&mut ctx).await;
        self.tracked(&self.call_policy(&mut ctx), d)
    }

    fn overloaded(&self, mut ctx: CallCtx) -> Verdict {
        let d = self.overload(&mut ctx);
        self.tracked(&self.call_policy(&mut ctx), d)
    }

    fn relayed_final(&self, track: String, code: u16, after: Duration) {
        if let Some(sink) = self.history() {
            sink.final_response(track, code, after);
        }
    }
}

impl Pipeline {
    /// The verdict, asking for the relayed call's final response when the
    /// history records it (the decision id names the row).
    fn tracked(&self, policy: &Policy, d: Decision) -> Verdict {
        let mut v = verdict(policy, &d);
        if let Verdict::Relay { track, .. } = &mut v
            && self.history().is_some()
        {
            *track = Some(d.id);
        }
        v
    }
}

/// The Identity header to verify: the first with `ppt=shaken`, else the
/// first (RFC 8224 allows several; SHAKEN signs one).
fn identity_header(msg: &crate::sip::message::Message) -> Option<String> {
    use crate::sip::message::HeaderName;
    let mut first = None;
    for h in msg.headers_named(HeaderName::Identity) {
        let v = msg.value(h);
        let shaken = v.windows(10).any(|w| {
            w.eq_ignore_ascii_case(b"ppt=shaken") || w.eq_ignore_ascii_case(b"ppt=\"shake")
        });
        if shaken {
            return Some(lossy(v).into_owned());
        }
        first.get_or_insert(v);
    }
    first.map(|v| lossy(v).into_owned())
}

/// What the proxy does for a decision, under the call's policy.
pub fn verdict(policy: &Policy, d: &Decision) -> Verdict {
    match d.action {
        Action::Reject => {
            let code = d.response_code.unwrap_or(policy.config.reject_code);
            Verdict::Answer {
                code,
                headers: reject_headers(policy, d, code),
            }
        }
        Action::Divert if policy.config.divert_mode == DivertMode::Redirect => Verdict::Answer {
            code: 302,
            headers: vec![format!("Contact: <{}>", policy.divert_to.text)],
        },
        Action::Divert => Verdict::Relay {
            retarget: Some(policy.divert_to.text.clone()),
            labels: None,
            track: None,
            verstat: d.verstat,
        },
        Action::Tag => Verdict::Relay {
            retarget: None,
            labels: Some(Labels {
                lines: label_lines(d, &policy.labels),
                display_prefix: std::sync::Arc::clone(&policy.display_prefix),
            }),
            track: None,
            verstat: d.verstat,
        },
        _ if d.verstat.is_some() => Verdict::Relay {
            retarget: None,
            labels: None,
            track: None,
            verstat: d.verstat,
        },
        _ => Verdict::PASS,
    }
}

/// The headers of a rejection: the ATIS-1000099 (603+) Reason with the
/// decision id for a 603, the jWSCard Call-Info for a 608 with a redress
/// URL.
fn reject_headers(policy: &Policy, d: &Decision, code: u16) -> Vec<String> {
    let url = &policy.config.redress_url;
    match code {
        603 => {
            let url_part = if url.is_empty() {
                String::new()
            } else {
                format!("url={url};")
            };
            vec![format!(
                "Reason: SIP;cause=603;text=\"v=analytics1;{url_part}id={}\";location=LN",
                d.id
            )]
        }
        608 if !url.is_empty() => vec![format!("Call-Info: <{url}>;purpose=jwscard")],
        _ => Vec::new(),
    }
}

/// The label header lines of a tag decision (docs/sip.md, "Labels"), each
/// switchable. Built with `push_str` rather than `format!`: this runs for
/// every tagged call.
pub fn label_lines(d: &Decision, cfg: &LabelsConfig) -> String {
    let mut out = String::with_capacity(256);
    let mut digits = itoa::Buffer::new();
    let score = digits.format(d.score);
    if cfg.call_info {
        out.push_str("Call-Info: <data:,>;purpose=info;type=spam;confidence=");
        out.push_str(score);
        out.push_str(";source=sipsentry;origin=\"");
        out.push_str(d.origin());
        out.push_str("\"\r\n");
    }
    if cfg.x_headers {
        let verdict = if d.rule == Rule::Anonymous {
            "anonymous"
        } else {
            "spam"
        };
        out.push_str("X-Sipsentry-Score: ");
        out.push_str(score);
        out.push_str("\r\nX-Sipsentry-Verdict: ");
        out.push_str(verdict);
        if let Some(cat) = &d.category {
            out.push_str("; category=\"");
            push_quoted_safe(&mut out, cat);
            out.push('"');
        }
        let mut first = true;
        for (i, e) in d.evidence.iter().enumerate() {
            let name = e.source.as_str();
            if d.evidence[..i].iter().any(|p| p.source == e.source) {
                continue;
            }
            out.push_str(if first { "; sources=\"" } else { "," });
            out.push_str(name);
            first = false;
        }
        if !first {
            out.push('"');
        }
        out.push_str("\r\n");
    }
    out
}
