//! Each policy rule, and the order they apply in (docs/configuration.md):
//! called-number opt-in/out → allowlist → denylist → anonymous → reputation
//! (category override, else thresholds) → failure policy; dry run last.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sipsentry::pipeline::{CallCtx, Pipeline};
use sipsentry::policy::Action;
use sipsentry::policy::Rule;
use sipsentry::reputation::{Evidence, LiveSource, LookupFuture, Source};
use sipsentry::sip::caller::{CallerId, Trust};

/// A paid live source that counts its lookups and knows every number.
struct Paid(AtomicUsize, u8, Option<&'static str>);

impl LiveSource for Paid {
    fn name(&self) -> &'static str {
        "paid"
    }
    fn lookup<'a>(&'a self, _e164: &'a str) -> LookupFuture<'a> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            Ok(Some(Evidence {
                source: Source::Custom,
                score: self.1,
                category: self.2.map(str::to_string),
                cached: false,
                latency_us: 1,
                raw: Default::default(),
            }))
        })
    }
}

fn pipeline(policy: &str, paid: &Arc<Paid>) -> Pipeline {
    let cfg = common::config("127.0.0.1:5080".parse().unwrap(), policy);
    Pipeline::new(Arc::new(cfg.policy().unwrap()))
        .with_local(Arc::new(common::StaticScores(vec![
            ("+15550000001", 95, "Nonprofit Call"),
            ("+15550000002", 60, "Scam"),
            ("+15550000003", 75, "Telemarketer"),
        ])))
        .with_live(Arc::clone(paid) as Arc<dyn LiveSource>)
}

async fn decide(p: &Pipeline, caller: Option<&str>, called: &str) -> (Rule, Action) {
    let c = CallerId {
        trust: Trust::From,
        raw: caller.unwrap_or("anonymous").into(),
        display: None,
        e164: caller.map(str::to_string),
        anonymous: caller.is_none(),
        verstat: None,
        attest: None,
    };
    let mut ctx = CallCtx::new("t".into(), ([127, 0, 0, 1], 1).into(), c, called.into());
    let d = p.screen(&mut ctx).await;
    (d.rule, d.action)
}

const DID: &str = "+15551234567";

#[tokio::test]
async fn categories_override_the_thresholds_by_hiya_category_name() {
    let paid = Arc::new(Paid(AtomicUsize::new(0), 0, None));
    let p = pipeline(
        "[policy]\ntag_at = 50\nreject_at = 90\n[policy.categories]\n\"Nonprofit Call\" = \"tag\"\n\"Political Call\" = \"tag\"\nScam = \"reject\"\n",
        &paid,
    );
    // Score 95 would reject; the category only tags.
    assert_eq!(
        decide(&p, Some("+15550000001"), DID).await,
        (Rule::Category, Action::Tag)
    );
    // Score 60 would only tag; Scam is always rejected.
    assert_eq!(
        decide(&p, Some("+15550000002"), DID).await,
        (Rule::Category, Action::Reject)
    );
    // No override for this category: the thresholds decide.
    assert_eq!(
        decide(&p, Some("+15550000003"), DID).await,
        (Rule::Threshold, Action::Tag)
    );
}

