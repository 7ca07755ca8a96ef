//! The encoder: tokenizer + BERT forward + pooling, producing for each text a mean-pooled,
//! L2-normalised vector (the e5 recipe) and, when the model directory carries a BERT
//! pooler (fine-tuned `BertForSequenceClassification` checkpoints), the pooled `[CLS]`
//! vector its classifier expects. One forward pass serves both.

use super::infer::{EngineKind, InferenceBert, Kernels, Precision};
use super::lora::{Adapters, MergedWeights};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};
use candle_transformers::models::bert::{BertModel, Config};
use serde::Deserialize;
use std::path::Path;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Optional `triage.json` in a model directory: how to feed text to this encoder.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct EncoderSettings {
    /// Prefix added to every text before tokenisation (`"query: "` for e5 models).
    pub query_prefix: Option<String>,
    /// A human readable model id.
    pub model_id: Option<String>,
}

/// A tokenised text ready for a batch.
#[derive(Debug, Clone)]
pub struct Tokenized {
    pub ids: Vec<u32>,
    /// True when the text was longer than the model's window and was cut.
    pub truncated: bool,
}

/// The output of one forward pass over a batch.
pub struct EncoderOutput {
    /// `[n, hidden]` mean-pooled, L2-normalised vectors.
    pub embeddings: Tensor,
    /// `[n, hidden]` BERT pooler output (`tanh(W h_cls + b)`) when the model has a pooler.
    pub pooled_cls: Option<Tensor>,
}

/// The forward that runs: candle's reference model or the CPU inference engine.
enum Forward {
    Candle(BertModel),
    Engine(InferenceBert),
}

/// A loaded BERT encoder with its tokenizer.
pub struct Encoder {
    forward: Forward,
    pooler: Option<Linear>,
    tokenizer: Tokenizer,
    config: Config,
    device: Device,
    prefix: String,
    max_tokens: usize,
    pad_id: u32,
    model_id: String,
}

