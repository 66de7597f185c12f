//! Server-Sent Events: a flow's live progress, and the changes a flow list
//! on screen needs.
//!
//! Brokers announce transitions and ends but not job counts, and an
//! announcement can be missed (a lagging subscriber, another engine's
//! process). So each stream treats announcements as a prompt to look, and
//! also looks on a timer; what it sends is always read from the store.
//! Each stream runs in a task of its own that ends when the client goes
//! away, the flow ends, or the server shuts down.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::error::ApiError;
use super::input::FlowPath;
use super::ApiState;
use crate::broker::FlowEvent;
use crate::model::FlowStatus;
use crate::runtime::FlowFollow;
use crate::store::FlowQuery;
use crate::views::{FlowChange, FlowCounts, FlowUpdate, FlowUpdates};

/// Events waiting for a slow client; beyond this the stream's task waits.
const BUFFER: usize = 64;

fn event<T: Serialize>(name: &str, payload: &T) -> Option<Event> {
    match Event::default().event(name).json_data(payload) {
        Ok(event) => Some(event),
        Err(error) => {
            tracing::warn!(%error, name, "cannot encode an event");
            None
        }
    }
}

fn into_sse(receiver: mpsc::Receiver<Event>) -> Response {
    let stream = ReceiverStream::new(receiver).map(Ok::<Event, Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The next flow event, or never once the broker stopped announcing.
async fn next_announcement(
    events: &mut Option<broadcast::Receiver<FlowEvent>>,
) -> Option<Result<FlowEvent, RecvError>> {
    match events {
        Some(receiver) => {
            let result = receiver.recv().await;
            if matches!(result, Err(RecvError::Closed)) {
                *events = None;
            }
            Some(result)
        }
        None => std::future::pending().await,
    }
}

/// `GET /api/flows/{id}/events`: the flow's transitions so far, then a
/// `progress` event whenever its counts move and a `transition` event per
/// phase entered, then `end`, after which the stream closes.
pub async fn flow_events(
    State(state): State<ApiState>,
    FlowPath(id): FlowPath,
) -> Result<Response, ApiError> {
    let follow = state
        .client()
        .follow(&id, state.options().poll_interval)
        .await?;
    let (sender, receiver) = mpsc::channel(BUFFER);
    tokio::spawn(follow_flow(state, follow, sender));
    Ok(into_sse(receiver))
}

async fn follow_flow(state: ApiState, mut follow: FlowFollow, sender: mpsc::Sender<Event>) {
    let mut closing = state.closing();
    let mut updates = FlowUpdates::default();
    loop {
        let next = tokio::select! {
            _ = sender.closed() => return,
            _ = closing.changed() => return,
            next = follow.next() => next,
        };
        let record = match next {
            Some(Ok(record)) => record,
            Some(Err(error)) => {
                tracing::warn!(%error, "event stream: cannot read the flow");
                return;
            }
            None => return,
        };
        for update in updates.catch_up(&record) {
            let outgoing = match &update {
                FlowUpdate::Transition(transition) => event("transition", transition),
                FlowUpdate::Progress(progress) => event("progress", progress),
                FlowUpdate::End(end) => event("end", end),
            };
            if let Some(outgoing) = outgoing {
                if sender.send(outgoing).await.is_err() {
                    return;
                }
            }
        }
        if *closing.borrow() {
            return;
        }
    }
}

/// `GET /api/events`: a `flow` event whenever a flow enters a phase, ends,
/// or is paused or resumed here; a `refresh` event with the counts per
/// status when they or the newest flow changed (a flow started, or changed
/// elsewhere), which tells a list on screen to load its page again.
pub async fn all_events(State(state): State<ApiState>) -> Response {
    let announcements = state.backend().broker.subscribe();
    let changes = state.changes();
    let (sender, receiver) = mpsc::channel(BUFFER);
    tokio::spawn(follow_all(state, announcements, changes, sender));
    into_sse(receiver)
}

async fn follow_all(
    state: ApiState,
    announcements: broadcast::Receiver<FlowEvent>,
    mut changes: broadcast::Receiver<FlowChange>,
    sender: mpsc::Sender<Event>,
) {
    let mut announcements = Some(announcements);
    let mut closing = state.closing();
    let mut ticker = tokio::time::interval(state.options().refresh_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_counts: Option<FlowCounts> = None;
    loop {
        let outgoing = tokio::select! {
            _ = sender.closed() => return,
            _ = closing.changed() => return,
            _ = ticker.tick() => {
                match counts(&state).await {
                    Some(now) if last_counts.as_ref() != Some(&now) => {
                        let outgoing = event("refresh", &now);
                        last_counts = Some(now);
                        outgoing
                    }
                    _ => None,
                }
            }
            change = changes.recv() => match change {
                Ok(change) => event("flow", &change),
                Err(RecvError::Lagged(_)) => {
                    last_counts = None;
                    None
                }
                // The state outlives every stream; this cannot happen.
                Err(RecvError::Closed) => return,
            },
            announced = next_announcement(&mut announcements) => match announced {
                Some(Ok(FlowEvent::Entered { flow, phase, .. })) => event(
                    "flow",
                    &FlowChange { id: flow, status: FlowStatus::Running, phase },
                ),
                Some(Ok(FlowEvent::Ended { flow, status })) => {
                    match state.client().status(&flow).await {
                        Ok(record) => event(
                            "flow",
                            &FlowChange { id: flow, status, phase: record.current().phase.clone() },
                        ),
                        _ => None,
                    }
                }
                // Missed events: the next tick sends counts whatever they are.
                Some(Err(RecvError::Lagged(_))) => {
                    last_counts = None;
                    None
                }
                _ => None,
            },
        };
        if let Some(outgoing) = outgoing {
            if sender.send(outgoing).await.is_err() {
                return;
            }
        }
    }
}

async fn counts(state: &ApiState) -> Option<FlowCounts> {
    let queries = &state.backend().queries;
    let mut counts = BTreeMap::new();
    let mut total = 0;
    for status in FlowStatus::ALL {
        let query = FlowQuery {
            status: Some(status),
            ..FlowQuery::default()
        };
        let count = queries.count_flows(&query).await.ok()?;
        total += count;
        counts.insert(status.as_str().to_owned(), count);
    }
    let newest = queries
        .list_flows(&FlowQuery {
            limit: 1,
            ..FlowQuery::default()
        })
        .await
        .ok()?
        .first()
        .map(|record| record.id.clone());
    Some(FlowCounts {
        total,
        counts,
        newest,
    })
}
