//! The JSON API under `/api/` that the dashboard reads (and scripts may call with
//! `Authorization: Bearer`): the overview, trace searches and CSV, one message's events,
//! the queue and its actions. Trace reads run on blocking threads with a read-only
//! connection of their own, never the writer's.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use crate::delivery::control::{Action, Select};
use crate::trace::{self, Filter, TallyKey, TraceStore, output, parse_time};

/// The routes (all behind the login).
pub fn routes() -> Router<Arc<AdminState>> {
    use axum::routing::{get, post};
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/trace", get(search))
        .route("/api/trace.csv", get(search_csv))
        .route("/api/message/{id}", get(message))
        .route("/api/queue", get(queue))
        .route("/api/queue/{action}", post(queue_action))
        .route("/api/reports", get(super::reports::reports))
        .route("/api/explain", post(explain))
}

/// An error as JSON: `{"error": "..."}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Runs `f` on a read-only connection to the trace store, on a blocking thread.
pub(super) async fn with_store<T: Send + 'static>(
    s: &AdminState,
    f: impl FnOnce(&dyn TraceStore) -> Result<T, trace::StoreError> + Send + 'static,
) -> Result<T, Response> {
    let Some(store) = s.trace_store.clone() else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "the message trace is off ([trace] enabled = false)",
        ));
    };
    let done = tokio::task::spawn_blocking(move || {
        let conn = store.open_read_only()?;
        f(conn.as_ref())
    })
    .await;
    match done {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// Kinds counted on the overview.
const OVERVIEW_KINDS: &[&str] = &[
    "received",
    "delivered",
    "deferred",
    "failed",
    "expired",
    "refused",
];

/// `GET /api/overview`: counts for the last hour and day, hour by hour for the chart,
/// and the queue with its alert.
async fn overview(State(s): State<Arc<AdminState>>) -> Response {
    let now = trace::now_ms();
    let hour = 3_600_000;
    let since = (now / hour - 23) * hour;
    let counts = match with_store(&s, move |st| {
        st.tally(since, now + 1, hour, TallyKey::Nothing, OVERVIEW_KINDS)
    })
    .await
    {
        Ok(c) => Some(c),
        Err(_) if s.trace_store.is_none() => None,
        Err(r) => return r,
    };
    let snap = s.queue.snapshot(10).await.unwrap_or_default();
    let sum = |kind: &str, from: i64| -> i64 {
        counts
            .iter()
            .flatten()
            .filter(|t| {
                // Expired recipients count as failed.
                (t.kind == kind || (kind == "failed" && t.kind == "expired")) && t.bucket >= from
            })
            .map(|t| t.count)
            .sum()
    };
    let totals = |from: i64| {
        json!({
            "received": sum("received", from),
            "delivered": sum("delivered", from),
            "deferred": sum("deferred", from),
            "failed": sum("failed", from),
            "refused": sum("refused", from),
        })
    };
    let hours: Vec<Value> = (0..24)
        .map(|i| {
            let b = since + i * hour;
            let n = |kind: &str| -> i64 {
                counts
                    .iter()
                    .flatten()
                    .filter(|t| {
                        t.bucket == b
                            && (t.kind == kind || (kind == "failed" && t.kind == "expired"))
                    })
                    .map(|t| t.count)
                    .sum()
            };
            json!({"start": b, "received": n("received"), "delivered": n("delivered"),
                "deferred": n("deferred"), "failed": n("failed"), "refused": n("refused")})
        })
        .collect();
    let unix_now = crate::srs::unix_now();
    Json(json!({
        "trace": counts.is_some(),
        "last_hour": totals(now - hour),
        "last_day": totals(since),
        "hours": hours,
        "queue": {
            "messages": snap.queued,
            "held": snap.held,
            "over_hour": snap.over_hour,
            "in_flight": snap.in_flight,
            "oldest_age_secs": snap.oldest.as_ref().map(|(_, at)| unix_now.saturating_sub(*at)),
            "destinations": snap.destinations.iter().map(|d| json!({
                "domain": d.domain, "messages": d.messages, "last_error": d.last_error})).collect::<Vec<_>>(),
        },
        "alert": {
            "active": s.alert_active.load(Ordering::Relaxed),
            "threshold": s.alert_threshold,
        },
    }))
    .into_response()
}

/// The search of `/api/trace`, as `srs-relay trace` takes it; times as RFC 3339 or ago.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SearchQuery {
    sender: Option<String>,
    recipient: Option<String>,
    subject: Option<String>,
    message_id: Option<String>,
    queue_id: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
    /// CSV only: the selected rows, comma-separated `queue_id/recipient` keys.
    rows: Option<String>,
}

