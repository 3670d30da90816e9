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

use tokio::task::JoinSet;

use crate::config::Action;
use crate::policy::{Decision, Policy, Rule};
use crate::reputation::{Evidence, LiveSource, LocalSource};
use crate::sip::caller::CallerId;

/// Per-call state carried through the phases.
#[derive(Debug)]
pub struct CallCtx {
    pub call_id: String,
    pub source: SocketAddr,
    pub caller: CallerId,
    /// The called number (Request-URI user part), as received.
    pub called: String,
    pub evidence: Vec<Evidence>,
    pub started: Instant,
}

impl CallCtx {
    pub fn new(call_id: String, source: SocketAddr, caller: CallerId, called: String) -> Self {
        CallCtx {
            call_id,
            source,
            caller,
            called,
            evidence: Vec::new(),
            started: Instant::now(),
        }
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
    pub policy: Arc<Policy>,
    local: Vec<Arc<dyn LocalSource>>,
    live: Vec<Arc<dyn LiveSource>>,
}

impl Pipeline {
    pub fn new(policy: Arc<Policy>) -> Self {
        Pipeline {
            policy,
            local: Vec::new(),
            live: Vec::new(),
        }
    }

    /// Adds a source consulted from memory on the packet path (the Hiya cache).
    pub fn with_local(mut self, source: Arc<dyn LocalSource>) -> Self {
        self.local.push(source);
        self
    }

    /// Adds a live source consulted within `policy.lookup_budget_ms`.
    pub fn with_live(mut self, source: Arc<dyn LiveSource>) -> Self {
        self.live.push(source);
        self
    }

    /// Phase: allow and deny lists.
    fn lists(&self, ctx: &mut CallCtx) -> Flow {
        let Some(e164) = ctx.caller.e164.as_deref() else {
            return Flow::Continue;
        };
        match self.policy.lists(e164) {
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
    fn anonymous(&self, ctx: &mut CallCtx) -> Flow {
        if ctx.caller.anonymous {
            Flow::Decide(Rule::Anonymous, self.policy.config.anonymous)
        } else {
            Flow::Continue
        }
    }

    /// Phase: local, in-memory sources. Continues with whatever evidence they hold.
    fn local_lookup(&self, ctx: &mut CallCtx) -> Flow {
        if let Some(e164) = ctx.caller.e164.as_deref() {
            for source in &self.local {
                if let Some(ev) = source.lookup(e164) {
                    ctx.evidence.push(ev);
                }
            }
        }
        Flow::Continue
    }

    /// Whether the call still needs a live lookup after the local phases.
    fn needs_live(&self, ctx: &CallCtx) -> bool {
        !self.live.is_empty() && ctx.caller.e164.is_some() && ctx.evidence.is_empty()
    }

    /// Phase: score the evidence against the thresholds.
    fn score(&self, ctx: &CallCtx) -> (Rule, Action) {
        let score = ctx.evidence.iter().map(|e| e.score).max().unwrap_or(0);
        (Rule::Threshold, self.policy.action_for_score(score))
    }

    /// Runs every phase that does not wait. `None` means the call needs the
    /// live lookup ([`Pipeline::screen_live`]).
    pub fn screen_now(&self, ctx: &mut CallCtx) -> Option<Decision> {
        for phase in [Self::lists, Self::anonymous, Self::local_lookup] {
            if let Flow::Decide(rule, action) = phase(self, ctx) {
                return Some(self.logging(ctx, rule, action));
            }
        }
        if self.needs_live(ctx) {
            return None;
        }
        let (rule, action) = self.score(ctx);
        Some(self.logging(ctx, rule, action))
    }

    /// The live phase and what follows it; call after `screen_now` returned `None`.
    pub async fn screen_live(&self, ctx: &mut CallCtx) -> Decision {
        let answered = self.live_lookup(ctx).await;
        let (rule, action) = if answered {
            self.score(ctx)
        } else {
            (Rule::FailurePolicy, self.policy.config.on_lookup_failure)
        };
        self.logging(ctx, rule, action)
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
        self.logging(ctx, Rule::Overload, self.policy.config.on_lookup_failure)
    }

    /// Phase: live sources in parallel within the budget. Returns whether any
    /// source answered (with or without data).
    async fn live_lookup(&self, ctx: &mut CallCtx) -> bool {
        let Some(e164) = ctx.caller.e164.clone() else {
            return false;
        };
        let budget = Duration::from_millis(self.policy.config.lookup_budget_ms);
        let deadline = tokio::time::Instant::now() + budget;
        let mut set = JoinSet::new();
        for source in &self.live {
            let source = Arc::clone(source);
            let e164 = e164.clone();
            set.spawn(async move { source.lookup(&e164).await });
        }
        let mut answered = false;
        loop {
            match tokio::time::timeout_at(deadline, set.join_next()).await {
                Ok(Some(Ok(Ok(found)))) => {
                    answered = true;
                    ctx.evidence.extend(found);
                }
                Ok(Some(Ok(Err(e)))) => tracing::warn!(error = %e, "live lookup failed"),
                Ok(Some(Err(e))) => tracing::warn!(error = %e, "live lookup task failed"),
                Ok(None) => break,
                Err(_) => {
                    tracing::debug!(
                        budget_ms = budget.as_millis() as u64,
                        "lookup budget exhausted"
                    );
                    // Late answers are not awaited: the sources fill their own
                    // caches when they finish.
                    set.detach_all();
                    break;
                }
            }
        }
        answered
    }

    /// Phase: logging. Every path ends here, whatever decided the call: it
    /// builds the decision (applying `dry_run`) and emits the call's record.
    fn logging(&self, ctx: &mut CallCtx, rule: Rule, action: Action) -> Decision {
        let evidence = std::mem::take(&mut ctx.evidence);
        let decision = self.policy.decide(rule, action, evidence, ctx.elapsed_us());
        tracing::debug!(
            decision = %decision.id,
            action = decision.action.as_str(),
            rule = rule.as_str(),
            score = decision.score,
            us = decision.decision_us,
            "screened"
        );
        decision
    }
}
