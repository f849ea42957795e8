//! The endpoints. Anything that reads or writes the store runs on tokio's blocking
//! pool: the store's readers are redb snapshots, so a slow query never holds up the
//! agent loop that drains the ring buffers.
use std::sync::Arc;

use bytes::Bytes;
use driftwall_ctxgraph::{
    AlertEvent, Event, EventCursor, FlashbackOptions, ProcessDetails, ProcessEventKind, Store,
    Subject,
};
use hyper::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use super::{
    ApiState,
    metrics::program_stats,
    query::{
        AlertRequest, ApiError, FlashbackQuery, StoryFormat, flashback_query, format_decision_id,
        format_process_id, params, process_id,
    },
    server::{Body, full, json, ndjson_stream},
};

/// Runs store work off the async thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("the query failed: {e}")))?
}

/// `GET /v1/status`.
pub fn status(state: &Arc<ApiState>, q: Option<&str>) -> Result<Response<Body>, ApiError> {
    params(q, &[])?;
    json(StatusCode::OK, &state.agent.status())
}

/// `GET /v1/flashback?decision=…|process=…|pid=…|cgroup=…|container=…|workload=…|ip=…[&time=…][&format=json|text|dot]`.
pub async fn flashback(state: &Arc<ApiState>, q: Option<&str>) -> Result<Response<Body>, ApiError> {
    let (query, format) = flashback_query(q, state.boot_id, &state.cgroup_root)?;
    let st = Arc::clone(state);
    let (content_type, body) = blocking(move || story(&st.store, query, format)).await?;
    Ok(full(StatusCode::OK, content_type, body))
}

/// The Flashback asked for, rendered: its content type and text. Also what
/// `driftwall flashback` runs on a stopped agent's store.
pub fn story(
    store: &Store,
    query: FlashbackQuery,
    format: StoryFormat,
) -> Result<(&'static str, String), ApiError> {
    let subject = match query {
        FlashbackQuery::Decision { process, time_ns } => {
            let found = store
                .events_of(&process, time_ns, time_ns, 64)?
                .into_iter()
                .find_map(|e| match e {
                    Event::Process(pe) if matches!(pe.kind, ProcessEventKind::Decision(_)) => {
                        Some(pe)
                    }
                    _ => None,
                });
            Subject::Event(found.ok_or_else(|| {
                ApiError::NotFound(format!(
                    "no decision {}",
                    format_decision_id(&process, time_ns)
                ))
            })?)
        }
        FlashbackQuery::Locate(l) => Subject::Locator(l),
    };
    let story = store.flashback(&subject, &FlashbackOptions::default())?;
    Ok(match format {
        StoryFormat::Json => ("application/json", story.to_json()? + "\n"),
        StoryFormat::Text => ("text/plain; charset=utf-8", story.to_tree()),
        StoryFormat::Dot => ("text/vnd.graphviz", story.to_dot()),
    })
}

/// The answer of `GET /v1/processes/{id}`.
#[derive(Serialize)]
struct ProcessAnswer {
    id: String,
    children_ids: Vec<String>,
    #[serde(flatten)]
    details: ProcessDetails,
}

/// `GET /v1/processes/{id}[?limit=N]`.
pub async fn process(
    state: &Arc<ApiState>,
    q: Option<&str>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let p = params(q, &["limit"])?;
    let limit = match p.get("limit") {
        None => 100,
        Some(l) => match l.parse::<usize>() {
            Ok(n @ 1..=10_000) => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "limit {l:?}: expected 1 to 10000"
                )));
            }
        },
    };
    let key = process_id(id, state.boot_id)?;
    let st = Arc::clone(state);
    let details = blocking(move || Ok(st.store.process_details(&key, limit)?))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no process {id} in the context graph")))?;
    json(
        StatusCode::OK,
        &ProcessAnswer {
            id: format_process_id(&details.process.key),
            children_ids: details.children.iter().map(format_process_id).collect(),
            details,
        },
    )
}

/// One line of `/v1/events`.
#[derive(Serialize)]
struct EventLine<'a> {
    kind: &'static str,
    /// False for history (`since=`), true for what happened after the request.
    live: bool,
    /// The decision's id (for `/v1/flashback?decision=`), for decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    event: &'a Event,
}

