//! The model: finding or provisioning a model directory, loading the encoder and its
//! heads, and turning texts into [`Prediction`]s (intent and emotion distributions plus the
//! retrieval vector) with one encoder pass. Knows nothing about HTTP or policy.

pub mod bert;
pub mod device;
pub mod encoder;
pub mod heads;
pub mod infer;
pub mod lora;
pub mod provision;
pub mod tiny;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub use device::{device_name, parse_device};
pub use encoder::{Encoder, EncoderOutput, Tokenized};
pub use heads::{Head, HeadInput, HeadsMeta};
pub use infer::EngineKind;

/// A label with its probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    pub label: String,
    pub score: f32,
}

/// Everything one encoder pass says about one text.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// All intent labels, most probable first.
    pub intents: Vec<Scored>,
    /// All emotion labels, most probable first (None if the model has no emotion head).
    pub emotions: Option<Vec<Scored>>,
    /// The L2-normalised query vector for retrieval.
    pub embedding: Vec<f32>,
    /// Tokens fed to the encoder (after truncation, with special tokens).
    pub tokens: usize,
    /// The text was longer than the encoder window and was cut.
    pub truncated: bool,
}

/// Where the model comes from, as given on the command line.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// `None` or `"default"`: the default model (provisioned if needed); a directory; or a
    /// Hugging Face hub id.
    pub model: Option<String>,
    /// A heads directory; defaults to the model directory's own heads, or the shipped
    /// default heads for the default model.
    pub heads: Option<PathBuf>,
    /// Cache directory for provisioned and downloaded models.
    pub cache_dir: PathBuf,
    pub device: Device,
    /// Which forward runs the encoder.
    pub engine: EngineKind,
}

/// The shipped heads for the default encoder, relative to the crate root.
pub const DEFAULT_HEADS_DIR: &str = "models/default";

/// A loaded encoder with its intent and emotion heads.
pub struct Model {
    pub encoder: Encoder,
    pub intent: Head,
    pub emotion: Option<Head>,
    /// The directory the encoder came from.
    pub dir: PathBuf,
    /// Where the heads came from (None when the model carries its own classifier only).
    pub heads_dir: Option<PathBuf>,
    pub heads_meta: Option<HeadsMeta>,
}

impl Model {
    /// Resolve the options to directories and load everything.
    pub fn load(opts: &ModelOptions) -> Result<Self> {
        let (dir, is_default) = resolve_model_dir(opts)?;
        let heads_dir = match &opts.heads {
            Some(h) => Some(h.clone()),
            None if dir.join(heads::HEADS_META).exists() => Some(dir.clone()),
            None if is_default => Some(default_heads_dir()),
            None => None,
        };
        Self::load_dirs_with(&dir, heads_dir.as_deref(), &opts.device, opts.engine)
    }

    /// Load an encoder directory and (optionally) a heads directory.
    pub fn load_dirs(dir: &Path, heads_dir: Option<&Path>, device: &Device) -> Result<Self> {
        Self::load_dirs_with(dir, heads_dir, device, EngineKind::Auto)
    }

    /// As [`Model::load_dirs`], with the encoder's forward chosen.
    pub fn load_dirs_with(
        dir: &Path,
        heads_dir: Option<&Path>,
        device: &Device,
        engine: EngineKind,
    ) -> Result<Self> {
        // heads.json is read once: it names the adapters and describes the heads.
        let meta = heads_dir
            .map(|h| {
                heads::read_meta(h).with_context(|| format!("loading heads from {}", h.display()))
            })
            .transpose()?;
        let adapters = match (heads_dir, meta.as_ref().and_then(|m| m.adapters.as_ref())) {
            (Some(h), Some(spec)) => Some(lora::Adapters::load(
                &h.join(lora::ADAPTERS_FILE),
                spec.scale(),
            )?),
            _ => None,
        };
        let encoder = Encoder::load_with_adapters(dir, device, adapters.as_ref(), engine)
            .with_context(|| format!("loading the encoder from {}", dir.display()))?;
        let hf_intent = heads::load_hf_classifier(dir, encoder.hidden_size(), device)?;
        let mut own = match (heads_dir, &meta) {
            (Some(h), Some(m)) => heads::load_heads(h, m, encoder.hidden_size(), device)
                .with_context(|| format!("loading heads from {}", h.display()))?,
            _ => Vec::new(),
        };
        let take = |name: &str, v: &mut Vec<Head>| {
            v.iter().position(|h| h.name == name).map(|i| v.remove(i))
        };
        let intent = match (take("intent", &mut own), hf_intent) {
            (Some(h), _) => h,
            (None, Some(h)) => h,
            (None, None) => bail!(
                "no intent head: {} is not a sequence-classification checkpoint and no heads \
                 directory was given (--heads DIR with heads.json + heads.safetensors)",
                dir.display()
            ),
        };
        if intent.input == HeadInput::PooledCls && !encoder.has_pooler() {
            bail!(
                "{}: classifier present but the BERT pooler weights are missing",
                dir.display()
            );
        }
        let emotion = take("emotion", &mut own);
        Ok(Self {
            encoder,
            intent,
            emotion,
            dir: dir.to_path_buf(),
            heads_dir: heads_dir.map(Path::to_path_buf),
            heads_meta: meta,
        })
    }

