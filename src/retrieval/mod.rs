//! FAQ retrieval: the knowledge-base format ([`kb`]), embedding every question variant
//! (and, when the ranker uses them, every answer as a passage) at load, the index behind a
//! trait ([`index`]), scoring candidates from several signals with a learnt ranker and
//! deciding "no answer" ([`ranking`]), and choosing the answer's language ([`language`]):
//! the customer's (hint, else detected) when the entry has it, else a configured fallback.
//! Knows nothing about HTTP or policy.

pub mod index;
pub mod kb;
pub mod language;
pub mod ranking;

use crate::model::Scored;
use anyhow::Result;
use index::{ExactIndex, VectorIndex};
pub use kb::{read_kb, restrict_languages, FaqEntry};
pub use ranking::Ranker;
use ranking::{log_p, probabilities, Example, NullSignals, Signals};
use serde::Serialize;
use std::collections::HashSet;

/// The cosine floor used when neither the configuration nor the model gives a ranker.
pub const DEFAULT_FLOOR: f32 = 0.86;
/// Entries taken from each index into the candidate pool.
const POOL: usize = 10;

/// Retrieval settings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetrievalConfig {
    /// A plain cosine floor that replaces the model's learnt ranker (`--faq-floor`).
    pub floor: Option<f32>,
    /// Language of answers when the entry lacks the customer's.
    pub fallback_language: String,
}

impl RetrievalConfig {
    /// The ranker to use: the configured floor, else the model's, else [`DEFAULT_FLOOR`].
    pub fn ranker(&self, from_model: Option<Ranker>) -> Ranker {
        match (self.floor, from_model) {
            (Some(f), _) => Ranker::cosine_floor(f),
            (None, Some(r)) => r,
            (None, None) => Ranker::cosine_floor(DEFAULT_FLOOR),
        }
    }
}

/// What the text being embedded is: a customer query or an FAQ answer (e5 models embed
/// them with different prefixes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Query,
    Passage,
}

/// An embedding function for [`Retriever::build`] from an encoder: queries with its query
/// prefix, answers with its passage prefix.
pub fn embedder(
    encoder: &crate::model::Encoder,
    batch_size: usize,
) -> impl Fn(&[&str], TextKind) -> Result<Vec<Vec<f32>>> + '_ {
    move |texts, kind| match kind {
        TextKind::Query => encoder.embed(texts, batch_size),
        TextKind::Passage => encoder.embed_with_prefix(texts, encoder.passage_prefix(), batch_size),
    }
}

/// A candidate entry: its probability under the ranker and its best question cosine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub faq_id: String,
    /// Probability that this entry answers the query (the ranker's softmax).
    pub score: f32,
    /// Best cosine similarity of the query to the entry's question variants.
    pub similarity: f32,
}

/// The chosen answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub faq_id: String,
    pub text: String,
    pub language: String,
    /// Probability that this entry answers the query.
    pub score: f32,
    pub similarity: f32,
}

/// A ranking: candidates best first, whether the best one answers, and the probability
/// of "no answer".
#[derive(Debug, Clone)]
pub struct Ranking {
    /// `(entry index, probability, question cosine)`, best first.
    pub candidates: Vec<(usize, f32, f32)>,
    pub answered: bool,
    pub no_answer: f32,
}

/// Embedded texts of one kind with the entry each row belongs to.
struct Rows {
    index: Box<dyn VectorIndex>,
    entry_of: Vec<usize>,
    of_entry: Vec<Vec<usize>>,
}

/// Flatten per-entry groups into rows: the items, the entry of each row, the rows of each
/// entry.
pub(crate) fn flatten_groups<T>(groups: Vec<Vec<T>>) -> (Vec<T>, Vec<usize>, Vec<Vec<usize>>) {
    let (mut items, mut entry_of, mut of_entry) = (Vec::new(), Vec::new(), Vec::new());
    for (e, group) in groups.into_iter().enumerate() {
        of_entry.push((items.len()..items.len() + group.len()).collect());
        entry_of.extend(std::iter::repeat_n(e, group.len()));
        items.extend(group);
    }
    (items, entry_of, of_entry)
}