#[tokio::test]
async fn only_opted_in_dids_are_screened_and_opted_out_ones_never_are() {
    let paid = Arc::new(Paid(AtomicUsize::new(0), 99, None));
    let p = pipeline(
        "[policy]\ndeny = [\"+1666*\"]\nscreen_called = [\"+1555123*\"]\nskip_called = [\"+15551230009\"]\n",
        &paid,
    );
    assert_eq!(
        decide(&p, Some("+16660000000"), DID).await,
        (Rule::Denylist, Action::Reject)
    );
    // Not opted in: passes before even the deny list, no lookup.
    assert_eq!(
        decide(&p, Some("+16660000000"), "+15559999999").await,
        (Rule::NotScreened, Action::Pass)
    );
    // Opted out, given in national form: normalised and matched.
    assert_eq!(
        decide(&p, Some("+16660000000"), "5551230009").await,
        (Rule::NotScreened, Action::Pass)
    );
    assert_eq!(paid.0.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn allowlisted_callers_never_trigger_a_paid_lookup_and_win_over_the_denylist() {
    let paid = Arc::new(Paid(AtomicUsize::new(0), 99, None));
    let p = pipeline(
        "[policy]\nallow = [\"+1777*\", \"+18005550100\"]\ndeny = [\"+1777555*\"]\n",
        &paid,
    );
    assert_eq!(
        decide(&p, Some("+17775550100"), DID).await,
        (Rule::Allowlist, Action::Pass)
    );
    assert_eq!(
        decide(&p, Some("+18005550100"), DID).await,
        (Rule::Allowlist, Action::Pass)
    );
    assert_eq!(
        paid.0.load(Ordering::SeqCst),
        0,
        "no paid lookup for allowlisted callers"
    );
    // An unknown caller is looked up (score 99 → reject).
    assert_eq!(
        decide(&p, Some("+19995550100"), DID).await,
        (Rule::Threshold, Action::Reject)
    );
    assert_eq!(paid.0.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn rules_apply_in_order_and_dry_run_passes_whatever_was_decided() {
    let paid = Arc::new(Paid(AtomicUsize::new(0), 10, None));
    let p = pipeline(
        "[policy]\ndeny = [\"+1666*\"]\nanonymous = \"reject\"\n",
        &paid,
    );
    assert_eq!(
        decide(&p, None, DID).await,
        (Rule::Anonymous, Action::Reject)
    );
    assert_eq!(
        decide(&p, Some("+16660000000"), DID).await,
        (Rule::Denylist, Action::Reject)
    );
    assert_eq!(
        decide(&p, Some("+15550000003"), DID).await,
        (Rule::Threshold, Action::Tag)
    );
    assert_eq!(paid.0.load(Ordering::SeqCst), 0, "the local cache knew it");
    assert_eq!(
        decide(&p, Some("+19990000000"), DID).await,
        (Rule::Threshold, Action::Pass)
    );
    let dry = pipeline("[policy]\ndeny = [\"+1666*\"]\ndry_run = true\n", &paid);
    assert_eq!(
        decide(&dry, Some("+16660000000"), DID).await,
        (Rule::Denylist, Action::Pass)
    );
}

#[tokio::test]
async fn configured_score_mappings_change_the_decision() {
    let paid = Arc::new(Paid(AtomicUsize::new(0), 0, None));
    // The test's local source reports Hiya level SPAM; spam mapped to 40
    // falls under tag_at.
    let p = pipeline("[policy]\ntag_at = 50\n[scores]\nhiya_spam = 40\n", &paid);
    assert_eq!(
        decide(&p, Some("+15550000003"), DID).await,
        (Rule::Threshold, Action::Pass)
    );
    let p = pipeline("[policy]\ntag_at = 50\n", &paid);
    assert_eq!(
        decide(&p, Some("+15550000003"), DID).await,
        (Rule::Threshold, Action::Tag)
    );
}

#[tokio::test]
async fn a_new_policy_applies_to_the_next_call_without_rebuilding_the_pipeline() {
    let paid = Arc::new(Paid(AtomicUsize::new(0), 0, None));
    let p = pipeline("[policy]\n", &paid);
    assert_eq!(
        decide(&p, Some("+16660000000"), DID).await,
        (Rule::Threshold, Action::Pass)
    );
    let cfg = common::config(
        "127.0.0.1:5080".parse().unwrap(),
        "[policy]\ndeny = [\"+1666*\"]\n",
    );
    p.set_policy(Arc::new(cfg.policy().unwrap()));
    assert_eq!(
        decide(&p, Some("+16660000000"), DID).await,
        (Rule::Denylist, Action::Reject)
    );
}
