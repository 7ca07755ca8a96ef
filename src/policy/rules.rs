//! The policy file (TOML): thresholds, routing queues, conversation-memory limits and an
//! ordered list of rules, each a condition and an action; the first rule that matches
//! decides. Unknown fields and bad values are refused with the line and field (toml's own
//! error positions).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What happens next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionType {
    Answer,
    Clarify,
    Escalate,
}

/// How soon a human must look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    #[default]
    Normal,
    High,
    Urgent,
}

/// Conditions of a rule; all given ones must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Top emotion is one of these.
    pub emotion: Option<Vec<String>>,
    /// Top intent is one of these.
    pub intent: Option<Vec<String>>,
    /// Derived sentiment is one of these (negative, neutral, positive).
    pub sentiment: Option<Vec<String>>,
    /// The previous turn of the conversation had one of these emotions.
    pub previous_emotion: Option<Vec<String>>,
    /// Top intent probability is below this.
    pub confidence_below: Option<f32>,
    /// The text contains one of these (case-insensitive).
    pub keywords: Option<Vec<String>>,
}

/// One rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Reported as the decision's `reason`.
    pub name: String,
    pub action: ActionType,
    #[serde(default)]
    pub priority: Priority,
    /// Overrides the intent's routing queue.
    pub queue: Option<String>,
    /// Invite the customer to a satisfaction survey.
    #[serde(default)]
    pub survey: bool,
    #[serde(default)]
    pub when: Condition,
}

/// Conversation memory limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryLimits {
    pub max_conversations: usize,
    pub max_turns: usize,
    pub ttl_seconds: u64,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        Self {
            max_conversations: 100_000,
            max_turns: 10,
            ttl_seconds: 1800,
        }
    }
}

/// The whole policy file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub default_queue: String,
    /// Reply text files, relative to the policy file (merged in order).
    #[serde(default)]
    pub texts: Vec<PathBuf>,
    #[serde(default)]
    pub memory: MemoryLimits,
    #[serde(default)]
    pub queues: BTreeMap<String, String>,
    pub rules: Vec<Rule>,
}

impl PolicyFile {
    /// The confidence below which the first `clarify` rule asks (reported by `/info`).
    pub fn clarify_threshold(&self) -> Option<f32> {
        self.rules
            .iter()
            .find(|r| r.action == ActionType::Clarify)
            .and_then(|r| r.when.confidence_below)
    }
}

/// Read and validate a policy file.
pub fn read_policy(path: &Path) -> Result<PolicyFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_policy(&text).with_context(|| format!("in policy {}", path.display()))
}

/// Parse and validate policy TOML.
pub fn parse_policy(text: &str) -> Result<PolicyFile> {
    let p: PolicyFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    if p.rules.is_empty() {
        bail!("'rules' is empty: at least one rule is needed");
    }
    for (i, r) in p.rules.iter().enumerate() {
        if r.name.trim().is_empty() {
            bail!("rules[{i}]: 'name' is empty");
        }
        if let Some(t) = r.when.confidence_below {
            if !(0.0..=1.0).contains(&t) {
                bail!(
                    "rules[{i}] ('{}'): 'when.confidence_below' must be within 0..1",
                    r.name
                );
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_line_and_field() {
        let e = parse_policy(
            "default_queue = \"general\"\n[[rules]]\nname = \"x\"\naction = \"shout\"\n",
        )
        .unwrap_err();
        let s = format!("{e:#}");
        assert!(s.contains("line 4") && s.contains("shout"), "{s}");
        let e = parse_policy("default_queue = \"general\"\n[[rules]]\nname = \"x\"\naction = \"answer\"\nwhen.mood = [\"x\"]\n").unwrap_err();
        assert!(format!("{e:#}").contains("mood"), "{e:#}");
        let e = parse_policy("default_queue = \"general\"\nrules = []\n").unwrap_err();
        assert!(format!("{e:#}").contains("rules"), "{e:#}");
    }
}
