//! The screening pipeline: a call moves through named phases, its state rides
//! in a typed [`CallCtx`], and each phase says with [`Flow`] whether the call
//! goes on to the next phase or is decided. The logging phase always runs.
//!
//! ```text
//! identify (done by the SIP layer) ─▶ lists ─▶ anonymous ─▶ identity (STIR)
//!     ─▶ local lookup ─▶ live cache ─▶ live lookup and STIR signature (async,
//!     within the budget) ─▶ score + policy ─▶ logging
//! ```
//!
//! Everything up to the live lookup never waits, so [`Pipeline::screen_now`]
//! decides most calls on the packet path; only a call that needs a live
//! provider, or whose Identity signature is to be checked, is handed to
//! [`Pipeline::screen_live`] on its own task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::history::{HistorySink, Record};
use crate::lists::{ListKind, Listed, RuntimeLists};
use crate::policy::{Action, Decision, DivertMode, LiveMode, Policy, Rule, StirFailure};
use crate::reputation::live::{LiveLookup, LookupReport};
use crate::reputation::live_cache::LiveCacheConfig;
use crate::reputation::shared::SharedTier;
use crate::reputation::{Evidence, LiveSource, LocalSource, Source};
use crate::sip::caller::CallerId;
use crate::stir::{Check, Outcome, Stir, StirCall, Verstat};

mod metrics;
mod screen;

pub use metrics::PipelineMetrics;
pub use screen::{label_lines, verdict};

/// The evidence of a runtime list entry.
fn listed(source: Source, l: Listed<'_>) -> Evidence {
    Evidence {
        source,
        score: if source == Source::Allowlist { 0 } else { 100 },
        category: None,
        cached: false,
        latency_us: 0,
        raw: serde_json::json!({
            "entry": l.pattern,
            "origin": l.origin.as_str(),
            "comment": l.comment,
        })
        .into(),
    }
}

/// Per-call state carried through the phases.
#[derive(Debug)]
pub struct CallCtx {
    pub call_id: String,
    pub source: SocketAddr,
    pub caller: CallerId,
    /// The called number (Request-URI user part), as received.
    pub called: String,
    pub evidence: Vec<Evidence>,
    /// What each live provider contributed (cache, answer, error, late).
    pub lookups: Vec<LookupReport>,
    /// Live providers with no cached answer (a bit per provider).
    live_missing: u64,
    /// Whether this is a real call, counted in metrics and written to the
    /// history (`check` is not).
    pub record: bool,
    /// The INVITE came from `sip.trusted_peers`.
    pub trusted: bool,
    /// The Identity header to verify (read only when verification is on).
    pub identity: Option<String>,
    /// Verification waits for the certificate at this URL.
    stir_fetch: Option<String>,
    /// The `verstat` for the relayed identity.
    verstat_out: Option<&'static str>,
    /// A rule's own rejection code (a failed Identity).
    response_code: Option<u16>,
    pub started: Instant,
    /// The policy this call is screened under: the one in force when it
    /// started, so a reload never changes a call halfway.
    policy: Option<Arc<Policy>>,
}

impl CallCtx {
    pub fn new(call_id: String, source: SocketAddr, caller: CallerId, called: String) -> Self {
        CallCtx {
            call_id,
            source,
            caller,
            called,
            evidence: Vec::new(),
            lookups: Vec::new(),
            live_missing: 0,
            record: true,
            trusted: false,
            identity: None,
            stir_fetch: None,
            verstat_out: None,
            response_code: None,
            started: Instant::now(),
            policy: None,
        }
    }

    /// Screens the call under `policy` (the proxy passes the one it
    /// identified the caller with); otherwise the pipeline takes the policy in
    /// force at the first phase.
    pub fn with_policy(mut self, policy: Arc<Policy>) -> Self {
        self.policy = Some(policy);
        self
    }

    fn elapsed_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }
}

