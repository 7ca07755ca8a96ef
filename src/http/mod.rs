//! The HTTP server (axum on tokio): routes, request ids, metrics, API keys, admin reloads,
//! graceful shutdown on SIGTERM / Ctrl-C and reload on SIGHUP. Maps the typed results of
//! the other modules to JSON; never touches tensors.

pub mod auth;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod redact;
pub mod routes;
pub mod server;
pub mod types;

pub use server::{serve, NetOptions, TlsFiles};

use crate::batch::{BatchConfig, Batcher};
use crate::policy::memory::Memory;
use crate::state::{Bundle, State as Shared};
use anyhow::Result;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use error::{ApiError, REQUEST_ID};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Request limits (all configuration, all reported by `/info`).
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub max_texts_per_request: usize,
    pub max_chars_per_text: usize,
    pub max_body_bytes: usize,
    #[serde(serialize_with = "ser_ms")]
    pub request_timeout: Duration,
    /// Time a client has to send the whole body (slow senders get 408).
    #[serde(serialize_with = "ser_ms")]
    pub body_read_timeout: Duration,
    /// Log each request's text (masked); off by default.
    pub log_text: bool,
}

pub(crate) fn ser_ms<S: serde::Serializer>(
    d: &Duration,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_texts_per_request: 64,
            max_chars_per_text: 4000,
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            log_text: false,
        }
    }
}

/// Everything handlers share.
pub struct AppState {
    pub shared: Arc<Shared>,
    pub batcher: Batcher<Bundle>,
    pub memory: Memory,
    pub limits: Limits,
    pub keys: auth::Keys,
    pub metrics: metrics::Metrics,
    pub fallback_language: String,
    pub device: String,
    next_id: AtomicU64,
}

impl AppState {
    pub fn new(
        shared: Arc<Shared>,
        batch: BatchConfig,
        limits: Limits,
        keys: auth::Keys,
        device: String,
    ) -> Self {
        let batcher = Batcher::start(shared.clone(), batch);
        let current = crate::batch::ModelSource::current(shared.as_ref());
        let memory = current.policy.new_memory();
        let fallback_language = current.retriever.config.fallback_language.clone();
        Self {
            shared,
            batcher,
            memory,
            limits,
            keys,
            metrics: metrics::Metrics::default(),
            fallback_language,
            device,
            next_id: AtomicU64::new(1),
        }
    }

    fn current(&self) -> Arc<Bundle> {
        crate::batch::ModelSource::current(self.shared.as_ref())
    }
}

/// The router with every route and middleware.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/classify", post(routes::classify))
        .route("/answer", post(routes::answer))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/info", get(info))
        .route("/metrics", get(metrics_route))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .route("/admin/reload/model", post(reload_model))
        .route("/admin/reload/faq", post(reload_faq))
        .route("/admin/reload/policy", post(reload_policy))
        .fallback(|| async { ApiError::NotFound("no such route; see /openapi.json".into()) })
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        // The body is buffered (and limited) by `observe`, before any extractor runs.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// Read the whole body within the body read timeout and the size limit, so that no handler
/// waits on a slow client; the request goes on with the buffered body.
async fn buffer_body(s: &AppState, req: Request) -> Result<Request, ApiError> {
    let (parts, body) = req.into_parts();
    let limit = s.limits.max_body_bytes;
    let bytes = match tokio::time::timeout(
        s.limits.body_read_timeout,
        axum::body::to_bytes(body, limit),
    )
    .await
    {
        Err(_) => {
            return Err(ApiError::Timeout(format!(
                "the body was not received within {} ms (body_read_timeout)",
                s.limits.body_read_timeout.as_millis()
            )))
        }
        Ok(Err(e)) if is_length_limit(&e) => {
            return Err(ApiError::TooLarge(format!(
                "the body is over {limit} bytes (max_body_bytes)"
            )))
        }
        Ok(Err(e)) => return Err(ApiError::BadRequest(format!("reading the body: {e}"))),
        Ok(Ok(b)) => b,
    };
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Request id, body-size check and read timeout, metrics.
async fn observe(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "{:x}-{}",
                std::process::id(),
                s.next_id.fetch_add(1, Ordering::Relaxed)
            )
        });
    let too_big = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > s.limits.max_body_bytes);
    let mut resp = if too_big {
        ApiError::TooLarge(format!(
            "the body is over {} bytes (max_body_bytes)",
            s.limits.max_body_bytes
        ))
        .into_response_with_id(&id)
    } else {
        match buffer_body(&s, req).await {
            Ok(req) => REQUEST_ID.scope(id.clone(), next.run(req)).await,
            Err(e) => e.into_response_with_id(&id),
        }
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    s.metrics.observe(
        &route,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0,
    );
    resp
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    let b = s.current();
    (StatusCode::OK, Json(serde_json::json!({"ready": true, "generation": b.generation, "model": b.model.model_id()}))).into_response()
}

async fn info(State(s): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let b = s.current();
    Json(serde_json::json!({
        "model": {
            "id": b.model.model_id(),
            "dir": b.model.dir.display().to_string(),
            "heads": b.model.heads_dir.as_ref().map(|p| p.display().to_string()),
            "adapters": b.model.heads_meta.as_ref().and_then(|m| m.adapters.clone()),
            "hidden_size": b.model.encoder.hidden_size(),
            "max_tokens": b.model.encoder.max_tokens(),
            "query_prefix": b.model.encoder.prefix(),
            "device": s.device,
            "engine": b.model.encoder.engine(),
        },
        "labels": {
            "intents": b.model.intent.labels,
            "emotions": b.model.emotion.as_ref().map(|e| e.labels.clone()),
        },
        "faq": {"entries": b.retriever.len(), "variants": b.retriever.variants(), "retrieval": b.retriever.config},
        "policy": {"rules": b.policy.file.rules.iter().map(|r| r.name.clone()).collect::<Vec<_>>(), "clarify_threshold": b.policy.file.clarify_threshold(), "memory": b.policy.file.memory},
        "limits": s.limits,
        "batching": s.batcher.config,
        "generation": b.generation,
        "versions": {"triage": env!("CARGO_PKG_VERSION"), "candle": "0.11"},
    }))
}

async fn metrics_route(State(s): State<Arc<AppState>>) -> Response {
    let text = s.metrics.render(
        &s.batcher.stats,
        s.batcher.queued(),
        s.current().generation,
        s.memory.len(),
    );
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

async fn reload(
    s: Arc<AppState>,
    headers: HeaderMap,
    what: &'static str,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.keys.check_admin(&headers)?;
    let shared = s.shared.clone();
    let result = tokio::task::spawn_blocking(move || match what {
        "model" => shared.reload_model(),
        "faq" => shared.reload_faq(),
        _ => shared.reload_policy(),
    })
    .await
    .map_err(|e| ApiError::Internal(format!("reload task failed: {e}")))?;
    match result {
        Ok(generation) => {
            tracing::info!(what, generation, "reloaded");
            Ok(Json(
                serde_json::json!({"reloaded": what, "generation": generation}),
            ))
        }
        Err(e) => {
            tracing::warn!(what, error = %format!("{e:#}"), "reload refused");
            Err(ApiError::ReloadFailed(format!("{e:#}")))
        }
    }
}

async fn reload_model(
    State(s): State<Arc<AppState>>,
    h: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    reload(s, h, "model").await
}
async fn reload_faq(
    State(s): State<Arc<AppState>>,
    h: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    reload(s, h, "faq").await
}
async fn reload_policy(
    State(s): State<Arc<AppState>>,
    h: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    reload(s, h, "policy").await
}