/// Rows a page asks for at most.
const MAX_ROWS: u32 = 10_000;

impl SearchQuery {
    /// The filter, or what is wrong with the query.
    fn filter(&self) -> Result<Filter, String> {
        let time = |name: &str, t: &Option<String>| {
            t.as_deref()
                .filter(|t| !t.trim().is_empty())
                .map(parse_time)
                .transpose()
                .map_err(|e| format!("{name}: {e}"))
        };
        let text = |t: &Option<String>| t.clone().filter(|t| !t.trim().is_empty());
        if let Some(st) = text(&self.status)
            && !trace::STATUSES.contains(&st.as_str())
        {
            return Err(format!("status: {st:?}"));
        }
        Ok(Filter {
            sender: text(&self.sender),
            recipient: text(&self.recipient),
            subject: text(&self.subject),
            message_id: text(&self.message_id),
            queue_id: text(&self.queue_id),
            status: text(&self.status),
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            limit: self.limit.unwrap_or(1000).clamp(1, MAX_ROWS),
        })
    }
}

/// `GET /api/trace`: rows as `srs-relay trace --json` gives them.
async fn search(State(s): State<Arc<AdminState>>, Query(q): Query<SearchQuery>) -> Response {
    let filter = match q.filter() {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let limit = filter.limit;
    match with_store(&s, move |st| st.search(&filter)).await {
        Ok(rows) => Json(json!({
            "rows": rows,
            "limited": rows.len() as u32 >= limit,
        }))
        .into_response(),
        Err(r) => r,
    }
}

/// `GET /api/trace.csv`: the same search as `srs-relay trace --csv`; with `rows`, only
/// those rows.
async fn search_csv(State(s): State<Arc<AdminState>>, Query(q): Query<SearchQuery>) -> Response {
    let filter = match q.filter() {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let wanted: Option<Vec<String>> = q
        .rows
        .as_deref()
        .map(|r| r.split(',').map(str::to_owned).collect());
    match with_store(&s, move |st| st.search(&filter)).await {
        Ok(mut rows) => {
            if let Some(wanted) = wanted {
                rows.retain(|r| wanted.contains(&row_key(r)));
            }
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"message-trace.csv\"",
                    ),
                ],
                output::csv(&rows),
            )
                .into_response()
        }
        Err(r) => r,
    }
}

/// How the page names a row: `queue_id/recipient` (after expansion; as given if refused).
fn row_key(r: &trace::Row) -> String {
    format!(
        "{}/{}",
        r.queue_id.as_deref().unwrap_or(""),
        r.recipient
            .as_deref()
            .or(r.original_recipient.as_deref())
            .unwrap_or("")
    )
}

