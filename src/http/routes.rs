//! Route handlers: parse and validate the body, submit to the batcher, turn predictions
//! into responses. Tensor code never appears here.

use super::error::ApiError;
use super::types::*;
use super::AppState;
use crate::batch::Done;
use crate::model::sentiment_of;
use crate::output::ClassificationView;
use crate::policy::memory::Turn;
use crate::policy::{ActionType, Input};
use crate::retrieval::language;
use crate::state::Bundle;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Instant;

/// Parse a JSON body into `T`, with errors that name the problem.
pub fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "the request body is empty; send a JSON object".into(),
        ));
    }
    if std::str::from_utf8(body).is_err() {
        return Err(ApiError::BadRequest(
            "the request body is not valid UTF-8".into(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Validate one text; with `log_text` on, log it with personal data masked (customer text
/// reaches the logs nowhere else).
fn check_text(s: &AppState, t: &str, what: &str) -> Result<(), ApiError> {
    if s.limits.log_text {
        let id = super::error::REQUEST_ID
            .try_with(Clone::clone)
            .unwrap_or_default();
        tracing::info!(request_id = %id, field = what, text = %super::redact::mask_pii(t), "text");
    }
    if t.trim().is_empty() {
        return Err(ApiError::BadRequest(format!("{what} is empty")));
    }
    let n = t.chars().count();
    if n > s.limits.max_chars_per_text {
        return Err(ApiError::TooLarge(format!(
            "{what} has {n} characters; the limit is {} (max_chars_per_text)",
            s.limits.max_chars_per_text
        )));
    }
    Ok(())
}

async fn run(s: &AppState, texts: &[String]) -> Result<Vec<Done<Bundle>>, ApiError> {
    let deadline = Instant::now() + s.limits.request_timeout;
    let receivers = s.batcher.submit(texts, deadline)?;
    let mut out = Vec::with_capacity(receivers.len());
    for rx in receivers {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, rx).await {
            Ok(Ok(Ok(done))) => out.push(done),
            Ok(Ok(Err(e))) => return Err(e.into()),
            Ok(Err(_)) => {
                return Err(ApiError::Unavailable(
                    "the model thread dropped the request".into(),
                ))
            }
            Err(_) => return Err(ApiError::Deadline),
        }
    }
    Ok(out)
}

fn language_for(hint: Option<&str>, text: &str, fallback: &str) -> String {
    hint.map(str::to_string)
        .or_else(|| language::detect(text).map(str::to_string))
        .unwrap_or_else(|| fallback.to_string())
}

pub async fn classify(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ClassifyResponse>, ApiError> {
    s.keys.check_public(&headers)?;
    let req: ClassifyRequest = parse_body(&body)?;
    let texts = match (req.texts, req.text) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give either 'texts' or 'text', not both".into(),
            ))
        }
        (Some(t), None) => t,
        (None, Some(t)) => vec![t],
        (None, None) => {
            return Err(ApiError::BadRequest(
                "missing field 'texts' (a list of strings) or 'text'".into(),
            ))
        }
    };
    if texts.is_empty() {
        return Err(ApiError::BadRequest("'texts' is empty".into()));
    }
    if texts.len() > s.limits.max_texts_per_request {
        return Err(ApiError::TooLarge(format!(
            "{} texts in one request; the limit is {} (max_texts_per_request)",
            texts.len(),
            s.limits.max_texts_per_request
        )));
    }
    for (i, t) in texts.iter().enumerate() {
        check_text(&s, t, &format!("texts[{i}]"))?;
    }
    let top_k = req.top_k.unwrap_or(3);
    if top_k == 0 || top_k > 100 {
        return Err(ApiError::BadRequest(
            "'top_k' must be between 1 and 100".into(),
        ));
    }
    let done = run(&s, &texts).await?;
    let model = done
        .first()
        .map(|d| d.state.model.model_id())
        .unwrap_or_default();
    let fallback = s.fallback_language.as_str();
    let results = texts
        .iter()
        .zip(&done)
        .map(|(t, d)| {
            ClassificationView::new(
                t,
                &d.prediction,
                top_k,
                Some(language_for(req.language.as_deref(), t, fallback)),
            )
        })
        .collect();
    Ok(Json(ClassifyResponse { results, model }))
}

pub async fn answer(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<AnswerResponse>, ApiError> {
    s.keys.check_public(&headers)?;
    let req: AnswerRequest = parse_body(&body)?;
    check_text(&s, &req.text, "'text'")?;
    if let Some(id) = &req.conversation_id {
        if id.is_empty() || id.len() > 200 {
            return Err(ApiError::BadRequest(
                "'conversation_id' must be 1 to 200 characters".into(),
            ));
        }
    }
    let done = run(&s, std::slice::from_ref(&req.text)).await?.remove(0);
    let (p, bundle) = (&done.prediction, &done.state);
    let lang = language_for(req.language.as_deref(), &req.text, &s.fallback_language);
    let (faq, candidates) = bundle
        .retriever
        .answer(&p.embedding, &p.intents, Some(&lang), 3);
    let history = req
        .conversation_id
        .as_deref()
        .map(|id| s.memory.history(id))
        .unwrap_or_default();
    let emotion = p.emotions.as_ref().and_then(|e| e.first());
    let input = Input {
        text: &req.text,
        intents: &p.intents,
        emotion,
        history: &history,
    };
    let decision = bundle.policy.decide(&input);
    let faq_used = if decision.action == ActionType::Answer {
        faq
    } else {
        None
    };
    let reply = bundle
        .policy
        .reply(&decision, &input, faq_used.as_ref(), &lang);
    let intent = p
        .intents
        .first()
        .cloned()
        .ok_or_else(|| ApiError::Internal("the model gave no intent".into()))?;
    let turn = Turn {
        intent: intent.label.clone(),
        emotion: emotion.map(|e| e.label.clone()),
        action: decision.action,
    };
    let mut turns = history;
    turns.push(turn.clone());
    if let Some(id) = &req.conversation_id {
        s.memory.record(id, turn);
    }
    let summary = (decision.action == ActionType::Escalate).then(|| turns.clone());
    Ok(Json(AnswerResponse {
        intents: p.intents.iter().take(3).cloned().collect(),
        intent,
        emotion: emotion.cloned(),
        sentiment: emotion.map(|e| sentiment_of(&e.label)).unwrap_or("neutral"),
        language: lang,
        action: decision,
        answer: faq_used,
        reply,
        candidates,
        conversation: ConversationView {
            id: req.conversation_id.clone(),
            turns: turns.len(),
            summary,
        },
        truncated: p.truncated,
        model: bundle.model.model_id(),
    }))
}
