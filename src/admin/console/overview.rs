//! The Overview page: calls per minute by action over the last hour and
//! day, the callers most blocked and tagged, provider health, the Hiya
//! cache and the history queue.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};

use super::chart::{ACTIONS, stacked};
use super::{ConsoleSession, layout};
use crate::admin::AdminState;
use crate::history::{HistoryStore, now_ms, query};
use crate::reputation::hiya_cache::refresh;

const MINUTE: i64 = 60_000;
/// The day chart's bucket: a quarter of an hour.
const QUARTER: i64 = 15 * MINUTE;
/// Callers shown in each top list.
const TOP: u64 = 10;

/// What the page shows from the history, read in one blocking task.
#[derive(Default)]
struct FromHistory {
    hour: Vec<[f64; 4]>,
    day: Vec<[f64; 4]>,
    top_rejected: Vec<(String, u64)>,
    top_tagged: Vec<(String, u64)>,
    error: Option<String>,
}

fn buckets(rows: &[(i64, String, u64)], n: usize, per_minute: f64) -> Vec<[f64; 4]> {
    let mut out = vec![[0.0; 4]; n];
    for (i, action, calls) in rows {
        if let (Ok(i), Some(a)) = (
            usize::try_from(*i),
            ACTIONS.iter().position(|x| x == action),
        ) && i < n
        {
            out[i][a] += *calls as f64 / per_minute;
        }
    }
    out
}

fn read(store: &HistoryStore, now: i64) -> Result<FromHistory, crate::history::HistoryError> {
    let mut conn = store.open_read()?;
    // Whole minutes and quarters, so the newest bar is the current one.
    let hour_from = (now / MINUTE - 59) * MINUTE;
    let day_from = (now / QUARTER - 95) * QUARTER;
    Ok(FromHistory {
        hour: buckets(&query::per_bucket(&mut conn, hour_from, MINUTE)?, 60, 1.0),
        day: buckets(&query::per_bucket(&mut conn, day_from, QUARTER)?, 96, 15.0),
        top_rejected: query::top_callers(&mut conn, "reject", now - 86_400_000, TOP)?,
        top_tagged: query::top_callers(&mut conn, "tag", now - 86_400_000, TOP)?,
        error: None,
    })
}

fn clock(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%H:%M").to_string())
        .unwrap_or_default()
}

pub(super) async fn page(
    State(state): State<Arc<AdminState>>,
    Extension(session): Extension<ConsoleSession>,
) -> Response {
    let now = now_ms();
    let store = state.history.clone();
    let history = if store.exists() {
        tokio::task::spawn_blocking(move || read(&store, now))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .unwrap_or_else(|e| FromHistory {
                error: Some(e),
                ..Default::default()
            })
    } else {
        FromHistory {
            error: Some("no history yet".into()),
            ..Default::default()
        }
    };
    let hour_from = (now / MINUTE - 59) * MINUTE;
    let day_from = (now / QUARTER - 95) * QUARTER;
    let body = html! {
        h1 { "Overview" }
        @if let Some(e) = &history.error { p.error { "History: " (e) } }
        div.charts {
            (stacked("Calls per minute, last hour", &history.hour, 10, |i| clock(hour_from + i as i64 * MINUTE)))
            (stacked("Calls per minute, last day (quarter-hour means)", &history.day, 16, |i| clock(day_from + i as i64 * QUARTER)))
        }
        div.cards {
            (top_list("Most rejected callers, last day", &history.top_rejected))
            (top_list("Most tagged callers, last day", &history.top_tagged))
        }
        (providers(&state))
        (hiya(&state))
        (queue(&state))
    };
    layout("Overview", "Overview", &session, body)
}

fn top_list(title: &str, rows: &[(String, u64)]) -> Markup {
    html! {
        section.card {
            h2 { (title) }
            @if rows.is_empty() { p.muted { "none" } }
            @else {
                table { tbody {
                    @for (number, calls) in rows {
                        tr {
                            td { a href=(format!("/history?number={}", urlencode(number))) { (number) } }
                            td.num { (calls) }
                        }
                    }
                } }
            }
        }
    }
}

/// A query-string value.
pub(super) fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn providers(state: &AdminState) -> Markup {
    let live = state.pipeline.live();
    let balance = state.didchecks.as_ref().and_then(|d| d.last_balance());
    html! {
        section.card.wide {
            h2 { "Live providers" }
            @if live.providers().is_empty() { p.muted { "none enabled" } }
            @else {
                table {
                    thead { tr { th { "provider" } th { "breaker" } th { "requests" } th { "errors" } th { "skipped" } th { "mean latency" } } }
                    tbody {
                        @for p in live.providers() {
                            @let requests = p.stats.requests.load(Ordering::Relaxed);
                            @let total_us = p.stats.latency_us_total.load(Ordering::Relaxed);
                            @let breaker = p.breaker.state().as_str();
                            tr {
                                td { (p.source.name()) }
                                td class=(format!("breaker {breaker}")) { (breaker) }
                                td.num { (requests) }
                                td.num { (p.stats.errors.load(Ordering::Relaxed)) }
                                td.num { (p.stats.skipped.load(Ordering::Relaxed)) }
                                td.num {
                                    @if requests > 0 { (format!("{:.1} ms", total_us as f64 / requests as f64 / 1000.0)) }
                                    @else { "–" }
                                }
                            }
                        }
                    }
                }
            }
            @if state.didchecks.is_some() {
                p { "DIDChecks credits: " b { @if let Some(b) = balance { (b) } @else { "not known yet" } } }
            }
        }
    }
}

fn hiya(state: &AdminState) -> Markup {
    let status = match &state.hiya {
        Some(h) => refresh::status_of(h),
        None => refresh::status_on_disk(&state.config.hiya_cache),
    };
    html! {
        section.card.wide {
            h2 { "Hiya cache" }
            @if status.is_empty() { p.muted { "no country cached" } }
            @else {
                table {
                    thead { tr { th { "country" } th { "rows" } th { "age" } th { "generation" } } }
                    tbody {
                        @for c in &status {
                            tr {
                                td { (c.country) }
                                td.num { (c.rows) }
                                td.num { (age(c.age_s)) }
                                td { code { (c.generation) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn age(s: u64) -> String {
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{:.1} h", s as f64 / 3600.0),
    }
}

fn queue(state: &AdminState) -> Markup {
    html! {
        section.card.wide {
            h2 { "History" }
            @match state.pipeline.history() {
                None => p.muted { "not recorded (history.enabled = false)" },
                Some(sink) => {
                    @let s = &sink.stats;
                    table { tbody {
                        tr { td { "queued" } td.num { (s.depth.load(Ordering::Relaxed)) } }
                        tr { td { "written" } td.num { (s.written.load(Ordering::Relaxed)) } }
                        tr { td { "dropped" } td class=(if s.dropped.load(Ordering::Relaxed) > 0 { "num bad" } else { "num" }) { (s.dropped.load(Ordering::Relaxed)) } }
                        tr { td { "live clients" } td.num { (state.event_clients.load(Ordering::Relaxed)) } }
                    } }
                }
            }
        }
    }
}
