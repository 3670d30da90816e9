//! The screening pipeline: a call moves through named phases, its state rides
//! in a typed [`CallCtx`], and each phase says with [`Flow`] whether the call
//! goes on to the next phase or is decided. The logging phase always runs.
//!
//! ```text
//! identify (done by the SIP layer) ─▶ lists ─▶ anonymous ─▶ local lookup
//!     ─▶ live lookup (async, within the budget) ─▶ score + policy ─▶ logging
//! ```
//!
//! Everything up to the live lookup never waits, so [`Pipeline::screen_now`]
//! decides most calls on the packet path; only a call that needs a live
//! provider is handed to [`Pipeline::screen_live`] on its own task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::history::{HistorySink, Record};
use crate::lists::{ListKind, Listed, RuntimeLists};
use crate::policy::{Action, Decision, DivertMode, LiveMode, Policy, Rule};
use crate::reputation::live::{LiveLookup, LookupReport};
use crate::reputation::live_cache::LiveCacheConfig;
use crate::reputation::{Evidence, LiveSource, LocalSource, Source};
use crate::sip::caller::CallerId;

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

    /// The runtime lists calls are screened with.
    pub fn runtime_lists(&self) -> &Arc<RuntimeLists> {
        &self.runtime
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
        self.live = LiveLookup::new(&self.live_cache_config, sources);
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
        let runtime = |list, source| self.runtime.find(list, e164, |l| listed(source, l));
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
        if self.live.is_empty() || !ctx.evidence.is_empty() {
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
            Self::local_lookup,
            Self::live_cache,
        ] {
            if let Flow::Decide(rule, action) = phase(self, &policy, ctx) {
                return Some(self.logging(&policy, ctx, rule, action));
            }
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

    /// The live phase and what follows it; call after `screen_now` returned `None`.
    pub async fn screen_live(&self, ctx: &mut CallCtx) -> Decision {
        let policy = self.call_policy(ctx);
        self.live_lookup(&policy, ctx).await;
        let (rule, action) = if Self::live_answered(ctx) || !ctx.evidence.is_empty() {
            self.score(&policy, ctx)
        } else {
            (Rule::FailurePolicy, policy.config.on_lookup_failure)
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

    /// Phase: live providers without a cached answer, in parallel, until the
    /// call's budget (counted from its arrival) runs out.
    async fn live_lookup(&self, policy: &Policy, ctx: &mut CallCtx) {
        let Some(e164) = ctx.caller.e164.clone() else {
            return;
        };
        let budget = Duration::from_millis(policy.config.lookup_budget_ms);
        // Measured on tokio's clock (tests pause it), minus the time spent so far.
        let deadline = tokio::time::Instant::now() + budget.saturating_sub(ctx.started.elapsed());
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
        let decision = policy.decide(rule, action, evidence, ctx.elapsed_us());
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
            Action::Reject => Some(policy.config.reject_code),
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
            verstat: ctx.caller.verstat.clone(),
            attest: ctx.caller.attest.clone(),
        }
    }
}