impl Rows {
    fn build(
        texts_per_entry: Vec<Vec<&str>>,
        embed: impl Fn(&[&str]) -> Result<Vec<Vec<f32>>>,
    ) -> Result<Self> {
        let (texts, entry_of, of_entry) = flatten_groups(texts_per_entry);
        let vectors = embed(&texts)?;
        anyhow::ensure!(
            vectors.len() == texts.len(),
            "embedder returned {} vectors for {} texts",
            vectors.len(),
            texts.len()
        );
        Ok(Self {
            index: Box::new(ExactIndex::new(&vectors)?),
            entry_of,
            of_entry,
        })
    }

    /// The `k` best entries with their best similarity (rows come best first, so an
    /// entry's first row is its best).
    fn best_entries(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut best: Vec<(usize, f32)> = Vec::new();
        for (row, score) in self.index.search(query, (k * 8).max(16)) {
            let e = self.entry_of[row];
            if !best.iter().any(|(b, _)| *b == e) {
                best.push((e, score));
                if best.len() == k {
                    break;
                }
            }
        }
        best
    }

    /// The entry's best similarity over its rows.
    fn entry_similarity(&self, entry: usize, query: &[f32]) -> f32 {
        self.of_entry[entry]
            .iter()
            .map(|&r| self.index.similarity(r, query))
            .fold(f32::NEG_INFINITY, f32::max)
    }
}

/// A knowledge base embedded and indexed, with the ranker that scores it.
pub struct Retriever {
    entries: Vec<FaqEntry>,
    questions: Rows,
    /// Answers embedded as passages, when the ranker uses them.
    answers: Option<Rows>,
    ranker: Ranker,
    /// Intents some entry carries.
    served: HashSet<String>,
    pub config: RetrievalConfig,
}

impl Retriever {
    /// Embed every question variant (and answer, if the ranker uses them) and index them.
    pub fn build(
        entries: Vec<FaqEntry>,
        embed: impl Fn(&[&str], TextKind) -> Result<Vec<Vec<f32>>>,
        config: RetrievalConfig,
        ranker: Ranker,
    ) -> Result<Self> {
        let with_answers = ranker.uses_answers();
        Self::build_with(entries, embed, config, ranker, with_answers)
    }

