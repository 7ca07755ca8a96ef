//! Classification heads on top of the encoder: intent and emotion.
//!
//! Two kinds: our own heads (`heads.safetensors` + `heads.json`, trained by `triage train`
//! on the mean-pooled e5 vector, one linear layer each, a temperature for calibrated
//! probabilities) and the `classifier` of a fine-tuned Hugging Face
//! `BertForSequenceClassification` checkpoint (on the BERT pooler output, labels from
//! `config.json`'s `id2label`). Either gives a probability distribution over labels.

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// File name of the heads' weights inside a heads directory.
pub const HEADS_WEIGHTS: &str = "heads.safetensors";
/// File name of the heads' description inside a heads directory.
pub const HEADS_META: &str = "heads.json";

/// What a head reads from the encoder output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadInput {
    /// The mean-pooled, L2-normalised e5 vector.
    MeanPooled,
    /// The BERT pooler output on `[CLS]`.
    PooledCls,
}

/// Description of one head in `heads.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadSpec {
    pub labels: Vec<String>,
    /// Softmax temperature fitted on the dev split (1.0 = uncalibrated).
    #[serde(default = "one")]
    pub temperature: f32,
}

fn one() -> f32 {
    1.0
}

/// `heads.json`: the heads of a model, with provenance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadsMeta {
    pub format: String,
    /// Which encoder these heads were trained on (its model id).
    pub encoder: String,
    /// Scale applied to the normalised embedding before the heads (keeps weights small).
    #[serde(default = "one")]
    pub input_scale: f32,
    pub heads: BTreeMap<String, HeadSpec>,
    /// The FAQ ranker fitted on this model's vectors and intent head (adapters reshape the
    /// space); the server uses it unless `--faq-floor` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<crate::retrieval::Ranker>,
    /// LoRA adapters shipped with the heads (`adapters.safetensors`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapters: Option<AdapterSpec>,
    /// Free-form training facts (data, seed, epochs, dev metrics).
    #[serde(default)]
    pub training: serde_json::Value,
}

/// How the encoder was adapted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterSpec {
    pub rank: usize,
    pub alpha: f64,
    /// Layers that carry adapters.
    pub layers: Vec<usize>,
}

impl AdapterSpec {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank.max(1) as f64
    }
}

/// Read `heads.json` alone.
pub fn read_meta(dir: &Path) -> Result<HeadsMeta> {
    let meta_path = dir.join(HEADS_META);
    serde_json::from_str(
        &std::fs::read_to_string(&meta_path)
            .with_context(|| format!("reading {}", meta_path.display()))?,
    )
    .with_context(|| format!("parsing {}", meta_path.display()))
}

/// A loaded head: layers, labels, temperature.
pub struct Head {
    pub name: String,
    pub labels: Vec<String>,
    pub input: HeadInput,
    pub temperature: f32,
    input_scale: f32,
    out: Linear,
}

impl Head {
    /// Logits (before temperature) for a `[n, d]` input.
    pub fn logits(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = if (self.input_scale - 1.0).abs() > f32::EPSILON {
            (xs * self.input_scale as f64)?
        } else {
            xs.clone()
        };
        Ok(self.out.forward(&xs)?)
    }

    /// Calibrated probabilities `[n, labels]`.
    pub fn probabilities(&self, xs: &Tensor) -> Result<Tensor> {
        let logits = (self.logits(xs)? / self.temperature.max(1e-3) as f64)?;
        Ok(candle_nn::ops::softmax(&logits, D::Minus1)?)
    }
}

/// Load the weights of our heads (`heads.safetensors`) described by `meta` (its
/// `heads.json`, read once by the caller).
pub fn load_heads(
    dir: &Path,
    meta: &HeadsMeta,
    hidden_size: usize,
    device: &Device,
) -> Result<Vec<Head>> {
    ensure!(
        meta.format.starts_with("triage-heads/"),
        "{} has unknown format '{}'",
        dir.join(HEADS_META).display(),
        meta.format
    );
    let weights = dir.join(HEADS_WEIGHTS);
    let tensors = candle_core::safetensors::load(&weights, device)
        .with_context(|| format!("loading {}", weights.display()))?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    let mut heads = Vec::new();
    for (name, spec) in &meta.heads {
        ensure!(!spec.labels.is_empty(), "head '{name}' has no labels");
        let out = candle_nn::linear(hidden_size, spec.labels.len(), vb.pp(name).pp("out"))
            .with_context(|| {
                format!(
                    "head '{name}' weights do not match its {} labels and input size {hidden_size}",
                    spec.labels.len()
                )
            })?;
        heads.push(Head {
            name: name.clone(),
            labels: spec.labels.clone(),
            input: HeadInput::MeanPooled,
            temperature: spec.temperature,
            input_scale: meta.input_scale,
            out,
        });
    }
    Ok(heads)
}

/// Load the `classifier` of a Hugging Face `BertForSequenceClassification` directory as an
/// intent head, if the directory is one.
pub fn load_hf_classifier(dir: &Path, hidden_size: usize, device: &Device) -> Result<Option<Head>> {
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let Some(id2label) = config.get("id2label").and_then(|v| v.as_object()) else {
        return Ok(None);
    };
    let weights = dir.join("model.safetensors");
    // SAFETY: read-only mmap of a file that is not modified while loaded.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device)? };
    if !vb.contains_tensor("classifier.weight") {
        return Ok(None);
    }
    let mut labels = vec![String::new(); id2label.len()];
    for (k, v) in id2label {
        let idx: usize = k
            .parse()
            .with_context(|| format!("id2label key '{k}' is not an index"))?;
        ensure!(idx < labels.len(), "id2label index {idx} out of range");
        labels[idx] = v.as_str().unwrap_or_default().to_string();
    }
    if labels.iter().any(|l| l.is_empty()) {
        bail!(
            "id2label in {} has gaps or non-string labels",
            dir.display()
        );
    }
    let out =
        candle_nn::linear(hidden_size, labels.len(), vb.pp("classifier")).with_context(|| {
            format!(
                "classifier.weight does not match {} labels in id2label",
                labels.len()
            )
        })?;
    Ok(Some(Head {
        name: "intent".to_string(),
        labels,
        input: HeadInput::PooledCls,
        temperature: 1.0,
        input_scale: 1.0,
        out,
    }))
}
