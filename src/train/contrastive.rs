//! The retrieval objective of `triage train`: customer messages paired with the FAQ entry
//! that answers them (`{"text", "lang", "faq_id"}`), contrasted against one question variant
//! of every knowledge-base entry (InfoNCE over all entries, a random variant language each
//! step), so that the LoRA adapters pull customer wording towards the FAQ's questions instead
//! of bending the embedding space away from them. Training messages that no entry answers
//! (`faq_id: null`) take a "no entry" class instead: a learnt similarity floor joins every
//! step's InfoNCE as one more column, so answered messages must rise above it and
//! unanswered ones stay under it, teaching the adapters where the knowledge base ends. Also
//! measures top-1 on held-out pairs after every epoch, for model selection next to the
//! classification heads.

use super::adapt::{frozen_pass, pad_batch, Cached, Ctx};
use crate::eval::faq::read_queries;
use crate::model::bert::{Bert, LayerAdapters};
use crate::model::Encoder;
use crate::retrieval::{flatten_groups, read_kb};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::HashMap;
use std::path::Path;

/// Where the "no entry" floor starts: a cosine that e5's unrelated pairs reach.
const NULL_FLOOR_START: f32 = 0.8;

/// Messages with the index of the entry that answers them.
#[derive(Debug, Clone, Default)]
pub struct PairSet {
    pub texts: Vec<String>,
    pub entry: Vec<usize>,
}

/// Everything the retrieval objective reads.
#[derive(Debug, Clone)]
pub struct RetrievalData {
    pub train: PairSet,
    /// Training messages no entry answers (`faq_id: null`).
    pub train_null: Vec<String>,
    /// Held-out pairs for the per-epoch top-1 (rows with no entry are skipped).
    pub dev: PairSet,
    /// Question variants of every entry, all languages.
    pub questions: Vec<Vec<String>>,
}

impl RetrievalData {
    /// Read the knowledge base and the pair files; a pair naming an unknown entry is an
    /// error naming it.
    pub fn load(kb: &Path, train: &Path, dev: &Path) -> Result<Self> {
        let entries = read_kb(kb)?;
        let index: HashMap<&str, usize> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id.as_str(), i))
            .collect();
        // The answered pairs of a file, and the texts of its rows that no entry answers.
        let pairs = |path: &Path| -> Result<(PairSet, Vec<String>)> {
            let mut set = PairSet::default();
            let mut nulls = Vec::new();
            for q in read_queries(path)? {
                let Some(id) = q.faq_id else {
                    nulls.push(q.text);
                    continue;
                };
                let Some(&e) = index.get(id.as_str()) else {
                    bail!(
                        "{}: faq_id '{id}' is not in {}",
                        path.display(),
                        kb.display()
                    );
                };
                set.texts.push(q.text);
                set.entry.push(e);
            }
            if set.texts.is_empty() {
                bail!("{}: no pair names an entry", path.display());
            }
            Ok((set, nulls))
        };
        let (train, train_null) = pairs(train)?;
        Ok(Self {
            train,
            train_null,
            dev: pairs(dev)?.0,
            questions: entries
                .iter()
                .map(|e| e.questions.values().flatten().cloned().collect())
                .collect(),
        })
    }
}

/// The objective with its frozen-layer caches.
pub(super) struct RetrievalTask {
    /// Answered training messages, then the unanswered ones.
    train: Cached,
    /// Entry per training message; `n_entries` for "no entry".
    train_entry: Vec<usize>,
    /// The "no entry" similarity floor (cosine), learnt; `None` without unanswered messages.
    null_floor: Option<Var>,
    dev: Cached,
    dev_entry: Vec<usize>,
    variants: Cached,
    variant_entry: Vec<usize>,
    by_entry: Vec<Vec<usize>>,
    order: Vec<usize>,
    next: usize,
    /// Pairs per step.
    pub batch: usize,
    /// InfoNCE temperature on cosine similarities.
    pub temperature: f64,
}