/// `GET /api/message/{id}`: every event of a message (queue id or Message-ID) and of
/// those sharing its Message-ID, with the "what to do" line.
async fn message(State(s): State<Arc<AdminState>>, Path(id): Path<String>) -> Response {
    match with_store(&s, move |st| st.show(&id)).await {
        Ok(events) => {
            let events: Vec<Value> = events
                .iter()
                .map(|e| {
                    json!({
                        "time": e.time, "kind": e.kind.as_str(), "queue_id": e.queue_id,
                        "message_id": e.message_id, "sender": e.sender, "srs_sender": e.srs_sender,
                        "recipient": e.recipient, "original_recipient": e.original_recipient,
                        "subject": e.subject, "remote": e.remote, "reply": e.reply, "tls": e.tls,
                        "attempt": e.attempt, "size": e.size, "status": e.status,
                        "detail": e.detail.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok()),
                        "advice": trace::explain(e),
                    })
                })
                .collect();
            Json(json!({ "events": events })).into_response()
        }
        Err(r) => r,
    }
}

/// `GET /api/queue`: every queued message, as `srs-relay queue list --json`.
async fn queue(State(s): State<Arc<AdminState>>) -> Response {
    match s.queue.list().await {
        Some(entries) => {
            Json(json!({ "entries": entries, "now": crate::srs::unix_now() })).into_response()
        }
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the delivery queue is stopping",
        ),
    }
}

#[derive(Deserialize)]
struct ActionBody {
    ids: Vec<String>,
}

/// `POST /api/queue/{retry|hold|release|delete|bounce}` with `{"ids": [...]}`.
async fn queue_action(
    State(s): State<Arc<AdminState>>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    Path(action): Path<String>,
    Json(body): Json<ActionBody>,
) -> Response {
    let action = match action.as_str() {
        "retry" => Action::Retry,
        "hold" => Action::Hold,
        "release" => Action::Release,
        "delete" => Action::Delete,
        "bounce" => Action::Bounce,
        other => return error(StatusCode::NOT_FOUND, format!("no action {other:?}")),
    };
    if body.ids.is_empty() || body.ids.len() > MAX_ROWS as usize {
        return error(StatusCode::BAD_REQUEST, "ids: 1 to 10000 queue ids");
    }
    let by = format!("admin web {}", peer.ip());
    match s.queue.act(action, Select::Ids(body.ids), &by).await {
        Some(results) => Json(json!({ "results": results })).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the delivery queue is stopping",
        ),
    }
}

#[derive(Deserialize)]
struct ExplainBody {
    address: String,
}

/// `POST /api/explain` with `{"address": "..."}`: what `srs-relay explain --json` says,
/// with the text it prints under `text`. Reads the configuration and secrets file as
/// they are on disk; names a secret by its line, never shows it.
async fn explain(State(s): State<Arc<AdminState>>, Json(body): Json<ExplainBody>) -> Response {
    let address = body.address.trim().to_owned();
    if address.is_empty() || address.len() > 512 {
        return error(StatusCode::BAD_REQUEST, "address: 1 to 512 characters");
    }
    let file = s.config_file.clone();
    let store = s.sender_store.clone();
    let runtime = tokio::runtime::Handle::current();
    let done = tokio::task::spawn_blocking(move || -> Result<Value, String> {
        let cfg = crate::config::Config::load(file.as_deref()).map_err(|e| e.to_string())?;
        let path = cfg.secrets_path();
        let numbered = crate::secrets::read_numbered(&path).map_err(|e| e.to_string())?;
        let secrets: Vec<&[u8]> = numbered.iter().map(|(_, s)| s.as_slice()).collect();
        let options = cfg.srs.options().map_err(|e| e.to_string())?;
        let srs = crate::srs::Srs::new(&secrets, options).map_err(|e| e.to_string())?;
        let mut stored = |token: &str| {
            runtime
                .block_on(store.get(token))
                .map_err(|e| e.to_string())
        };
        let e = crate::explain::explain(&cfg, &srs, &address, crate::srs::unix_now(), &mut stored)?;
        let secret = |i: usize| {
            format!(
                "secret {} (line {} of {})",
                i + 1,
                numbered.get(i).map_or(0, |(line, _)| *line),
                path.display()
            )
        };
        let mut out = e.json(&secret);
        out["text"] = e.text(&secret).into();
        Ok(out)
    })
    .await;
    match done {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
