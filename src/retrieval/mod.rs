//! FAQ retrieval: the knowledge-base format ([`kb`]), embedding every question variant at
//! load, the index behind a trait ([`index`]), and choosing the answer's language
//! ([`language`]): the customer's (hint, else detected) when the entry has it, else a
//! configured fallback. Below a similarity floor there is no answer. Knows nothing about
//! HTTP or policy.

pub mod index;
pub mod kb;
pub mod language;

use anyhow::Result;
use index::{ExactIndex, VectorIndex};
pub use kb::{read_kb, FaqEntry};
use serde::Serialize;

/// Retrieval settings.
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalConfig {
    /// Minimum cosine similarity for an answer.
    pub floor: f32,
    /// Let the model's own `retrieval_floor` (heads.json) replace `floor`.
    #[serde(skip)]
    pub floor_from_model: bool,
    /// Language of answers when the entry lacks the customer's.
    pub fallback_language: String,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self {
            floor: 0.86,
            floor_from_model: true,
            fallback_language: "en".to_string(),
        }
    }
}

/// An entry and its similarity to the query (best over its question variants).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub faq_id: String,
    pub score: f32,
}

/// The chosen answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub faq_id: String,
    pub text: String,
    pub language: String,
    pub score: f32,
}

/// A knowledge base embedded and indexed.
pub struct Retriever {
    entries: Vec<FaqEntry>,
    /// Row of the index -> entry.
    row_entry: Vec<usize>,
    index: Box<dyn VectorIndex>,
    pub config: RetrievalConfig,
}

impl Retriever {
    /// Embed every question variant with `embed` and index them.
    pub fn build(
        entries: Vec<FaqEntry>,
        embed: impl Fn(&[&str]) -> Result<Vec<Vec<f32>>>,
        config: RetrievalConfig,
    ) -> Result<Self> {
        let mut texts = Vec::new();
        let mut row_entry = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            for q in e.questions.values().flatten() {
                texts.push(q.as_str());
                row_entry.push(i);
            }
        }
        let vectors = embed(&texts)?;
        anyhow::ensure!(
            vectors.len() == texts.len(),
            "embedder returned {} vectors for {} questions",
            vectors.len(),
            texts.len()
        );
        Ok(Self {
            entries,
            row_entry,
            index: Box::new(ExactIndex::new(&vectors)?),
            config,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Number of indexed question variants.
    pub fn variants(&self) -> usize {
        self.index.len()
    }
    pub fn entries(&self) -> &[FaqEntry] {
        &self.entries
    }

    /// The `k` best entries for a query vector.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<Candidate> {
        self.best_entries(query, k)
            .into_iter()
            .map(|(e, score)| Candidate {
                faq_id: self.entries[e].id.clone(),
                score,
            })
            .collect()
    }

    /// `(entry index, score)` of the `k` best entries. Several variants per entry: look
    /// deeper in the index, keep each entry's best.
    fn best_entries(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut best: Vec<(usize, f32)> = Vec::new();
        for (row, score) in self.index.search(query, (k * 8).max(16)) {
            let e = self.row_entry[row];
            if !best.iter().any(|(b, _)| *b == e) {
                best.push((e, score));
            }
            if best.len() == k {
                break;
            }
        }
        best
    }

    /// Candidates plus the answer (if the best is above the floor), in `language` when the
    /// entry has it.
    pub fn answer(
        &self,
        query: &[f32],
        language: Option<&str>,
        k: usize,
    ) -> (Option<Answer>, Vec<Candidate>) {
        let best = self.best_entries(query, k.max(1));
        let answer = best
            .first()
            .filter(|(_, score)| *score >= self.config.floor)
            .and_then(|&(e, score)| {
                let entry = &self.entries[e];
                let (lang, text) = pick_language(entry, language, &self.config.fallback_language)?;
                Some(Answer {
                    faq_id: entry.id.clone(),
                    text: text.to_string(),
                    language: lang.to_string(),
                    score,
                })
            });
        let candidates = best
            .into_iter()
            .map(|(e, score)| Candidate {
                faq_id: self.entries[e].id.clone(),
                score,
            })
            .collect();
        (answer, candidates)
    }
}

/// The answer text in the wanted language, else the fallback, else any language.
pub fn pick_language<'a>(
    entry: &'a FaqEntry,
    wanted: Option<&str>,
    fallback: &str,
) -> Option<(&'a str, &'a str)> {
    let get = |l: &str| {
        entry
            .answers
            .get_key_value(l)
            .map(|(k, v)| (k.as_str(), v.as_str()))
    };
    wanted
        .and_then(get)
        .or_else(|| wanted.and_then(|w| w.split('-').next()).and_then(get))
        .or_else(|| get(fallback))
        .or_else(|| {
            entry
                .answers
                .iter()
                .next()
                .map(|(k, v)| (k.as_str(), v.as_str()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kb() -> Vec<FaqEntry> {
        kb::parse_kb(concat!(
            r#"{"id":"a","question":{"en":["x"]},"answer":{"en":"A-en","zh":"A-zh"}}"#,
            "\n",
            r#"{"id":"b","question":{"en":["y","z"]},"answer":{"de":"B-de"}}"#
        ))
        .unwrap()
    }

    fn fake_embed(texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| match *t {
                "x" => vec![1.0, 0.0],
                "y" => vec![0.0, 1.0],
                _ => vec![0.6, 0.8],
            })
            .collect())
    }

    #[test]
    fn best_variant_per_entry_and_language_choice() {
        let r = Retriever::build(
            kb(),
            fake_embed,
            RetrievalConfig {
                floor: 0.5,
                floor_from_model: false,
                fallback_language: "en".into(),
            },
        )
        .unwrap();
        assert_eq!(r.variants(), 3);
        let c = r.search(&[0.0, 1.0], 3);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].faq_id, "b");
        let (a, _) = r.answer(&[1.0, 0.0], Some("zh"), 3);
        assert_eq!(a.unwrap().text, "A-zh");
        let (a, _) = r.answer(&[1.0, 0.0], Some("th"), 3);
        assert_eq!(a.unwrap().language, "en");
        // Entry without the fallback language answers in the one it has.
        let (a, _) = r.answer(&[0.0, 1.0], Some("fr"), 3);
        assert_eq!(a.unwrap().language, "de");
        // Below the floor: no answer, candidates still listed.
        let (a, c) = r.answer(&[-1.0, 0.0], None, 3);
        assert!(a.is_none());
        assert_eq!(c.len(), 2);
    }
}