impl RetrievalTask {
    pub fn new(
        data: &RetrievalData,
        encoder: &Encoder,
        bert: &Bert,
        lower: usize,
        embed_batch: usize,
        batch: usize,
        temperature: f64,
    ) -> Result<Self> {
        let (variants, variant_entry, by_entry) =
            flatten_groups(data.questions.iter().map(|q| str_refs(q)).collect());
        eprintln!(
            "retrieval objective: {} pairs, {} held-out, {} entries / {} question variants",
            data.train.texts.len(),
            data.dev.texts.len(),
            data.questions.len(),
            variants.len()
        );
        let n_entries = data.questions.len();
        let texts: Vec<&str> = data
            .train
            .texts
            .iter()
            .chain(&data.train_null)
            .map(String::as_str)
            .collect();
        let mut train_entry = data.train.entry.clone();
        train_entry.extend(std::iter::repeat_n(n_entries, data.train_null.len()));
        let null_floor = if data.train_null.is_empty() {
            None
        } else {
            Some(Var::new(&[NULL_FLOOR_START], &Device::Cpu)?)
        };
        Ok(Self {
            train: frozen_pass(encoder, bert, &texts, lower, embed_batch)?,
            order: (0..train_entry.len()).collect(),
            train_entry,
            null_floor,
            dev: frozen_pass(
                encoder,
                bert,
                &str_refs(&data.dev.texts),
                lower,
                embed_batch,
            )?,
            dev_entry: data.dev.entry.clone(),
            variants: frozen_pass(encoder, bert, &variants, lower, embed_batch)?,
            variant_entry,
            by_entry,
            next: usize::MAX,
            batch,
            temperature,
        })
    }

    /// One step's loss: the next `batch` pairs against one random variant of every entry.
    pub fn loss(
        &mut self,
        ctx: &Ctx,
        adapters: &LayerAdapters,
        rng: &mut StdRng,
    ) -> Result<Tensor> {
        if self.next >= self.order.len() {
            self.order.shuffle(rng);
            self.next = 0;
        }
        let end = (self.next + self.batch).min(self.order.len());
        let idx = self.order[self.next..end].to_vec();
        self.next = end;
        let positives: Vec<usize> = self
            .by_entry
            .iter()
            .map(|v| v[rng.gen_range(0..v.len())])
            .collect();
        let targets: Vec<u32> = idx.iter().map(|&i| self.train_entry[i] as u32).collect();
        let (xq, mq) = pad_batch(&self.train, &idx)?;
        let q = ctx.embedded(xq, &mq, Some(adapters))?;
        let (xp, mp) = pad_batch(&self.variants, &positives)?;
        let p = ctx.embedded(xp, &mp, Some(adapters))?;
        let mut sims = q.matmul(&p.t()?)?;
        if let Some(floor) = &self.null_floor {
            let column = floor
                .as_tensor()
                .unsqueeze(0)?
                .broadcast_as((idx.len(), 1))?;
            sims = Tensor::cat(&[&sims, &column], 1)?;
        }
        let sims = (sims / self.temperature)?;
        Ok(candle_nn::loss::cross_entropy(
            &sims,
            &Tensor::new(targets.as_slice(), &Device::Cpu)?,
        )?)
    }

    /// Top-1 of the held-out pairs: best entry = best question variant.
    pub fn dev_top1(&self, ctx: &Ctx, adapters: &LayerAdapters) -> Result<f64> {
        let q = ctx.embed_cache(&self.dev, adapters)?;
        let v = ctx.embed_cache(&self.variants, adapters)?;
        let best = q.matmul(&v.t()?)?.argmax(1)?.to_vec1::<u32>()?;
        let ok = best
            .iter()
            .zip(&self.dev_entry)
            .filter(|(&b, &e)| self.variant_entry[b as usize] == e)
            .count();
        Ok(ok as f64 / self.dev_entry.len().max(1) as f64)
    }

    /// The learnt "no entry" floor, to be trained with the other parameters.
    pub fn null_floor(&self) -> Option<&Var> {
        self.null_floor.as_ref()
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.order.len().div_ceil(self.batch.max(1))
    }
}

fn str_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
