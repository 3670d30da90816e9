//! The History page (search by number, action, rule and time; pages;
//! export) and a call's detail, with the one-click corrections.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::overview::urlencode;
use super::{ConsoleSession, csrf_field, error_page, layout};
use crate::admin::AdminState;
use crate::history::HistoryError;
use crate::history::query::{self, Filter, Row};
use crate::lists::{Report, ReportFilter};

/// Rows per page.
const PAGE: u64 = 50;

#[derive(Debug, Default, Deserialize)]
pub(super) struct Search {
    number: Option<String>,
    action: Option<String>,
    rule: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page: Option<u64>,
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Search {
    fn filter(&self, state: &AdminState) -> Result<Filter, String> {
        let country = state.config.country().map_err(|e| e.to_string())?;
        let mut f = crate::history::export::filter(
            &country,
            nonempty(&self.from),
            nonempty(&self.to),
            nonempty(&self.number),
            nonempty(&self.action),
        )
        .map_err(|e| e.to_string())?;
        f.rule = nonempty(&self.rule).map(str::to_string);
        f.validate().map_err(|e| e.to_string())?;
        Ok(f)
    }

    /// The query string of this search (for paging and export links).
    fn query(&self) -> String {
        [
            ("number", &self.number),
            ("action", &self.action),
            ("rule", &self.rule),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .iter()
        .filter_map(|(k, v)| nonempty(v).map(|v| format!("{k}={}", urlencode(v))))
        .collect::<Vec<_>>()
        .join("&")
    }
}

pub(super) async fn search(
    State(state): State<Arc<AdminState>>,
    Extension(session): Extension<ConsoleSession>,
    Query(s): Query<Search>,
) -> Response {
    let page = s.page.unwrap_or(1).max(1);
    let store = state.history.clone();
    let result = match s.filter(&state) {
        Err(e) => Err(e),
        Ok(_) if !store.exists() => Err("no history yet (serve writes it)".to_string()),
        Ok(filter) => tokio::task::spawn_blocking(move || {
            let mut conn = store.open_read()?;
            Ok::<_, HistoryError>((
                query::count(&mut conn, &filter)?,
                query::page(&mut conn, &filter, page, PAGE)?,
            ))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string())),
    };
    let q = s.query();
    let sel = |v: &Option<String>, opt: &str| nonempty(v) == Some(opt);
    let body = html! {
        h1 { "History" }
        form.search method="get" action="/history" {
            input name="number" placeholder="caller number" value=[nonempty(&s.number)];
            select name="action" {
                option value="" { "any action" }
                @for a in query::ACTIONS { option value=(a) selected[sel(&s.action, a)] { (a) } }
            }
            select name="rule" {
                option value="" { "any rule" }
                @for r in crate::policy::Rule::ALL { option value=(r.as_str()) selected[sel(&s.rule, r.as_str())] { (r.as_str()) } }
            }
            input name="from" placeholder="from (2026-12-01 or RFC 3339)" value=[nonempty(&s.from)];
            input name="to" placeholder="to" value=[nonempty(&s.to)];
            button type="submit" { "Search" }
        }
        @match &result {
            Err(e) => p.error { (e) },
            Ok((total, rows)) => {
                p.muted {
                    (total) " calls · page " (page) " of " (total.div_ceil(PAGE).max(1)) " · export "
                    a href=(format!("/api/v1/history/export?format=csv&{q}")) { "CSV" } " "
                    a href=(format!("/api/v1/history/export?format=json&{q}")) { "JSON" }
                }
                (table(rows))
                p.pager {
                    @if page > 1 { a href=(format!("/history?{q}&page={}", page - 1)) { "← newer" } " " }
                    @if page * PAGE < *total { a href=(format!("/history?{q}&page={}", page + 1)) { "older →" } }
                }
            }
        }
    };
    layout("History", "History", &session, body)
}

/// The response column: the proxy's own, else the PBX's final response.
fn response(r: &Row) -> String {
    match (r.response_code, r.final_code, r.final_ms) {
        (Some(c), _, _) => format!("{c} (sipsentry)"),
        (None, Some(c), Some(ms)) => format!("{c} after {ms} ms"),
        (None, Some(c), None) => c.to_string(),
        (None, None, _) => "–".into(),
    }
}

fn sources(r: &Row) -> String {
    let mut names: Vec<&str> = r
        .evidence
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["source"].as_str()).collect())
        .unwrap_or_default();
    names.dedup();
    names.join(", ")
}

