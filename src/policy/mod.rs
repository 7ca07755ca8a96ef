//! The policy layer: what happens next for a classified message (answer, clarify or
//! escalate, with priority, routing queue and the rule that fired), evaluated from a
//! hot-reloadable rule file ([`rules`]) with conversation memory ([`memory`]) and reply
//! texts ([`texts`]). Works on labels and probabilities, never on tensors.

pub mod memory;
pub mod rules;
pub mod texts;

use crate::model::{sentiment_of, Scored};
use crate::retrieval::Answer;
use anyhow::{Context, Result};
use memory::{Memory, Turn};
pub use rules::{ActionType, PolicyFile, Priority, Rule};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;
use texts::Texts;

/// The decision for one message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    #[serde(rename = "type")]
    pub action: ActionType,
    pub priority: Priority,
    pub queue: String,
    /// The rule that fired.
    pub reason: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub survey: bool,
}

/// What the customer is told.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reply {
    pub text: String,
    pub language: String,
    /// Where the text came from: `faq`, `template`, `clarify`, `escalate`.
    pub source: String,
}

/// Everything the policy needs to know about one message.
pub struct Input<'a> {
    pub text: &'a str,
    /// Intents, most probable first.
    pub intents: &'a [Scored],
    pub emotion: Option<&'a Scored>,
    /// The conversation's earlier turns, oldest first.
    pub history: &'a [Turn],
}

/// A loaded policy: the rule file and its reply texts.
pub struct Policy {
    pub file: PolicyFile,
    pub texts: Texts,
}

impl Policy {
    /// Read a policy file and the texts file it names.
    pub fn load(path: &Path, fallback_language: &str) -> Result<Self> {
        let file = rules::read_policy(path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let files: Vec<_> = file.texts.iter().map(|t| dir.join(t)).collect();
        let texts = Texts::read(&files, fallback_language)
            .with_context(|| format!("texts of policy {}", path.display()))?;
        Ok(Self { file, texts })
    }

    /// A conversation memory sized by this policy.
    pub fn new_memory(&self) -> Memory {
        let m = &self.file.memory;
        Memory::new(
            m.max_conversations,
            m.max_turns,
            Duration::from_secs(m.ttl_seconds),
        )
    }

    /// The queue an intent routes to.
    pub fn queue_of(&self, intent: &str) -> String {
        self.file
            .queues
            .get(intent)
            .cloned()
            .unwrap_or_else(|| self.file.default_queue.clone())
    }

    /// Evaluate the rules in order; the first match decides.
    pub fn decide(&self, input: &Input) -> Decision {
        let top = input.intents.first();
        let intent = top.map(|s| s.label.as_str()).unwrap_or("");
        let confidence = top.map(|s| s.score).unwrap_or(0.0);
        let emotion = input.emotion.map(|e| e.label.as_str());
        let sentiment = emotion.map(sentiment_of).unwrap_or("neutral");
        let previous = input.history.last().and_then(|t| t.emotion.as_deref());
        let lower = input.text.to_lowercase();
        let within = |list: &Option<Vec<String>>, v: Option<&str>| match list {
            None => true,
            Some(l) => v.is_some_and(|v| l.iter().any(|x| x == v)),
        };
        for rule in &self.file.rules {
            let w = &rule.when;
            let ok = within(&w.emotion, emotion)
                && within(&w.intent, Some(intent))
                && within(&w.sentiment, Some(sentiment))
                && within(&w.previous_emotion, previous)
                && w.confidence_below.is_none_or(|t| confidence < t)
                && w.keywords
                    .as_ref()
                    .is_none_or(|k| k.iter().any(|k| lower.contains(&k.to_lowercase())));
            if ok {
                return Decision {
                    action: rule.action,
                    priority: rule.priority,
                    queue: rule.queue.clone().unwrap_or_else(|| self.queue_of(intent)),
                    reason: rule.name.clone(),
                    survey: rule.survey,
                };
            }
        }
        Decision {
            action: ActionType::Answer,
            priority: Priority::Normal,
            queue: self.queue_of(intent),
            reason: "no_rule_matched".to_string(),
            survey: false,
        }
    }

    /// The customer-facing reply for a decision.
    pub fn reply(
        &self,
        d: &Decision,
        input: &Input,
        faq: Option<&Answer>,
        lang: &str,
    ) -> Option<Reply> {
        let intent = input
            .intents
            .first()
            .map(|s| s.label.as_str())
            .unwrap_or("");
        let mk = |(text, language): (String, String), source: &str| Reply {
            text,
            language,
            source: source.to_string(),
        };
        let base = match d.action {
            ActionType::Escalate => {
                let key = if d.survey {
                    "survey"
                } else if d.priority == Priority::Urgent {
                    "escalate_urgent"
                } else {
                    "escalate"
                };
                self.texts.get(key, lang).map(|t| mk(t, "escalate"))
            }
            ActionType::Clarify => {
                let name = |i: usize| {
                    let l = input.intents.get(i).map(|s| s.label.as_str()).unwrap_or("");
                    self.texts
                        .get(&format!("intent_names.{l}"), lang)
                        .map(|t| t.0)
                        .unwrap_or_else(|| l.replace('_', " "))
                };
                self.texts.get("clarify", lang).map(|(t, l)| {
                    mk(
                        (t.replace("{a}", &name(0)).replace("{b}", &name(1)), l),
                        "clarify",
                    )
                })
            }
            ActionType::Answer => match faq {
                Some(a) => Some(Reply {
                    text: a.text.clone(),
                    language: a.language.clone(),
                    source: "faq".to_string(),
                }),
                None => self
                    .texts
                    .get(&format!("templates.{intent}"), lang)
                    .map(|t| mk(t, "template")),
            },
        }?;
        // Emotion shapes an answer: reassurance, apology or an offer.
        if d.action == ActionType::Answer {
            if let Some(e) = input.emotion {
                if let Some((add, _)) = self
                    .texts
                    .get(&format!("additions.{}", e.label), &base.language)
                {
                    return Some(Reply {
                        text: format!("{} {add}", base.text),
                        ..base
                    });
                }
            }
        }
        Some(base)
    }
}
