//! Request and response bodies of the HTTP API (serde types only; handlers live apart).

use crate::model::Scored;
use crate::output::ClassificationView;
use crate::policy::memory::Turn;
use crate::policy::{Decision, Reply};
use crate::retrieval::{Answer, Candidate};
use serde::{Deserialize, Serialize};

/// `POST /classify`: `texts` or `text`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    pub texts: Option<Vec<String>>,
    pub text: Option<String>,
    pub top_k: Option<usize>,
    /// Language hint applied to every text.
    pub language: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ClassifyResponse {
    pub results: Vec<ClassificationView>,
    pub model: String,
}

/// `POST /answer`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    pub text: String,
    pub conversation_id: Option<String>,
    pub language: Option<String>,
}

/// The conversation part of an answer.
#[derive(Debug, Serialize)]
pub struct ConversationView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Turns remembered, this one included.
    pub turns: usize,
    /// For the human agent when escalating: the turns with their intents and emotions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Vec<Turn>>,
}

#[derive(Debug, Serialize)]
pub struct AnswerResponse {
    pub intent: Scored,
    pub intents: Vec<Scored>,
    pub emotion: Option<Scored>,
    pub sentiment: &'static str,
    pub language: String,
    pub action: Decision,
    /// The FAQ answer when the action is `answer` and an entry matched.
    pub answer: Option<Answer>,
    /// What to tell the customer (FAQ answer, template, clarify question or escalation notice).
    pub reply: Option<Reply>,
    pub candidates: Vec<Candidate>,
    pub conversation: ConversationView,
    pub truncated: bool,
    pub model: String,
}

/// Every error body: `{"error": {"code", "message", "request_id"}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    pub code: &'static str,
    pub message: String,
    pub request_id: String,
}