    /// As [`Retriever::build`], embedding the answers even when the ranker does not use them
    /// (to fit a ranker that may).
    pub fn build_with(
        entries: Vec<FaqEntry>,
        embed: impl Fn(&[&str], TextKind) -> Result<Vec<Vec<f32>>>,
        config: RetrievalConfig,
        ranker: Ranker,
        with_answers: bool,
    ) -> Result<Self> {
        let questions = Rows::build(
            entries
                .iter()
                .map(|e| e.questions.values().flatten().map(String::as_str).collect())
                .collect(),
            |t| embed(t, TextKind::Query),
        )?;
        let answers = with_answers
            .then(|| {
                Rows::build(
                    entries
                        .iter()
                        .map(|e| e.answers.values().map(String::as_str).collect())
                        .collect(),
                    |t| embed(t, TextKind::Passage),
                )
            })
            .transpose()?;
        let served = entries.iter().filter_map(|e| e.intent.clone()).collect();
        Ok(Self {
            entries,
            questions,
            answers,
            ranker,
            served,
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
        self.questions.index.len()
    }
    pub fn entries(&self) -> &[FaqEntry] {
        &self.entries
    }
    pub fn ranker(&self) -> &Ranker {
        &self.ranker
    }
    /// Replace the ranker; one that uses the answers needs them embedded at build.
    pub fn set_ranker(&mut self, ranker: Ranker) -> Result<()> {
        anyhow::ensure!(
            self.answers.is_some() || !ranker.uses_answers(),
            "the ranker uses answer similarity but the answers were not embedded"
        );
        self.ranker = ranker;
        Ok(())
    }

    /// The candidate pool: the best entries by question, and by answer.
    /// With the question similarity of the entries the question search found (the others
    /// get theirs computed in [`Retriever::signal`]).
    fn pool(&self, query: &[f32]) -> Vec<(usize, Option<f32>)> {
        let mut pool: Vec<(usize, Option<f32>)> = self
            .questions
            .best_entries(query, POOL)
            .into_iter()
            .map(|(e, s)| (e, Some(s)))
            .collect();
        if let Some(a) = &self.answers {
            for (e, _) in a.best_entries(query, POOL) {
                if !pool.iter().any(|(p, _)| *p == e) {
                    pool.push((e, None));
                }
            }
        }
        pool
    }

    /// One entry's signals. An entry without an intent (or with one the head does not
    /// know) gets the uniform intent probability.
    fn signal(
        &self,
        (e, question): (usize, Option<f32>),
        query: &[f32],
        intents: &[Scored],
    ) -> Signals {
        let uniform = 1.0 / intents.len().max(1) as f32;
        let intent_p = self.entries[e]
            .intent
            .as_ref()
            .and_then(|i| intents.iter().find(|s| &s.label == i))
            .map_or(uniform, |s| s.score);
        Signals {
            question: question.unwrap_or_else(|| self.questions.entry_similarity(e, query)),
            answer: self
                .answers
                .as_ref()
                .map_or(0.0, |a| a.entry_similarity(e, query)),
            intent_log_p: log_p(intent_p),
        }
    }

    /// ln P(an intent no entry serves); without an intent distribution, ln(1) = 0.
    fn unserved_log_p(&self, intents: &[Scored]) -> f32 {
        if intents.is_empty() {
            return 0.0;
        }
        log_p(
            intents
                .iter()
                .filter(|s| !self.served.contains(&s.label))
                .map(|s| s.score)
                .sum(),
        )
    }

    /// Rank the candidates for a query vector and the intent head's distribution (empty
    /// when there is none).
    pub fn rank(&self, query: &[f32], intents: &[Scored]) -> Ranking {
        let pool: Vec<(usize, Signals)> = self
            .pool(query)
            .into_iter()
            .map(|p| (p.0, self.signal(p, query, intents)))
            .collect();
        let scores: Vec<f32> = pool.iter().map(|(_, s)| self.ranker.score(s)).collect();
        let null = self.ranker.null_score_of(
            self.unserved_log_p(intents),
            intents.iter().map(|s| (s.label.as_str(), s.score)),
        );
        let (probs, no_answer) = probabilities(&scores, null);
        let mut candidates: Vec<(usize, f32, f32)> = pool
            .iter()
            .zip(&probs)
            .map(|((e, s), &p)| (*e, p, s.question))
            .collect();
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
        // Whether some entry answers (1 - P(no answer) > 1/2), then which: the best one.
        // (Comparing the best entry with "no answer" alone would let close entries that
        // split the probability between them lose to "no answer".)
        let answered = !candidates.is_empty() && no_answer < 0.5;
        Ranking {
            candidates,
            answered,
            no_answer,
        }
    }

    /// A fitting example for a query whose right entry is `gold` (an id; `None`: no entry
    /// answers it). The right entry joins the pool if the indexes missed it; an unknown id
    /// gives `None`.
    pub fn example(
        &self,
        query: &[f32],
        intents: &[Scored],
        gold: Option<&str>,
    ) -> Option<Example> {
        let mut pool = self.pool(query);
        let gold = match gold {
            None => None,
            Some(id) => {
                let e = self.entries.iter().position(|x| x.id == id)?;
                if !pool.iter().any(|(p, _)| *p == e) {
                    pool.push((e, None));
                }
                pool.iter().position(|(p, _)| *p == e)
            }
        };
        Some(Example {
            candidates: pool
                .into_iter()
                .map(|p| self.signal(p, query, intents))
                .collect(),
            null: NullSignals {
                unserved_log_p: self.unserved_log_p(intents),
                intents: intents.iter().map(|s| (s.label.clone(), s.score)).collect(),
            },
            gold,
        })
    }

    /// The `k` best candidates plus the answer (when the best beats "no answer"), in
    /// `language` when the entry has it.
    pub fn answer(
        &self,
        query: &[f32],
        intents: &[Scored],
        language: Option<&str>,
        k: usize,
    ) -> (Option<Answer>, Vec<Candidate>) {
        let ranking = self.rank(query, intents);
        let answer = ranking
            .candidates
            .first()
            .filter(|_| ranking.answered)
            .and_then(|&(e, score, similarity)| {
                let entry = &self.entries[e];
                let (lang, text) = pick_language(entry, language, &self.config.fallback_language)?;
                Some(Answer {
                    faq_id: entry.id.clone(),
                    text: text.to_string(),
                    language: lang.to_string(),
                    score,
                    similarity,
                })
            });
        let candidates = ranking
            .candidates
            .into_iter()
            .take(k)
            .map(|(e, score, similarity)| Candidate {
                faq_id: self.entries[e].id.clone(),
                score,
                similarity,
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

    fn fake_embed(texts: &[&str], kind: TextKind) -> Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| match (*t, kind) {
                ("x", _) => vec![1.0, 0.0],
                ("y", _) => vec![0.0, 1.0],
                (_, TextKind::Passage) => vec![0.0, -1.0],
                _ => vec![0.6, 0.8],
            })
            .collect())
    }

    fn config() -> RetrievalConfig {
        RetrievalConfig {
            floor: Some(0.5),
            fallback_language: "en".into(),
        }
    }

    fn scored(pairs: &[(&str, f32)]) -> Vec<Scored> {
        pairs
            .iter()
            .map(|(l, s)| Scored {
                label: l.to_string(),
                score: *s,
            })
            .collect()
    }

    #[test]
    fn best_variant_per_entry_and_language_choice() {
        let c = config();
        let r = Retriever::build(kb(), fake_embed, c.clone(), c.ranker(None)).unwrap();
        assert_eq!(r.variants(), 3);
        let ranking = r.rank(&[0.0, 1.0], &[]);
        assert_eq!(ranking.candidates.len(), 2);
        assert_eq!(ranking.candidates[0].0, 1);
        let (a, _) = r.answer(&[1.0, 0.0], &[], Some("zh"), 3);
        assert_eq!(a.unwrap().text, "A-zh");
        let (a, _) = r.answer(&[1.0, 0.0], &[], Some("th"), 3);
        assert_eq!(a.unwrap().language, "en");
        // Entry without the fallback language answers in the one it has.
        let (a, _) = r.answer(&[0.0, 1.0], &[], Some("fr"), 3);
        assert_eq!(a.unwrap().language, "de");
        // Below the floor: no answer, candidates still listed.
        let (a, c) = r.answer(&[-1.0, 0.0], &[], None, 3);
        assert!(a.is_none());
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn intent_prior_and_unserved_intents_move_the_decision() {
        let kb = kb::parse_kb(concat!(
            r#"{"id":"a","intent":"refund_status","question":{"en":"x"},"answer":{"en":"A"}}"#,
            "\n",
            r#"{"id":"b","intent":"order_status","question":{"en":"y"},"answer":{"en":"B"}}"#
        ))
        .unwrap();
        let ranker = Ranker {
            question: 10.0,
            answer: 0.0,
            intent: 2.0,
            null_bias: 5.0,
            null_unserved: 2.0,
            null_intents: Default::default(),
        };
        let r = Retriever::build(kb, fake_embed, config(), ranker).unwrap();
        // Halfway between both questions: the intent head decides.
        let q = [
            std::f32::consts::FRAC_1_SQRT_2,
            std::f32::consts::FRAC_1_SQRT_2,
        ];
        let refund = scored(&[
            ("refund_status", 0.9),
            ("order_status", 0.05),
            ("greeting", 0.05),
        ]);
        let (a, _) = r.answer(&q, &refund, None, 3);
        assert_eq!(a.unwrap().faq_id, "a");
        let order = scored(&[
            ("order_status", 0.9),
            ("refund_status", 0.05),
            ("greeting", 0.05),
        ]);
        assert_eq!(r.answer(&q, &order, None, 3).0.unwrap().faq_id, "b");
        // A greeting (no entry serves it): no answer.
        let hello = scored(&[
            ("greeting", 0.98),
            ("order_status", 0.01),
            ("refund_status", 0.01),
        ]);
        let ranking = r.rank(&q, &hello);
        assert!(!ranking.answered);
        assert!(ranking.no_answer > 0.9);
        // Fitting examples name the right candidate, or none.
        let ex = r.example(&q, &refund, Some("a")).unwrap();
        assert_eq!(ex.gold.map(|g| ex.candidates[g].question), Some(q[0]));
        assert!(r.example(&q, &hello, None).unwrap().gold.is_none());
        assert!(r.example(&q, &hello, Some("nope")).is_none());
    }

    #[test]
    fn a_ranker_using_answers_needs_them_embedded() {
        let c = config();
        let mut r = Retriever::build(kb(), fake_embed, c.clone(), c.ranker(None)).unwrap();
        let with_answers = Ranker {
            answer: 1.0,
            ..c.ranker(None)
        };
        assert!(r.set_ranker(with_answers.clone()).is_err());
        let r = Retriever::build(kb(), fake_embed, c, with_answers).unwrap();
        // "A-en"/"A-zh"/"B-de" embed as passages to (0, -1).
        let ranking = r.rank(&[0.0, -1.0], &[]);
        assert!(!ranking.candidates.is_empty());
    }
}