fn table(rows: &[Row]) -> Markup {
    html! {
        table.calls {
            thead { tr {
                th { "time" } th { "caller" } th { "name" } th { "called" } th { "action" }
                th { "rule" } th { "score" } th { "sources" } th { "response" }
            } }
            tbody {
                @for r in rows {
                    tr class=(format!("action-{}", r.action)) {
                        td { a href=(format!("/history/{}", urlencode(&r.decision_id))) { (r.time) } }
                        td { (r.caller_e164.as_deref().unwrap_or(&r.caller)) }
                        td { (r.display.as_deref().unwrap_or("")) }
                        td { (r.called) }
                        td.action { (r.action) @if r.dry_run { " (dry run)" } }
                        td { (r.rule) }
                        td.num { (r.score) }
                        td { (sources(r)) }
                        td { (response(r)) }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Notice {
    done: Option<String>,
}

/// Where the caller stands now: on a list (which, from where), reported.
fn standing(state: &AdminState, number: &str) -> Vec<String> {
    use crate::lists::ListKind;
    let mut out = Vec::new();
    let policy = state.pipeline.policy();
    if let Some((rule, ev)) = policy.lists(number) {
        out.push(format!(
            "in the config file's {} ({})",
            rule.as_str(),
            ev.raw["entry"].as_str().unwrap_or("")
        ));
    }
    if let Some(lists) = &state.lists {
        for list in [ListKind::Allow, ListKind::Deny] {
            if let Some(s) = lists.runtime().find(list, number, |l| {
                format!(
                    "on the {} list as {} ({}{})",
                    list.as_str(),
                    l.pattern,
                    l.origin.as_str(),
                    if l.comment.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", l.comment)
                    }
                )
            }) {
                out.push(s);
            }
        }
        if let Some(s) = lists.runtime().spam_report(number, |r| {
            format!("reported as spam by {} at {}", r.reported_by, r.time)
        }) {
            out.push(s);
        }
    }
    out
}

pub(super) async fn detail(
    State(state): State<Arc<AdminState>>,
    Extension(session): Extension<ConsoleSession>,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Response {
    let store = state.history.clone();
    if !store.exists() {
        return error_page(StatusCode::NOT_FOUND, "no history yet");
    }
    let lookup = id.clone();
    let row = tokio::task::spawn_blocking(move || {
        let mut conn = store.open_read()?;
        query::by_decision_id(&mut conn, &lookup)
    })
    .await;
    let row = match row {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => {
            return error_page(
                StatusCode::NOT_FOUND,
                &format!("no decision {id} in the history"),
            );
        }
        Ok(Err(e)) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let reports: Vec<Report> = match &state.lists {
        Some(lists) => {
            let filter = ReportFilter {
                decision_id: Some(id.clone()),
                ..Default::default()
            };
            let lists = Arc::clone(lists);
            tokio::task::spawn_blocking(move || lists.change(|s| s.reports(&filter)))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        }
        None => Vec::new(),
    };
    let standing = row
        .caller_e164
        .as_deref()
        .map(|n| standing(&state, n))
        .unwrap_or_default();
    let body = maud::html! {
        @if let Some(d) = &notice.done { p.notice { (d) } }
        (detail_body(&row, &reports, &standing, &session))
    };
    layout("Call", "History", &session, body)
}

fn detail_body(
    r: &Row,
    reports: &[Report],
    standing: &[String],
    session: &ConsoleSession,
) -> Markup {
    let back = format!("/history/{}", urlencode(&r.decision_id));
    let field = |k: &str, v: String| html! { tr { th { (k) } td { (v) } } };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "–".into());
    html! {
        h1 { "Call " code { (r.decision_id) } }
        div.cards {
            section.card {
                h2 { "Decision" }
                table.fields { tbody {
                    (field("time", r.time.clone()))
                    (field("action", format!("{}{}", r.action, if r.dry_run { " (dry run)" } else { "" })))
                    (field("rule", r.rule.clone()))
                    (field("score", r.score.to_string()))
                    (field("category", opt(&r.category)))
                    (field("response sent by sipsentry", r.response_code.map_or("– (relayed)".into(), |c| c.to_string())))
                    (field("final response from the PBX", match (r.final_code, r.final_ms) {
                        (Some(c), Some(ms)) => format!("{c} after {ms} ms"),
                        (Some(c), None) => c.to_string(),
                        _ => "–".into(),
                    }))
                    (field("decided in", format!("{} µs", r.decision_us)))
                } }
            }
            section.card {
                h2 { "Call" }
                table.fields { tbody {
                    (field("caller", r.caller_e164.clone().unwrap_or_else(|| r.caller.clone())))
                    (field("caller as received", r.caller.clone()))
                    (field("display name", opt(&r.display)))
                    (field("called", r.called.clone()))
                    (field("from", r.source.clone()))
                    (field("caller ID from", r.trust.clone()))
                    (field("verstat", opt(&r.verstat)))
                    (field("attest", opt(&r.attest)))
                    (field("Call-ID", r.call_id.clone()))
                } }
            }
        }
        @if let Some(number) = &r.caller_e164 {
            section.card.wide.actions {
                h2 { "Correct it" }
                p #standing {
                    @if standing.is_empty() { "This number is on no list and has no spam report." }
                    @else { "This number is " (standing.join("; ")) "." }
                }
                @for (list, label, id, class) in [("allow", "Allow ", "allow-number", ""), ("deny", "Deny ", "deny-number", "danger")] {
                    form method="post" action="/action/list-add" {
                        (csrf_field(session))
                        input type="hidden" name="list" value=(list);
                        input type="hidden" name="pattern" value=(number);
                        input type="hidden" name="comment" value=(format!("from call {}", r.decision_id));
                        input type="hidden" name="back" value=(back);
                        button id=(id) class=(class) type="submit" { (label) (number) }
                    }
                }
                @for (verdict, label, id) in [("spam", "Report spam", "report-spam"), ("not_spam", "Report not spam", "report-not-spam")] {
                    form method="post" action="/action/report" {
                        (csrf_field(session))
                        input type="hidden" name="number" value=(number);
                        input type="hidden" name="verdict" value=(verdict);
                        input type="hidden" name="decision_id" value=(r.decision_id);
                        input type="hidden" name="back" value=(back);
                        input name="note" placeholder="note (optional)" maxlength="500";
                        button id=(id) type="submit" { (label) }
                    }
                }
            }
        }
        @if !reports.is_empty() {
            section.card.wide {
                h2 { "Reports on this call" }
                table { tbody {
                    @for rep in reports {
                        tr { td { (rep.time) } td { (rep.verdict.as_str()) } td { (rep.reported_by) } td { (rep.note) } }
                    }
                } }
            }
        }
        section.card.wide {
            h2 { "Evidence" }
            @match r.evidence.as_array() {
                Some(list) if !list.is_empty() => {
                    @for e in list {
                        div.evidence {
                            h3 {
                                (e["source"].as_str().unwrap_or("?")) ": score " (e["score"].to_string())
                                @if let Some(c) = e["category"].as_str() { " · " (c) }
                                @if e["cached"].as_bool() == Some(true) { " · cached" }
                            }
                            pre { (serde_json::to_string_pretty(&e["raw"]).unwrap_or_default()) }
                        }
                    }
                }
                _ => p.muted { "no evidence (decided by " (r.rule) ")" },
            }
        }
    }
}
