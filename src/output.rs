//! The JSON shape of a classification, shared by `triage classify` and `/classify`, so
//! the command line and the server print the same fields.

use crate::model::{sentiment_of, Prediction, Scored};
use serde::Serialize;

/// One text's classification as printed / returned.
#[derive(Debug, Clone, Serialize)]
pub struct ClassificationView {
    pub text: String,
    pub intent: Scored,
    pub intents: Vec<Scored>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emotion: Option<Scored>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emotions: Option<Vec<Scored>>,
    pub sentiment: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    pub tokens: usize,
    pub truncated: bool,
}

impl ClassificationView {
    /// Build the view; `top_k` limits the `intents` list (at least 1).
    pub fn new(text: &str, p: &Prediction, top_k: usize, language: Option<String>) -> Self {
        let intent = p.intents.first().cloned().unwrap_or(Scored {
            label: String::new(),
            score: 0.0,
        });
        let emotion = p.emotions.as_ref().and_then(|e| e.first().cloned());
        let sentiment = emotion
            .as_ref()
            .map(|e| sentiment_of(&e.label))
            .unwrap_or("neutral");
        Self {
            text: text.to_string(),
            intent,
            intents: p.intents.iter().take(top_k.max(1)).cloned().collect(),
            emotion,
            emotions: p.emotions.clone(),
            sentiment,
            language,
            tokens: p.tokens,
            truncated: p.truncated,
        }
    }
}
