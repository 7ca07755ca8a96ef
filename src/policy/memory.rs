//! Conversation memory: the last turns (intent and emotion only, never the text) of each
//! `conversation_id`, bounded in conversations and turns, forgotten after a TTL.

use super::rules::ActionType;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One remembered turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Turn {
    pub intent: String,
    pub emotion: Option<String>,
    pub action: ActionType,
}

struct Conversation {
    turns: VecDeque<Turn>,
    last_seen: Instant,
}

/// Bounded, expiring memory of conversations.
pub struct Memory {
    inner: Mutex<HashMap<String, Conversation>>,
    pub max_conversations: usize,
    pub max_turns: usize,
    pub ttl: Duration,
}

impl Memory {
    pub fn new(max_conversations: usize, max_turns: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(HashMap::new()),
            max_conversations,
            max_turns: max_turns.max(1),
            ttl,
        }
    }

    /// The turns remembered for a conversation (oldest first), expired ones forgotten.
    pub fn history(&self, id: &str) -> Vec<Turn> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(id) {
            Some(c) if c.last_seen.elapsed() <= self.ttl => c.turns.iter().cloned().collect(),
            Some(_) => {
                map.remove(id);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// Remember a turn; evicts expired conversations, then the least recently seen when
    /// over capacity.
    pub fn record(&self, id: &str, turn: Turn) {
        if self.max_conversations == 0 {
            return;
        }
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if !map.contains_key(id) && map.len() >= self.max_conversations {
            map.retain(|_, c| now.duration_since(c.last_seen) <= self.ttl);
            while map.len() >= self.max_conversations {
                let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, c)| c.last_seen)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                map.remove(&oldest);
            }
        }
        let c = map.entry(id.to_string()).or_insert_with(|| Conversation {
            turns: VecDeque::new(),
            last_seen: now,
        });
        if now.duration_since(c.last_seen) > self.ttl {
            c.turns.clear();
        }
        c.turns.push_back(turn);
        while c.turns.len() > self.max_turns {
            c.turns.pop_front();
        }
        c.last_seen = now;
    }

    /// Conversations currently held (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.inner.lock().map(|m| m.len()).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop every conversation past its TTL.
    pub fn sweep(&self) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.ttl;
        map.retain(|_, c| c.last_seen.elapsed() <= ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(i: &str) -> Turn {
        Turn {
            intent: i.into(),
            emotion: None,
            action: ActionType::Answer,
        }
    }

    #[test]
    fn bounded_in_turns_and_conversations() {
        let m = Memory::new(2, 3, Duration::from_secs(60));
        for i in 0..5 {
            m.record("a", turn(&i.to_string()));
        }
        assert_eq!(m.history("a").len(), 3);
        assert_eq!(m.history("a")[0].intent, "2");
        m.record("b", turn("x"));
        m.record("c", turn("y"));
        assert_eq!(m.len(), 2);
        assert!(m.history("a").is_empty(), "least recently seen is evicted");
    }

    #[test]
    fn forgets_after_ttl() {
        let m = Memory::new(10, 3, Duration::from_millis(20));
        m.record("a", turn("x"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(m.history("a").is_empty());
        m.record("b", turn("x"));
        std::thread::sleep(Duration::from_millis(40));
        m.sweep();
        assert_eq!(m.len(), 0);
    }
}