/// A phase's verdict on the call.
#[derive(Debug)]
#[non_exhaustive]
pub enum Flow {
    /// Go on to the next phase.
    Continue,
    /// Stop here with this action and rule.
    Decide(Rule, Action),
}

/// The configured phases and sources.
pub struct Pipeline {
    /// Swapped whole on reload (SIGHUP, `POST /api/v1/reload`); each call
    /// takes one snapshot ([`CallCtx`]), so a call in flight keeps its policy.
    policy: ArcSwap<Policy>,
    local: Vec<Arc<dyn LocalSource>>,
    live: LiveLookup,
    live_cache_config: LiveCacheConfig,
    history: Option<HistorySink>,
    /// The operator's runtime lists and spam reports.
    runtime: Arc<RuntimeLists>,
    /// Caller-ID authentication, when `stir.mode` is not off.
    stir: Option<Arc<Stir>>,
    pub metrics: PipelineMetrics,
}

/// The tracing target of the one line logged per screened call
/// (`log.decisions`).
pub const DECISION_LOG: &str = "sipsentry::decisions";

/// The per-request timeout of a live source added without one.
pub const DEFAULT_SOURCE_TIMEOUT: Duration = Duration::from_secs(10);

impl Pipeline {
    pub fn new(policy: Arc<Policy>) -> Self {
        Pipeline {
            policy: ArcSwap::new(policy),
            local: Vec::new(),
            live: LiveLookup::new(&LiveCacheConfig::default(), Vec::new()),
            live_cache_config: LiveCacheConfig::default(),
            history: None,
            runtime: Arc::default(),
            stir: None,
            metrics: PipelineMetrics::default(),
        }
    }

    /// Records every decision in the history (through a non-blocking queue).
    pub fn with_history(mut self, sink: HistorySink) -> Self {
        self.history = Some(sink);
        self
    }

    /// Screens with these runtime lists (shared with whoever changes them).
    pub fn with_lists(mut self, lists: Arc<RuntimeLists>) -> Self {
        self.runtime = lists;
        self
    }

    /// Verifies the Identity header of each call with `stir`.
    pub fn with_stir(mut self, stir: Arc<Stir>) -> Self {
        self.stir = Some(stir);
        self
    }

    /// The verification service, when on.
    pub fn stir(&self) -> Option<&Arc<Stir>> {
        self.stir.as_ref()
    }

    /// The history's queue, when decisions are recorded.
    pub fn history(&self) -> Option<&HistorySink> {
        self.history.as_ref()
    }

    /// Sizes and TTLs of the live cache; call before adding live sources.
    pub fn with_live_cache(mut self, config: LiveCacheConfig) -> Self {
        self.live_cache_config = config;
        self.rebuild_live(Vec::new())
    }

    fn rebuild_live(mut self, added: Vec<(Arc<dyn LiveSource>, Duration)>) -> Self {
        let mut sources: Vec<_> = self
            .live
            .providers()
            .iter()
            .map(|p| (Arc::clone(&p.source), p.timeout()))
            .collect();
        sources.extend(added);
        let shared = self.live.shared().cloned();
        self.live = LiveLookup::new(&self.live_cache_config, sources).with_shared(shared);
        self
    }

    /// Looks up behind a cluster's shared tier on a live-cache miss.
    pub fn with_shared(mut self, tier: Arc<dyn SharedTier>) -> Self {
        self.live = self.live.with_shared(Some(tier));
        self
    }

    /// The live providers, their cache and breakers (webhook, metrics).
    pub fn live(&self) -> &LiveLookup {
        &self.live
    }

    /// Adds a source consulted from memory on the packet path (the Hiya cache).
    pub fn with_local(mut self, source: Arc<dyn LocalSource>) -> Self {
        self.local.push(source);
        self
    }

    /// Adds a live source consulted within `policy.lookup_budget_ms`.
    pub fn with_live(self, source: Arc<dyn LiveSource>) -> Self {
        self.with_live_timeout(source, DEFAULT_SOURCE_TIMEOUT)
    }

