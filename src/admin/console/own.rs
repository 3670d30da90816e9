//! The Own numbers page: each own number's latest status per provider,
//! what it was before, and Hiya's report card.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};

use super::{ConsoleSession, layout};
use crate::admin::AdminState;
use crate::own::{NumberView, ProviderView};

pub(super) async fn page(
    State(state): State<Arc<AdminState>>,
    Extension(session): Extension<ConsoleSession>,
) -> Response {
    let view = match &state.own {
        Some(m) => crate::admin::own::view_of(m).await.map(Some),
        None => Ok(None),
    };
    let body = html! {
        h1 { "Own numbers" }
        @match &view {
            Err(e) => p.error { (e) },
            Ok(None) => p.muted { "No own numbers are configured: list them in [own_numbers] numbers to watch how providers label the calls you place." },
            Ok(Some(v)) => {
                p #own-summary {
                    (v.numbers.len()) " numbers · "
                    strong { (v.flagged) " flagged" }
                    " · " (v.unchecked) " not checked yet"
                }
                @let shown = first_rows(&v.numbers);
                @if shown.len() < v.numbers.len() {
                    p.muted { "Showing " (shown.len()) " of " (v.numbers.len()) ", flagged and changed first; " code { "sipsentry own status --json" } " and " code { "GET /api/v1/own" } " have them all." }
                }
                section.card.wide {
                    table.entries #own-numbers {
                        thead { tr { th { "number" } th { "provider" } th { "status" } th { "before" } th { "checked" } th { "report card" } } }
                        tbody { @for n in shown { (rows(n)) } }
                    }
                }
            }
        }
    };
    layout("Own numbers", "Own numbers", &session, body)
}

/// The most numbers the page lists (a block of 10,000 numbers would be a
/// page no one reads); the API and `own status` have them all.
pub const MAX_ROWS: usize = 500;

/// Flagged numbers first, then changed ones, then the rest, in number
/// order within each; at most [`MAX_ROWS`].
fn first_rows(numbers: &[NumberView]) -> Vec<&NumberView> {
    let rank = |n: &NumberView| {
        if n.providers.iter().any(|p| p.flagged) {
            0
        } else if n.providers.iter().any(|p| p.changed) {
            1
        } else {
            2
        }
    };
    let mut out: Vec<&NumberView> = numbers.iter().collect();
    out.sort_by_key(|n| rank(n));
    out.truncate(MAX_ROWS);
    out
}

fn rows(n: &NumberView) -> Markup {
    html! {
        @if n.providers.is_empty() {
            tr { td { code { (n.number) } } td.muted colspan="5" { "not checked yet" } }
        }
        @for p in &n.providers {
            tr class=(if p.flagged { "flagged" } else { "" }) {
                td { code { (n.number) } }
                td { (p.provider.as_str()) }
                td { (status(p)) }
                td { @if let Some(prev) = &p.previous { (prev.status) } @else { span.muted { "—" } } }
                td { (p.checked_at) }
                td { (card(p)) }
            }
        }
    }
}

fn status(p: &ProviderView) -> Markup {
    let text = match p.value {
        Some(v) if p.provider == crate::own::Provider::DidChecks => {
            format!("{} ({v:.0})", p.status)
        }
        _ => p.status.clone(),
    };
    html! {
        @if p.flagged { strong { (text) } } @else { (text) }
        @if p.changed { " " span.changed { "changed" } }
    }
}

fn card(p: &ProviderView) -> Markup {
    let Some(c) = p.report_card.as_ref().and_then(|c| c.as_object()) else {
        return html! {};
    };
    html! {
        @for key in crate::own::REPORT_CARD {
            span.grade { (key) " " (c.get(key).and_then(|g| g.as_str()).unwrap_or("not graded")) } " "
        }
    }
}
