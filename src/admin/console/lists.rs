//! The Lists page: the config's read-only entries and the runtime ones,
//! with their comments and expiry; add and remove.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::{ConsoleSession, csrf_field, layout};
use crate::admin::AdminState;
use crate::admin::lists::config_entries;
use crate::lists::{Entry, ListKind};

#[derive(Debug, Default, Deserialize)]
pub(super) struct Notice {
    done: Option<String>,
}

pub(super) async fn page(
    State(state): State<Arc<AdminState>>,
    Extension(session): Extension<ConsoleSession>,
    Query(notice): Query<Notice>,
) -> Response {
    let now = crate::history::now_ms();
    let runtime = match &state.lists {
        Some(lists) => {
            let lists = Arc::clone(lists);
            tokio::task::spawn_blocking(move || lists.change(|s| s.entries(None, now)))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
        }
        None => Err("the runtime lists are not available".into()),
    };
    let body = html! {
        h1 { "Lists" }
        @if let Some(d) = &notice.done { p.notice { (d) } }
        @if let Err(e) = &runtime { p.error { (e) } }
        section.card.wide {
            h2 { "Add" }
            form.add method="post" action="/action/list-add" {
                (csrf_field(&session))
                select name="list" { option value="deny" { "deny" } option value="allow" { "allow" } }
                input name="pattern" placeholder="+15551234567 or +1555*" required maxlength="20";
                input name="comment" placeholder="comment" maxlength="200";
                input name="expires" placeholder="expires: 30d, 12h or 2027-01-01";
                input type="hidden" name="back" value="/lists";
                button #add-entry type="submit" { "Add" }
            }
        }
        @for list in [ListKind::Allow, ListKind::Deny] {
            (list_table(list, &entries_of(&state, &runtime, list), &session))
        }
    };
    layout("Lists", "Lists", &session, body)
}

/// The config's entries of `list`, then the runtime ones.
fn entries_of(
    state: &AdminState,
    runtime: &Result<Vec<Entry>, String>,
    list: ListKind,
) -> Vec<Entry> {
    let mut entries = config_entries(state, list);
    if let Ok(r) = runtime {
        entries.extend(r.iter().filter(|e| e.list == list).cloned());
    }
    entries
}

fn list_table(list: ListKind, entries: &[Entry], session: &ConsoleSession) -> Markup {
    html! {
        section.card.wide {
            h2 { (list.as_str()) " list" }
            @if entries.is_empty() { p.muted { "empty" } }
            @else {
                table.entries id=(format!("list-{}", list.as_str())) {
                    thead { tr { th { "pattern" } th { "comment" } th { "origin" } th { "added" } th { "by" } th { "expires" } th {} } }
                    tbody {
                        @for e in entries {
                            tr {
                                td { code { (e.pattern) } }
                                td { (e.comment) }
                                td { (e.origin.as_str()) }
                                td { (e.added_at) }
                                td { (e.added_by) }
                                td { (e.expires_at.as_deref().unwrap_or("never")) }
                                td {
                                    @if e.read_only { span.muted { "read-only" } }
                                    @else {
                                        form method="post" action="/action/list-remove" {
                                            (csrf_field(session))
                                            input type="hidden" name="list" value=(list.as_str());
                                            input type="hidden" name="pattern" value=(e.pattern);
                                            input type="hidden" name="back" value="/lists";
                                            button.remove type="submit" { "Remove" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