fn event_line(event: &Event, live: bool) -> Bytes {
    let id = match event {
        Event::Process(pe) if matches!(pe.kind, ProcessEventKind::Decision(_)) => {
            Some(format_decision_id(&pe.process, pe.time_ns))
        }
        _ => None,
    };
    line(&EventLine {
        kind: "event",
        live,
        id,
        event,
    })
}

fn line(v: &impl Serialize) -> Bytes {
    let mut text = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    text.push(b'\n');
    Bytes::from(text)
}

/// Events read per store query while replaying history.
const PAGE: usize = 256;

/// `GET /v1/events[?since=start|<batch>.<index>][&live=false]`: newline-delimited JSON.
/// With `since`, the stored events from that cursor first, then a `cursor` line to
/// resume from; then (unless `live=false`) each decision and alert as it happens. A
/// client too slow for the live feed gets a `lagged` line saying how many it missed;
/// the agent never waits for it.
pub fn events(state: &Arc<ApiState>, q: Option<&str>) -> Result<Response<Body>, ApiError> {
    let p = params(q, &["since", "live"])?;
    let since = match p.get("since").map(String::as_str) {
        None => None,
        Some("start" | "0") => Some(EventCursor::default()),
        Some(c) => {
            let parsed = c
                .split_once('.')
                .and_then(|(b, i)| Some((b.parse().ok()?, i.parse().ok()?)));
            let Some((batch, index)) = parsed else {
                return Err(ApiError::BadRequest(format!(
                    "since {c:?}: expected `start` or a cursor <batch>.<index>"
                )));
            };
            Some(EventCursor { batch, index })
        }
    };
    let live = match p.get("live").map(String::as_str) {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "live {other:?}: expected true or false"
            )));
        }
    };
    // Subscribed before the history is read, so nothing falls between the two.
    let mut feed = state.live.subscribe();
    let (tx, response) = ndjson_stream(64);
    let st = Arc::clone(state);
    tokio::spawn(async move {
        if let Some(mut cursor) = since {
            loop {
                let store = Arc::clone(&st.store);
                let page = blocking(move || Ok(store.events_since(cursor, PAGE)?)).await;
                let page = match page {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx
                            .send(line(
                                &serde_json::json!({"kind": "error", "error": e.to_string()}),
                            ))
                            .await;
                        return;
                    }
                };
                for e in &page.events {
                    if tx.send(event_line(e, false)).await.is_err() {
                        return;
                    }
                }
                let done = page.next == cursor || page.events.len() < PAGE;
                cursor = page.next;
                if done {
                    break;
                }
            }
            let next = format!("{}.{}", cursor.batch, cursor.index);
            if tx
                .send(line(&serde_json::json!({"kind": "cursor", "next": next})))
                .await
                .is_err()
            {
                return;
            }
        }
        if !live {
            return;
        }
        loop {
            let item = tokio::select! {
                _ = tx.closed() => return,
                item = feed.recv() => item,
            };
            let chunk = match item {
                Ok(e) => event_line(&e, true),
                Err(RecvError::Lagged(n)) => {
                    line(&serde_json::json!({"kind": "lagged", "skipped": n}))
                }
                Err(RecvError::Closed) => return,
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    Ok(response)
}

/// `POST /v1/alerts`: a third-party alert, stored as a flag on the process its
/// locator maps to. Answers what it mapped to.
pub async fn alert(
    state: &Arc<ApiState>,
    q: Option<&str>,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    params(q, &[])?;
    let req: AlertRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("alert body: {e}")))?;
    let st = Arc::clone(state);
    let (alert, process) = blocking(move || {
        let locator = req.locator(st.boot_id, &st.cgroup_root)?;
        let alert = AlertEvent {
            time_ns: req.time_ns()?,
            source: req.source,
            severity: req.severity,
            text: req.title,
            locator,
        };
        st.store.ingest(&[Event::Alert(alert.clone())])?;
        let small = FlashbackOptions {
            max_depth: 1,
            max_descendants: 0,
            max_events_per_process: 0,
            ..FlashbackOptions::default()
        };
        let process = match st.store.flashback(&Subject::Alert(alert.clone()), &small) {
            Ok(story) => story.chain.last().map(|p| p.key),
            Err(driftwall_ctxgraph::Error::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        Ok((alert, process))
    })
    .await?;
    let process_id = process.as_ref().map(format_process_id);
    let answer = serde_json::json!({
        "stored": true,
        "target": alert.locator,
        "time_ns": alert.time_ns,
        "process": process,
        "process_id": process_id,
        "flashback": process_id.as_ref().map(|id| format!("/v1/flashback?process={id}")),
    });
    let _ = state.live.send(Event::Alert(alert));
    json(StatusCode::CREATED, &answer)
}

/// `POST /v1/bundle[?dry_run=true|false][&hash=sha256:…]`: the body is a bundle as
/// `driftwall compile` wrote it. It is decoded and verified (format, `abi` version,
/// checksum; with `hash`, that it is the bundle the client meant) before anything
/// changes, then resolved on this node and swapped in as the next generation. A bundle
/// refused at any step changes nothing: `400` for one that is not a valid bundle (or
/// not the one named), `422` for one this node cannot put in force; the generation in
/// force stays in force. Answers the new generation, its bundle and the swap's timing.
pub async fn load_bundle(
    state: &Arc<ApiState>,
    q: Option<&str>,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let p = params(q, &["dry_run", "hash"])?;
    let dry_run = match p.get("dry_run").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "dry_run {other:?}: expected true or false"
            )));
        }
    };
    let reloader = state
        .reloader
        .clone()
        .ok_or_else(|| ApiError::Unavailable("this agent does not take bundles".into()))?;
    let bundle = blocking(move || {
        driftwall_compiler::Bundle::from_bytes(&body)
            .map_err(|e| ApiError::BadRequest(format!("bundle refused: {e}")))
    })
    .await?;
    if let Some(expected) = p.get("hash") {
        let actual = bundle.hash().to_string();
        if *expected != actual {
            return Err(ApiError::BadRequest(format!(
                "bundle refused: it is {actual}, the request names {expected}"
            )));
        }
    }
    match reloader
        .reload(
            crate::reload::ReloadSource::Bundle(Box::new(bundle)),
            dry_run,
            "api",
        )
        .await
    {
        Ok(outcome) => json(StatusCode::OK, &outcome),
        Err(e) if e.is_input_error() => Err(ApiError::Refused(format!(
            "bundle refused: {e}; the generation in force stays in force"
        ))),
        Err(e) => Err(ApiError::Internal(format!(
            "reload failed: {e}; the generation in force stays in force"
        ))),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: &Arc<ApiState>, q: Option<&str>) -> Result<Response<Body>, ApiError> {
    params(q, &[])?;
    let st = Arc::clone(state);
    let text = blocking(move || {
        let programs = program_stats(&st.agent.hooks());
        Ok(st.metrics.render(st.agent.generation(), &programs))
    })
    .await?;
    Ok(full(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        text,
    ))
}

