//! LoRA adapters for the encoder: their file (`adapters.safetensors` next to the heads,
//! tensors `encoder.layer.{i}.{linear}.lora_a` `[rank, in]` and `.lora_b` `[out, rank]`)
//! and merging them into the base weights at load time (`W + scale * B A`), so inference
//! runs a plain BERT and costs nothing extra.

use anyhow::{Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use std::collections::HashMap;
use std::path::Path;

/// File name of the adapters inside a heads directory.
pub const ADAPTERS_FILE: &str = "adapters.safetensors";

/// Loaded adapters: for each adapted weight (HF name without model prefix, e.g.
/// `encoder.layer.11.attention.self.query.weight`) its `(A, B)`, and the scale.
pub struct Adapters {
    pub pairs: HashMap<String, (Tensor, Tensor)>,
    pub scale: f64,
}

impl Adapters {
    /// Read `adapters.safetensors` (scale from `heads.json`).
    pub fn load(path: &Path, scale: f64) -> Result<Self> {
        let t = candle_core::safetensors::load(path, &Device::Cpu)
            .with_context(|| format!("loading {}", path.display()))?;
        let mut pairs = HashMap::new();
        for (name, a) in &t {
            if let Some(stem) = name.strip_suffix(".lora_a") {
                let b = t
                    .get(&format!("{stem}.lora_b"))
                    .with_context(|| format!("{stem}.lora_a has no lora_b"))?;
                pairs.insert(format!("{stem}.weight"), (a.clone(), b.clone()));
            }
        }
        anyhow::ensure!(!pairs.is_empty(), "{} holds no LoRA pairs", path.display());
        Ok(Self { pairs, scale })
    }

    /// `scale * B A`, the update of one weight.
    pub fn delta(&self, weight: &str) -> Result<Option<Tensor>> {
        match self.pairs.get(weight) {
            Some((a, b)) => Ok(Some((b.matmul(a)? * self.scale)?)),
            None => Ok(None),
        }
    }
}

/// A var-builder backend: the memory-mapped base weights, with merged tensors in front.
pub struct MergedWeights {
    base: MmapedSafetensors,
    merged: HashMap<String, Tensor>,
}

impl MergedWeights {
    /// Map `model.safetensors` and merge the adapters into the weights they name.
    pub fn new(weights: &Path, adapters: &Adapters) -> Result<Self> {
        // SAFETY: read-only map of a file that is not modified while loaded.
        let base = unsafe { MmapedSafetensors::new(weights)? };
        let prefix = if base.get("bert.embeddings.word_embeddings.weight").is_ok() {
            "bert."
        } else {
            ""
        };
        let mut merged = HashMap::new();
        for name in adapters.pairs.keys() {
            let full = format!("{prefix}{name}");
            let w = base
                .load(&full, &Device::Cpu)
                .with_context(|| format!("adapter targets {full}, which the encoder lacks"))?
                .to_dtype(DType::F32)?;
            let d = adapters.delta(name)?.context("delta")?;
            anyhow::ensure!(
                d.dims() == w.dims(),
                "adapter for {full} has shape {:?}, weight {:?}",
                d.dims(),
                w.dims()
            );
            merged.insert(full, (w + d)?);
        }
        Ok(Self { base, merged })
    }
}

impl SimpleBackend for MergedWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            candle_core::bail!(
                "shape mismatch for {name}: expected {s:?}, got {:?}",
                t.shape()
            );
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.merged.get(name) {
            Some(t) => t.to_dtype(dtype)?.to_device(dev),
            None => self.base.load(name, dev)?.to_dtype(dtype),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.merged.contains_key(name) || self.base.get(name).is_ok()
    }
}
