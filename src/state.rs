//! The swappable bundle the server answers from: model, FAQ retriever (embedded by that
//! model) and policy, behind an atomic pointer. Reloads build a complete new bundle,
//! validate it (weights load, labels present, a probe message classifies, the knowledge
//! base embeds) and swap it in; requests in flight finish on the bundle they started
//! with, and a failed reload changes nothing.

use crate::batch::ModelSource;
use crate::model::{Model, ModelOptions};
use crate::policy::Policy;
use crate::retrieval::{embedder, read_kb, RetrievalConfig, Retriever};
use anyhow::{ensure, Context, Result};
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where the parts come from.
#[derive(Debug, Clone)]
pub struct Sources {
    pub model: ModelOptions,
    pub faq: PathBuf,
    pub policy: PathBuf,
    pub retrieval: RetrievalConfig,
}

/// One consistent generation of model + knowledge base + policy.
pub struct Bundle {
    pub model: Arc<Model>,
    pub retriever: Arc<Retriever>,
    pub policy: Arc<Policy>,
    pub generation: u64,
    pub loaded_at: std::time::SystemTime,
}

/// The live state and how to rebuild it.
pub struct State {
    current: ArcSwap<Bundle>,
    sources: Mutex<Sources>,
    generation: AtomicU64,
    /// One reload at a time.
    reload_lock: Mutex<()>,
}

impl ModelSource for State {
    type State = Bundle;
    fn current(&self) -> Arc<Bundle> {
        self.current.load_full()
    }
    fn model(state: &Bundle) -> &Model {
        &state.model
    }
}

fn load_model(opts: &ModelOptions) -> Result<Model> {
    let model = Model::load(opts)?;
    ensure!(
        !model.intent.labels.is_empty(),
        "the model has no intent labels"
    );
    // Probe: a real message must classify into a proper distribution.
    let p = model
        .predict(&["where is my order?"], 1)
        .context("probe message failed")?;
    let sum: f32 = p[0].intents.iter().map(|s| s.score).sum();
    ensure!(
        (sum - 1.0).abs() < 1e-3 && sum.is_finite(),
        "probe message gave a broken distribution (sum {sum})"
    );
    Ok(model)
}

fn build_retriever(model: &Model, s: &Sources) -> Result<Retriever> {
    let entries = read_kb(&s.faq)?;
    let ranker = s
        .retrieval
        .ranker(model.heads_meta.as_ref().and_then(|m| m.retrieval.clone()));
    Retriever::build(
        entries,
        embedder(&model.encoder, 32),
        s.retrieval.clone(),
        ranker,
    )
}

impl State {
    /// Load everything for the first time.
    pub fn load(sources: Sources) -> Result<Self> {
        let model = Arc::new(load_model(&sources.model)?);
        let retriever = Arc::new(build_retriever(&model, &sources)?);
        let policy = Arc::new(Policy::load(
            &sources.policy,
            &sources.retrieval.fallback_language,
        )?);
        let bundle = Bundle {
            model,
            retriever,
            policy,
            generation: 1,
            loaded_at: std::time::SystemTime::now(),
        };
        Ok(Self {
            current: ArcSwap::from_pointee(bundle),
            sources: Mutex::new(sources),
            generation: AtomicU64::new(1),
            reload_lock: Mutex::new(()),
        })
    }

    /// Generation of the bundle now serving.
    pub fn current_generation(&self) -> u64 {
        self.current.load().generation
    }

    pub fn sources(&self) -> Sources {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn swap(&self, model: Arc<Model>, retriever: Arc<Retriever>, policy: Arc<Policy>) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.current.store(Arc::new(Bundle {
            model,
            retriever,
            policy,
            generation,
            loaded_at: std::time::SystemTime::now(),
        }));
        generation
    }

    /// Reload the model (and re-embed the knowledge base with it).
    pub fn reload_model(&self) -> Result<u64> {
        let _g = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = self.sources();
        let model = Arc::new(load_model(&s.model)?);
        let retriever = Arc::new(build_retriever(&model, &s)?);
        let old = self.current();
        Ok(self.swap(model, retriever, old.policy.clone()))
    }

    /// Reload the knowledge base.
    pub fn reload_faq(&self) -> Result<u64> {
        let _g = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = self.sources();
        let old = self.current();
        let retriever = Arc::new(build_retriever(&old.model, &s)?);
        Ok(self.swap(old.model.clone(), retriever, old.policy.clone()))
    }

    /// Reload the policy.
    pub fn reload_policy(&self) -> Result<u64> {
        let _g = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = self.sources();
        let policy = Arc::new(Policy::load(&s.policy, &s.retrieval.fallback_language)?);
        let old = self.current();
        Ok(self.swap(old.model.clone(), old.retriever.clone(), policy))
    }
}
