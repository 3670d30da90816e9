//! `GET /api/v1/events`: every decision as it is recorded, as Server-Sent
//! Events (`event: decision`, the history row as JSON; `event: final`, a
//! relayed call's final response).
//!
//! The history writer publishes each row once, after writing it, into a
//! broadcast buffer of [`EVENT_BUFFER`] events: the SIP thread does no
//! work for a client, and a client that falls further behind than the
//! buffer is dropped (it reconnects and reads the history for the gap).
//! At most `admin.event_clients` clients at once.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::{AdminState, json_error};
use crate::history::writer::{EVENT_BUFFER, Event};

/// A comment line this often keeps proxies from closing an idle stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Gives a client's slot back however its stream ends.
struct Slot(Arc<AdminState>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.event_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) async fn stream(State(state): State<Arc<AdminState>>) -> Response {
    let Some(sink) = state.pipeline.history().cloned() else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no decision events: history.enabled = false (events are the history's rows)",
        );
    };
    let max = state.config.admin.event_clients;
    if state.event_clients.fetch_add(1, Ordering::Relaxed) >= max {
        state.event_clients.fetch_sub(1, Ordering::Relaxed);
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{max} event clients already (admin.event_clients); close one or raise it"),
        );
    }
    let slot = Slot(Arc::clone(&state));
    let rx = sink.subscribe();
    Sse::new(events(rx, slot))
        .keep_alive(KeepAlive::new().interval(KEEPALIVE))
        .into_response()
}

fn events(
    rx: tokio::sync::broadcast::Receiver<Event>,
    slot: Slot,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures_util::stream::unfold((rx, slot), |(mut rx, slot)| async move {
        let event = match rx.recv().await {
            Ok(Event::Decision(json)) => SseEvent::default().event("decision").data(&*json),
            Ok(Event::Final(json)) => SseEvent::default().event("final").data(&*json),
            Err(RecvError::Lagged(n)) => {
                tracing::info!(
                    missed = n,
                    buffer = EVENT_BUFFER,
                    "event client too slow: dropped (it can reconnect)"
                );
                return None;
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), (rx, slot)))
    })
}