impl Encoder {
    /// Load `config.json`, `tokenizer.json` and `model.safetensors` from a directory.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_with_adapters(dir, device, None, EngineKind::Auto)
    }

    /// Like [`Encoder::load`], merging LoRA adapters into the weights first, with the
    /// given forward.
    pub fn load_with_adapters(
        dir: &Path,
        device: &Device,
        adapters: Option<&Adapters>,
        engine: EngineKind,
    ) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config_text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let config: Config = serde_json::from_str(&config_text)
            .with_context(|| format!("{} is not a BERT config", config_path.display()))?;
        let raw: serde_json::Value = serde_json::from_str(&config_text)?;
        let settings: EncoderSettings = match std::fs::read_to_string(dir.join("triage.json")) {
            Ok(s) => serde_json::from_str(&s).context("parsing triage.json")?,
            Err(_) => EncoderSettings::default(),
        };
        let weights = dir.join("model.safetensors");
        if !weights.exists() {
            bail!("{} has no model.safetensors", dir.display());
        }
        // SAFETY: the file is memory-mapped read-only; the model directory must not be
        // modified in place while loaded (reloads write a new directory and swap).
        let vb = match adapters {
            None => unsafe {
                VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device)
                    .with_context(|| format!("loading {}", weights.display()))?
            },
            Some(a) => VarBuilder::from_backend(
                Box::new(MergedWeights::new(&weights, a)?),
                DType::F32,
                device.clone(),
            ),
        };
        let mismatch = || format!("{} does not match its config.json", weights.display());
        let kernels = Kernels::detect();
        let use_candle = match (engine, device) {
            (EngineKind::Candle, _) => true,
            // Without AVX-512 the engine's portable kernels lose to candle's gemm (AVX2):
            // auto keeps candle there, on GPUs, and for models the engine cannot run.
            (EngineKind::Auto, Device::Cpu) => {
                kernels == Kernels::Portable || InferenceBert::supports(&config).is_err()
            }
            (EngineKind::Auto, _) => true,
            (_, Device::Cpu) => false,
            _ => bail!(
                "the inference engine runs on CPU only: use --engine candle (or auto) with a GPU"
            ),
        };
        let forward = if use_candle {
            Forward::Candle(BertModel::load(vb.clone(), &config).with_context(mismatch)?)
        } else {
            let precision = engine.precision(kernels).unwrap_or(Precision::F32);
            Forward::Engine(
                InferenceBert::load(&vb, &config, kernels, precision).with_context(mismatch)?,
            )
        };
        let pooler = ["bert.pooler.dense", "pooler.dense"]
            .iter()
            .find(|p| vb.contains_tensor(&format!("{p}.weight")))
            .map(|p| {
                candle_nn::linear(config.hidden_size, config.hidden_size, vb.pp(p))
                    .context("loading the BERT pooler")
            })
            .transpose()?;
        let is_classifier =
            raw.get("id2label").is_some() && vb.contains_tensor("classifier.weight");
        let prefix = settings.query_prefix.clone().unwrap_or_else(|| {
            if is_classifier {
                String::new()
            } else {
                "query: ".to_string()
            }
        });
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| anyhow::anyhow!("loading tokenizer.json: {e}"))?;
        let max_tokens = config.max_position_embeddings.min(512);
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| anyhow::anyhow!("configuring truncation: {e}"))?;
        tokenizer.with_padding(None);
        let pad_id = tokenizer
            .token_to_id("<pad>")
            .or_else(|| tokenizer.token_to_id("[PAD]"))
            .unwrap_or(config.pad_token_id as u32);
        let model_id = settings.model_id.clone().unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "model".to_string())
        });
        Ok(Self {
            forward,
            pooler,
            tokenizer,
            config,
            device: device.clone(),
            prefix,
            max_tokens,
            pad_id,
            model_id,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn model_id(&self) -> &str {
        &self.model_id
    }
    pub fn has_pooler(&self) -> bool {
        self.pooler.is_some()
    }
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    /// Which forward runs: `candle`, or the engine's precision and kernels.
    pub fn engine(&self) -> String {
        match &self.forward {
            Forward::Candle(_) => "candle".to_string(),
            Forward::Engine(e) => e.describe(),
        }
    }

    /// The prefix for documents (answers): `"passage: "` where queries take `"query: "`
    /// (e5 models), else the query prefix.
    pub fn passage_prefix(&self) -> &str {
        if self.prefix == "query: " {
            "passage: "
        } else {
            &self.prefix
        }
    }

    /// Tokenise texts with the model's prefix, special tokens and truncation.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Tokenized>> {
        self.tokenize_with_prefix(texts, &self.prefix)
    }

    /// Tokenise texts with the given prefix, special tokens and truncation.
    pub fn tokenize_with_prefix(&self, texts: &[&str], prefix: &str) -> Result<Vec<Tokenized>> {
        let inputs: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        Ok(encodings
            .into_iter()
            .map(|e| Tokenized {
                truncated: !e.get_overflowing().is_empty(),
                ids: e.get_ids().to_vec(),
            })
            .collect())
    }

    /// `text` repeated until it has at least `n` tokens, cut to exactly `n` (ending with its
    /// end-of-sequence token): fixed-size inputs for benchmarks.
    pub fn repeat_to_tokens(&self, text: &str, n: usize) -> Result<Tokenized> {
        let mut long = text.to_string();
        loop {
            let mut t = self.tokenize(&[long.as_str()])?.remove(0);
            if t.ids.len() >= n {
                let eos = t.ids.last().copied().unwrap_or(self.pad_id);
                t.ids.truncate(n.saturating_sub(1));
                t.ids.push(eos);
                return Ok(t);
            }
            if text.trim().is_empty() || long.len() > 100_000 {
                bail!("{text:?} does not reach {n} tokens");
            }
            long.push(' ');
            long.push_str(text);
        }
    }

    /// Run one forward pass over tokenised texts.
    pub fn forward(&self, batch: &[&Tokenized]) -> Result<EncoderOutput> {
        let bert = match &self.forward {
            Forward::Candle(bert) => bert,
            Forward::Engine(engine) => return self.forward_engine(engine, batch),
        };
        let (ids, mask) = self.pad(batch)?;
        let type_ids = ids.zeros_like()?;
        let hidden = bert.forward(&ids, &type_ids, Some(&mask))?;
        let embeddings = mean_pool_normalize(&hidden, &mask)?;
        let pooled_cls = match &self.pooler {
            Some(p) => Some(p.forward(&hidden.narrow(1, 0, 1)?.squeeze(1)?)?.tanh()?),
            None => None,
        };
        Ok(EncoderOutput {
            embeddings,
            pooled_cls,
        })
    }

    /// The forward on the inference engine: no padding, pooling on the unpadded rows.
    fn forward_engine(
        &self,
        engine: &InferenceBert,
        batch: &[&Tokenized],
    ) -> Result<EncoderOutput> {
        if batch.is_empty() {
            bail!("empty batch");
        }
        let seqs: Vec<&[u32]> = batch.iter().map(|t| t.ids.as_slice()).collect();
        let hidden = engine.forward(&seqs)?;
        let (n, h) = (batch.len(), hidden.width);
        let embeddings = Tensor::from_vec(hidden.mean_pooled_normalized(), (n, h), &self.device)?;
        let pooled_cls = match &self.pooler {
            Some(p) => {
                let cls = Tensor::from_vec(hidden.first_rows(), (n, h), &self.device)?;
                Some(p.forward(&cls)?.tanh()?)
            }
            None => None,
        };
        Ok(EncoderOutput {
            embeddings,
            pooled_cls,
        })
    }

    /// Pad a batch to its longest row: `[n, len]` ids and 0/1 attention mask.
    pub fn pad(&self, batch: &[&Tokenized]) -> Result<(Tensor, Tensor)> {
        let n = batch.len();
        if n == 0 {
            bail!("empty batch");
        }
        let len = batch.iter().map(|t| t.ids.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for t in batch {
            ids.extend_from_slice(&t.ids);
            mask.extend(std::iter::repeat_n(1u32, t.ids.len()));
            ids.extend(std::iter::repeat_n(self.pad_id, len - t.ids.len()));
            mask.extend(std::iter::repeat_n(0u32, len - t.ids.len()));
        }
        Ok((
            Tensor::from_vec(ids, (n, len), &self.device)?,
            Tensor::from_vec(mask, (n, len), &self.device)?,
        ))
    }

    /// Tokenise and embed texts in length-sorted batches of `batch_size`; returns one
    /// vector per text, in input order.
    pub fn embed(&self, texts: &[&str], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        self.embed_with_prefix(texts, &self.prefix, batch_size)
    }

    /// As [`Encoder::embed`] with another prefix (see [`Encoder::passage_prefix`]).
    pub fn embed_with_prefix(
        &self,
        texts: &[&str],
        prefix: &str,
        batch_size: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let tokens = self.tokenize_with_prefix(texts, prefix)?;
        let mut out = vec![Vec::new(); texts.len()];
        for batch in length_sorted_batches(&tokens, batch_size) {
            let refs: Vec<&Tokenized> = batch.iter().map(|&i| &tokens[i]).collect();
            let vectors = self.forward(&refs)?.embeddings.to_vec2::<f32>()?;
            for (i, v) in batch.into_iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

/// Group indices into batches of similar length (sorted by token count) to cut padding.
pub fn length_sorted_batches(tokens: &[Tokenized], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    order.sort_by_key(|&i| tokens[i].ids.len());
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Mean over the unmasked positions, then L2 normalisation.
pub fn mean_pool_normalize(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(mean.broadcast_div(&norm)?)
}