    /// Adds a live source whose requests are abandoned after `timeout`.
    pub fn with_live_timeout(self, source: Arc<dyn LiveSource>, timeout: Duration) -> Self {
        self.rebuild_live(vec![(source, timeout)])
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Puts a new policy in force for calls that start from now on.
    pub fn set_policy(&self, policy: Arc<Policy>) {
        self.policy.store(policy);
    }

    /// The call's policy snapshot, taken on first use.
    fn call_policy(&self, ctx: &mut CallCtx) -> Arc<Policy> {
        Arc::clone(ctx.policy.get_or_insert_with(|| self.policy.load_full()))
    }

    /// Phase: per-DID opt-in and opt-out. An unscreened call passes with no
    /// lookup and no label.
    fn called(&self, policy: &Policy, ctx: &mut CallCtx) -> Flow {
        let c = &policy.config;
        if c.screen_called.is_empty() && c.skip_called.is_empty() {
            return Flow::Continue;
        }
        let called = crate::number::to_e164(&ctx.called, &policy.country)
            .unwrap_or_else(|_| ctx.called.clone());
        if policy.screens_called(&called) {
            Flow::Continue
        } else {
            Flow::Decide(Rule::NotScreened, Action::Pass)
        }
    }

    /// Phase: allow and deny lists, the config's and the runtime ones. An
    /// allow entry wins over a deny entry wherever either comes from.
    fn lists(&self, policy: &Policy, ctx: &mut CallCtx) -> Flow {
        let Some(e164) = ctx.caller.e164.as_deref() else {
            return Flow::Continue;
        };
        // One load of the runtime snapshot for both lists.
        let snap = self.runtime.load();
        let runtime = |list, source| snap.find(list, e164, |l| listed(source, l));
        let found = match policy.lists(e164) {
            Some((Rule::Allowlist, ev)) => Some((Rule::Allowlist, ev)),
            config_deny => runtime(ListKind::Allow, Source::Allowlist)
                .map(|ev| (Rule::Allowlist, ev))
                .or(config_deny)
                .or_else(|| {
                    runtime(ListKind::Deny, Source::Denylist).map(|ev| (Rule::Denylist, ev))
                }),
        };
        match found {
            Some((Rule::Allowlist, ev)) => {
                ctx.evidence.push(ev);
                Flow::Decide(Rule::Allowlist, Action::Pass)
            }
            Some((rule, ev)) => {
                ctx.evidence.push(ev);
                Flow::Decide(rule, Action::Reject)
            }
            None => Flow::Continue,
        }
    }

    /// Phase: callers without a number get the `anonymous` action.
    fn anonymous(&self, policy: &Policy, ctx: &mut CallCtx) -> Flow {
        if ctx.caller.anonymous {
            Flow::Decide(Rule::Anonymous, policy.config.anonymous)
        } else {
            Flow::Continue
        }
    }

    /// Phase: caller-ID authentication. Decided here when no signature needs
    /// checking (no header, a malformed one, a failed claim); otherwise the
    /// signature and chain are checked on the call's task, the certificate
    /// fetched if it is not cached, within the budget
    /// ([`Pipeline::screen_live`]).
    fn identity(&self, policy: &Policy, ctx: &mut CallCtx) -> Flow {
        let (Some(stir), Some(e164)) = (&self.stir, ctx.caller.e164.as_deref()) else {
            return Flow::Continue;
        };
        let call = StirCall {
            identity: ctx.identity.as_deref(),
            caller: e164,
            called: &ctx.called,
            trusted: ctx.trusted,
            verstat: ctx.caller.verstat.as_deref(),
            attest: ctx.caller.attest.as_deref(),
        };
        let started = Instant::now();
        match stir.begin(&call) {
            Check::Done(o) => self.stir_outcome(policy, ctx, o, started.elapsed()),
            Check::Verify(url) => {
                ctx.stir_fetch = Some(url);
                Flow::Continue
            }
        }
    }

    /// The `stir` evidence of an outcome; a failure rejects the call when
    /// `policy.on_stir_failure = "reject"`.
    fn stir_outcome(&self, policy: &Policy, ctx: &mut CallCtx, o: Outcome, took: Duration) -> Flow {
        let s = &policy.scores;
        let score = match o.verstat {
            Verstat::Failed => s.stir_failed,
            Verstat::Passed => match o.attest.as_deref() {
                Some("A") => 0,
                Some("B") => s.stir_attest_b,
                _ => s.stir_attest_c,
            },
            _ => s.stir_absent,
        };
        if self.stir.as_ref().is_some_and(|s| s.add_verstat) {
            ctx.verstat_out = Some(o.verstat.as_str());
        }
        let failed = o.verstat == Verstat::Failed;
        let code = o.reason.map(|r| r.reject_code());
        let unsigned =
            o.verstat == Verstat::NoValidation && o.reason.is_none() && o.attest.is_none();
        if unsigned && score == 0 {
            // Nothing to weigh: the row's `verstat` says it, and an unsigned
            // call costs no evidence (its allocations are most of a call's
            // own).
            return Flow::Continue;
        }
        // An unsigned call's outcome is the same every time: one shared copy.
        static ABSENT: std::sync::LazyLock<crate::reputation::Raw> =
            std::sync::LazyLock::new(|| {
                serde_json::to_value(Outcome {
                    verstat: Verstat::NoValidation,
                    attest: None,
                    reason: None,
                    x5u: None,
                    origid: None,
                })
                .unwrap_or_default()
                .into()
            });
        let raw = if unsigned {
            ABSENT.clone()
        } else {
            serde_json::to_value(&o).unwrap_or_default().into()
        };
        ctx.evidence.push(Evidence {
            source: Source::Stir,
            score,
            category: None,
            cached: false,
            latency_us: took.as_micros() as u64,
            raw,
        });
        if failed && policy.config.on_stir_failure == StirFailure::Reject {
            ctx.response_code = code;
            return Flow::Decide(Rule::StirFailure, Action::Reject);
        }
        Flow::Continue
    }

    /// Whether any source said something about the caller (a `stir`
    /// outcome that scores nothing does not count).
    fn has_evidence(ctx: &CallCtx) -> bool {
        ctx.evidence
            .iter()
            .any(|e| e.source != Source::Stir || e.score > 0)
    }

    /// Phase: local, in-memory sources (an operator's spam report first).
    /// Continues with whatever evidence they hold.
    fn local_lookup(&self, policy: &Policy, ctx: &mut CallCtx) -> Flow {
        if let Some(e164) = ctx.caller.e164.as_deref() {
            if let Some(ev) = self.runtime.spam_report(e164, |r| Evidence {
                source: Source::Operator,
                score: policy.scores.operator_spam,
                category: Some("Operator report".into()),
                cached: false,
                latency_us: 0,
                raw: serde_json::json!({
                    "report": r.id,
                    "reported_at": r.time,
                    "reported_by": r.reported_by,
                    "note": r.note,
                })
                .into(),
            }) {
                ctx.evidence.push(ev);
            }
            for source in &self.local {
                if let Some(ev) = source.lookup(e164) {
                    ctx.evidence.push(ev);
                }
            }
        }
        Flow::Continue
    }

    /// Phase: the live cache, when no local source knew the caller. Continues
    /// with the cached answers; records which providers still need asking.
    fn live_cache(&self, _: &Policy, ctx: &mut CallCtx) -> Flow {
        if self.live.is_empty() || ctx.evidence.iter().any(|e| e.source != Source::Stir) {
            return Flow::Continue;
        }
        if let Some(e164) = ctx.caller.e164.as_deref() {
            ctx.live_missing = self
                .live
                .from_cache(e164, &mut ctx.evidence, &mut ctx.lookups);
        }
        Flow::Continue
    }

    /// Whether any live provider gave an answer (with or without data).
    fn live_answered(ctx: &CallCtx) -> bool {
        ctx.lookups.iter().any(|l| l.outcome.answered())
    }

    /// Phase: score the evidence (re-scored when `[scores]` differs from the
    /// defaults); a category override of the deciding evidence, else the
    /// thresholds.
    fn score(&self, policy: &Policy, ctx: &mut CallCtx) -> (Rule, Action) {
        if !policy.scores.is_default() {
            for ev in &mut ctx.evidence {
                policy.scores.rescore(ev);
            }
        }
        let best = ctx.evidence.iter().max_by_key(|e| e.score);
        if let Some(action) = best
            .and_then(|e| e.category.as_deref())
            .and_then(|c| policy.category_action(c))
        {
            return (Rule::Category, action);
        }
        let score = best.map_or(0, |e| e.score);
        (Rule::Threshold, policy.action_for_score(score))
    }

    /// Runs every phase that does not wait. `None` means the call needs the
    /// live lookup ([`Pipeline::screen_live`]).
    pub fn screen_now(&self, ctx: &mut CallCtx) -> Option<Decision> {
        let policy = self.call_policy(ctx);
        for phase in [
            Self::called,
            Self::lists,
            Self::anonymous,
            Self::identity,
            Self::local_lookup,
            Self::live_cache,
        ] {
            if let Flow::Decide(rule, action) = phase(self, &policy, ctx) {
                return Some(self.logging(&policy, ctx, rule, action));
            }
        }
        if ctx.stir_fetch.is_some() {
            // The signature is checked off the SIP thread, and a certificate
            // fetch waits within the budget whatever `live_mode` says (it
            // happens once per URL an hour).
            return None;
        }
        if ctx.live_missing != 0 {
            if policy.config.live_mode == LiveMode::Inline {
                return None;
            }
            // Background: forward on what is known now; the answers are for
            // the next call from this number.
            if let Some(e164) = ctx.caller.e164.as_deref() {
                self.live.prefetch(e164, ctx.live_missing);
            }
        }
        let (rule, action) = self.score(&policy, ctx);
        Some(self.logging(&policy, ctx, rule, action))
    }

    /// The phases that wait (the certificate fetch and the live providers,
    /// side by side, until the call's budget runs out) and what follows
    /// them; call after `screen_now` returned `None`.
    pub async fn screen_live(&self, ctx: &mut CallCtx) -> Decision {
        let policy = self.call_policy(ctx);
        let budget = Duration::from_millis(policy.config.lookup_budget_ms);
        // Measured on tokio's clock (tests pause it), minus the time spent so far.
        let deadline = tokio::time::Instant::now() + budget.saturating_sub(ctx.started.elapsed());
        if ctx.live_missing != 0 && policy.config.live_mode != LiveMode::Inline {
            if let Some(e164) = ctx.caller.e164.as_deref() {
                self.live.prefetch(e164, ctx.live_missing);
            }
            ctx.live_missing = 0;
        }
        let asked_live = ctx.live_missing != 0;
        let stir_job = ctx.stir_fetch.take().and_then(|url| {
            Some((
                Arc::clone(self.stir.as_ref()?),
                url,
                ctx.identity.clone(),
                ctx.caller.e164.clone()?,
                ctx.called.clone(),
                ctx.trusted,
            ))
        });
        let stir = async {
            let (stir, url, identity, caller, called, trusted) = stir_job?;
            let started = Instant::now();
            let call = StirCall {
                identity: identity.as_deref(),
                caller: &caller,
                called: &called,
                trusted,
                verstat: None,
                attest: None,
            };
            Some((stir.finish(&call, &url, deadline).await, started.elapsed()))
        };
        let (stir, ()) = tokio::join!(stir, self.live_lookup(ctx, deadline));
        if let Some((o, took)) = stir
            && let Flow::Decide(rule, action) = self.stir_outcome(&policy, ctx, o, took)
        {
            return self.logging(&policy, ctx, rule, action);
        }
        let failed = asked_live && !Self::live_answered(ctx) && !Self::has_evidence(ctx);
        let (rule, action) = if failed {
            (Rule::FailurePolicy, policy.config.on_lookup_failure)
        } else {
            self.score(&policy, ctx)
        };
        self.logging(&policy, ctx, rule, action)
    }

    /// The whole pipeline, for callers that can wait (the `check` command).
    pub async fn screen(&self, ctx: &mut CallCtx) -> Decision {
        match self.screen_now(ctx) {
            Some(d) => d,
            None => self.screen_live(ctx).await,
        }
    }

    /// The decision for a call that could not be screened (overload).
    pub fn overload(&self, ctx: &mut CallCtx) -> Decision {
        let policy = self.call_policy(ctx);
        self.logging(
            &policy,
            ctx,
            Rule::Overload,
            policy.config.on_lookup_failure,
        )
    }

    /// Phase: live providers without a cached answer, in parallel, until
    /// `deadline` (the call's budget, counted from its arrival).
    async fn live_lookup(&self, ctx: &mut CallCtx, deadline: tokio::time::Instant) {
        if ctx.live_missing == 0 {
            return;
        }
        let Some(e164) = ctx.caller.e164.clone() else {
            return;
        };
        self.live
            .lookup(
                &e164,
                ctx.live_missing,
                deadline,
                &mut ctx.evidence,
                &mut ctx.lookups,
            )
            .await;
        ctx.live_missing = 0;
    }

    /// Phase: logging. Every path ends here, whatever decided the call: it
    /// builds the decision (applying `dry_run`) and emits the call's record.
    fn logging(&self, policy: &Policy, ctx: &mut CallCtx, rule: Rule, action: Action) -> Decision {
        let evidence = std::mem::take(&mut ctx.evidence);
        let mut decision = policy.decide(rule, action, evidence, ctx.elapsed_us());
        decision.response_code = ctx.response_code;
        decision.verstat = ctx.verstat_out;
        if !ctx.record {
            tracing::debug!(
                decision = %decision.id,
                action = decision.action.as_str(),
                rule = rule.as_str(),
                score = decision.score,
                us = decision.decision_us,
                "screened"
            );
            return decision;
        }
        // One line per call, under a target of its own so `log.decisions`
        // can turn it off (then this costs one check of a static flag).
        tracing::info!(
            target: DECISION_LOG,
            call_id = %ctx.call_id,
            caller = ctx.caller.e164.as_deref().unwrap_or(&ctx.caller.raw),
            called = %ctx.called,
            action = decision.action.as_str(),
            rule = rule.as_str(),
            score = decision.score,
            us = decision.decision_us,
            decision = %decision.id,
            "call screened"
        );
        self.metrics
            .decided(decision.action, rule, decision.decision_us);
        if let Some(sink) = &self.history {
            sink.record(Self::record(policy, ctx, &decision));
        }
        decision
    }

    /// The history row of a decision (docs/operations.md, "History").
    fn record(policy: &Policy, ctx: &CallCtx, d: &Decision) -> Record {
        let response_code = match d.action {
            Action::Reject => Some(d.response_code.unwrap_or(policy.config.reject_code)),
            Action::Divert if policy.config.divert_mode == DivertMode::Redirect => Some(302),
            _ => None,
        };
        Record {
            decision_id: d.id.clone(),
            time_ms: crate::history::now_ms(),
            call_id: ctx.call_id.clone(),
            source: ctx.source,
            caller: ctx.caller.raw.clone(),
            caller_e164: ctx.caller.e164.clone(),
            called: ctx.called.clone(),
            trust: ctx.caller.trust.as_str(),
            action: d.action.as_str(),
            rule: d.rule.as_str(),
            response_code,
            score: d.score,
            category: d.category.clone(),
            evidence: d.evidence.clone(),
            decision_us: d.decision_us,
            dry_run: d.dry_run,
            display: ctx.caller.display.clone(),
            verstat: d
                .verstat
                .map(str::to_string)
                .or_else(|| ctx.caller.verstat.clone()),
            attest: ctx.caller.attest.clone(),
        }
    }
}