/// The outbox, or 404 when this agent sends no notifications.
fn outbox(state: &ApiState) -> Result<driftwall_notify::Outbox, ApiError> {
    state.outbox.clone().ok_or_else(|| {
        ApiError::NotFound("this agent sends no notifications (no notify.yaml)".into())
    })
}

/// `GET /v1/notifications`: pending deliveries and dead letters.
pub async fn notifications(
    state: &Arc<ApiState>,
    q: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    params(q, &[])?;
    let outbox = outbox(state)?;
    let list = blocking(move || {
        crate::notifications::list(&outbox).map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await?;
    json(StatusCode::OK, &list)
}

/// `POST /v1/notifications/{id}/retry` (`which` is one dead letter) or
/// `POST /v1/notifications/retry` (every dead letter).
pub async fn retry_notifications(
    state: &Arc<ApiState>,
    q: Option<&str>,
    which: crate::notifications::RetrySelection,
) -> Result<Response<Body>, ApiError> {
    params(q, &[])?;
    let outbox = outbox(state)?;
    let report = blocking(move || {
        crate::notifications::retry(&outbox, which).map_err(|e| match e {
            crate::notifications::NotifyError::Outbox(
                driftwall_notify::OutboxError::NoSuchDeadLetter(id),
            ) => ApiError::NotFound(format!("no dead letter {id}")),
            e => ApiError::Internal(e.to_string()),
        })
    })
    .await?;
    json(StatusCode::OK, &report)
}