    /// A name for this model: encoder id plus heads.
    pub fn model_id(&self) -> String {
        self.encoder.model_id().to_string()
    }

    /// Predict for a batch of already tokenised texts with one encoder pass.
    pub fn predict_tokenized(&self, batch: &[&Tokenized]) -> Result<Vec<Prediction>> {
        let out = self.encoder.forward(batch)?;
        let intents = self.head_probs(&self.intent, &out)?;
        let emotions = match &self.emotion {
            Some(h) => Some(self.head_probs(h, &out)?),
            None => None,
        };
        let embeddings = out.embeddings.to_vec2::<f32>()?;
        Ok(embeddings
            .into_iter()
            .enumerate()
            .map(|(i, embedding)| Prediction {
                intents: ranked(&self.intent.labels, &intents[i]),
                emotions: match (&self.emotion, &emotions) {
                    (Some(h), Some(e)) => Some(ranked(&h.labels, &e[i])),
                    _ => None,
                },
                embedding,
                tokens: batch[i].ids.len(),
                truncated: batch[i].truncated,
            })
            .collect())
    }

    /// Tokenise and predict texts, `batch_size` at a time.
    pub fn predict(&self, texts: &[&str], batch_size: usize) -> Result<Vec<Prediction>> {
        let tokens = self.encoder.tokenize(texts)?;
        let mut out: Vec<Option<Prediction>> = vec![None; texts.len()];
        for batch in encoder::length_sorted_batches(&tokens, batch_size) {
            let refs: Vec<&Tokenized> = batch.iter().map(|&i| &tokens[i]).collect();
            for (i, p) in batch.into_iter().zip(self.predict_tokenized(&refs)?) {
                out[i] = Some(p);
            }
        }
        out.into_iter()
            .map(|p| p.context("a text got no prediction"))
            .collect()
    }

    fn head_probs(&self, head: &Head, out: &EncoderOutput) -> Result<Vec<Vec<f32>>> {
        let input: &Tensor = match head.input {
            HeadInput::MeanPooled => &out.embeddings,
            HeadInput::PooledCls => out
                .pooled_cls
                .as_ref()
                .context("head needs the BERT pooler output")?,
        };
        Ok(head.probabilities(input)?.to_vec2::<f32>()?)
    }
}

/// The encoder directory the options name, provisioning or downloading it if needed;
/// the flag says whether it is the default model.
pub fn resolve_model_dir(opts: &ModelOptions) -> Result<(PathBuf, bool)> {
    Ok(match opts.model.as_deref() {
        None | Some("default") => (provision::ensure_default_model(&opts.cache_dir)?, true),
        Some(spec) if Path::new(spec).exists() => (PathBuf::from(spec), false),
        Some(spec) if looks_like_hub_id(spec) => {
            (provision::fetch_from_hub(spec, &opts.cache_dir)?, false)
        }
        Some(spec) => {
            bail!("--model '{spec}' is neither an existing directory nor a hub id (owner/name)")
        }
    })
}

/// Labels sorted by probability, most probable first.
pub fn ranked(labels: &[String], probs: &[f32]) -> Vec<Scored> {
    let mut v: Vec<Scored> = labels
        .iter()
        .zip(probs)
        .map(|(l, &p)| Scored {
            label: l.clone(),
            score: p,
        })
        .collect();
    v.sort_by(|a, b| b.score.total_cmp(&a.score));
    v
}

/// `owner/name` without path separators beyond the one slash.
pub fn looks_like_hub_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
        && !spec.starts_with('.')
}

/// The shipped default heads: `$TRIAGE_HEADS_DIR`, else `models/default` next to the
/// current directory, else next to the crate sources (for `cargo run` anywhere).
pub fn default_heads_dir() -> PathBuf {
    if let Ok(p) = std::env::var("TRIAGE_HEADS_DIR") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(DEFAULT_HEADS_DIR);
    if local.join(heads::HEADS_META).exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_HEADS_DIR)
}

/// Sentiment polarity derived from an emotion label (taxonomy: angry, anxious and
/// disappointed are negative, satisfied positive, everything else neutral).
pub fn sentiment_of(emotion: &str) -> &'static str {
    match emotion {
        "angry" | "anxious" | "disappointed" => "negative",
        "satisfied" => "positive",
        _ => "neutral",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths_are_told_apart() {
        assert!(looks_like_hub_id("intfloat/multilingual-e5-small"));
        assert!(!looks_like_hub_id("./models/x"));
        assert!(!looks_like_hub_id("/abs/path"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert!(!looks_like_hub_id("single"));
    }

    #[test]
    fn ranking_sorts_descending() {
        let labels = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let r = ranked(&labels, &[0.2, 0.5, 0.3]);
        assert_eq!(r[0].label, "b");
        assert_eq!(r[2].label, "a");
    }

    #[test]
    fn sentiment_follows_taxonomy() {
        assert_eq!(sentiment_of("angry"), "negative");
        assert_eq!(sentiment_of("satisfied"), "positive");
        assert_eq!(sentiment_of("neutral"), "neutral");
    }
}
