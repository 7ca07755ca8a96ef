//! The CPU inference engine: a BERT forward written for serving rather than training.
//! Sequences are not padded (every linear layer runs on the batch's real tokens only, and
//! attention runs per sequence and head), weights are packed once at load time (query, key
//! and value fused into one matrix), residual adds and GELU are fused into the linear
//! layers, and work is split over the cores. fp32, bf16 (AVX-512 BF16) or int8 (VNNI)
//! weights. candle's `BertModel` stays the reference path (`--engine candle`, and the GPU
//! path); tests hold the two together.

pub mod amx;
pub mod bf16;
pub mod int8;
pub mod linear;
pub mod ops;
pub mod parallel;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct, PositionEmbeddingType};
use linear::{Epilogue, Linear};
pub use linear::{Kernels, Precision};

/// Which forward runs the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// The inference engine on CPUs with AVX-512: bf16 on AMX tiles where the CPU has them
    /// (measured to agree with fp32: see the README), fp32 otherwise; candle elsewhere
    /// (GPUs, and CPUs where only the portable kernels would run).
    #[default]
    Auto,
    /// candle's `BertModel` (the reference).
    Candle,
    /// The inference engine, fp32 weights.
    F32,
    /// The inference engine, bf16 weights and inputs with fp32 sums, where the CPU has
    /// AVX-512 BF16 (on AMX tiles where it has those; fp32 elsewhere).
    Bf16,
    /// The inference engine, int8 weights and activations where the CPU has VNNI (fp32
    /// elsewhere).
    Int8,
}

impl EngineKind {
    /// The precision of the inference engine's linear layers on `kernels` (None: candle
    /// runs).
    pub fn precision(&self, kernels: Kernels) -> Option<Precision> {
        match self {
            EngineKind::Candle => None,
            EngineKind::Auto if kernels.amx() => Some(Precision::Bf16),
            EngineKind::Auto | EngineKind::F32 => Some(Precision::F32),
            EngineKind::Bf16 => Some(Precision::Bf16),
            EngineKind::Int8 => Some(Precision::Int8),
        }
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "candle" => Ok(Self::Candle),
            "f32" | "fp32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "int8" => Ok(Self::Int8),
            other => Err(format!(
                "unknown engine {other:?}: expected auto, candle, f32, bf16 or int8"
            )),
        }
    }
}

/// Layer norm weights.
struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

struct Layer {
    /// Query, key and value in one `[3 * hidden, hidden]` map.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

/// Final hidden states of a batch, sequences one after another without padding.
pub struct Hidden {
    /// `[tokens, width]`.
    pub states: Vec<f32>,
    /// First row of each sequence, then the total number of rows.
    pub starts: Vec<usize>,
    pub width: usize,
}

impl Hidden {
    /// Mean over each sequence's tokens, L2-normalised: `[sequences, width]`.
    pub fn mean_pooled_normalized(&self) -> Vec<f32> {
        let w = self.width;
        let mut out = Vec::with_capacity((self.starts.len() - 1) * w);
        for s in self.starts.windows(2) {
            let mut mean = vec![0f32; w];
            for row in self.states[s[0] * w..s[1] * w].chunks_exact(w) {
                mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
            }
            let count = (s[1] - s[0]).max(1) as f32;
            mean.iter_mut().for_each(|m| *m /= count);
            let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            out.extend(mean.iter().map(|v| v / norm));
        }
        out
    }

    /// The first token's hidden state of each sequence: `[sequences, width]`.
    pub fn first_rows(&self) -> Vec<f32> {
        let w = self.width;
        let seqs = &self.starts[..self.starts.len() - 1];
        seqs.iter()
            .flat_map(|&s| self.states[s * w..(s + 1) * w].iter().copied())
            .collect()
    }
}

/// A BERT encoder prepared for CPU inference.
pub struct InferenceBert {
    /// `[vocab, hidden]` word embeddings (looked up, never multiplied).
    word: Tensor,
    /// `[max_positions, hidden]` position embeddings plus token type 0.
    pos: Vec<f32>,
    max_positions: usize,
    emb_norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    eps: f32,
    kernels: Kernels,
}

impl InferenceBert {
    /// Whether the engine can run a model of this configuration (erf GELU, absolute
    /// positions, widths in multiples of 16); the reason if not.
    pub fn supports(config: &Config) -> Result<()> {
        if config.hidden_act != HiddenAct::Gelu {
            bail!("the inference engine supports the erf GELU only; use --engine candle");
        }
        if config.position_embedding_type != PositionEmbeddingType::Absolute {
            bail!("the inference engine supports absolute positions only; use --engine candle");
        }
        let (h, inter) = (config.hidden_size, config.intermediate_size);
        if !h.is_multiple_of(config.num_attention_heads.max(1))
            || !h.is_multiple_of(linear::PANEL)
            || !inter.is_multiple_of(linear::PANEL)
        {
            bail!("hidden size {h} / intermediate size {inter} not supported by the inference engine; use --engine candle");
        }
        Ok(())
    }

    /// Read a Hugging Face BERT from `vb` (with or without a `bert.` prefix).
    pub fn load(
        vb: &VarBuilder,
        config: &Config,
        kernels: Kernels,
        precision: Precision,
    ) -> Result<Self> {
        Self::supports(config)?;
        let (h, inter) = (config.hidden_size, config.intermediate_size);
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb.clone()
        };
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = vb
                .get(shape, name)
                .with_context(|| format!("reading {name}"))?;
            Ok(t.flatten_all()?.to_vec1::<f32>()?)
        };
        let norm = |name: &str| -> Result<Norm> {
            Ok(Norm {
                w: get(&format!("{name}.weight"), &[h])?,
                b: get(&format!("{name}.bias"), &[h])?,
            })
        };
        let lin = |names: &[String], n: usize, k: usize| -> Result<Linear> {
            let mut w = Vec::with_capacity(names.len() * n * k);
            let mut b = Vec::with_capacity(names.len() * n);
            for name in names {
                w.extend(get(&format!("{name}.weight"), &[n, k])?);
                b.extend(get(&format!("{name}.bias"), &[n])?);
            }
            Ok(Linear::new(&w, &b, names.len() * n, k, kernels, precision))
        };
        let word = vb
            .get((config.vocab_size, h), "embeddings.word_embeddings.weight")
            .context("reading the word embeddings")?;
        let max_positions = config.max_position_embeddings;
        let mut pos = get("embeddings.position_embeddings.weight", &[max_positions, h])?;
        let token_types = get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        for row in pos.chunks_exact_mut(h) {
            row.iter_mut()
                .zip(&token_types[..h])
                .for_each(|(p, t)| *p += t);
        }
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let qkv: Vec<String> = ["query", "key", "value"]
                .iter()
                .map(|n| format!("{p}.attention.self.{n}"))
                .collect();
            layers.push(Layer {
                qkv: lin(&qkv, h, h)?,
                attn_out: lin(&[format!("{p}.attention.output.dense")], h, h)?,
                attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                up: lin(&[format!("{p}.intermediate.dense")], inter, h)?,
                down: lin(&[format!("{p}.output.dense")], h, inter)?,
                out_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        Ok(Self {
            word,
            pos,
            max_positions,
            emb_norm: norm("embeddings.LayerNorm")?,
            layers,
            hidden: h,
            heads: config.num_attention_heads,
            eps: config.layer_norm_eps as f32,
            kernels,
        })
    }

    /// The linear layers' precision and the kernels that run, e.g. `f32 avx512+vnni`.
    pub fn describe(&self) -> String {
        let precision = self
            .layers
            .first()
            .map_or(Precision::F32, |l| l.qkv.precision());
        format!("{} {}", precision.name(), self.kernels.name())
    }

    /// Run the encoder over token id sequences (no padding needed).
    pub fn forward(&self, seqs: &[&[u32]]) -> Result<Hidden> {
        let h = self.hidden;
        let mut starts = Vec::with_capacity(seqs.len() + 1);
        let mut ids = Vec::new();
        for s in seqs {
            if s.is_empty() || s.len() > self.max_positions {
                bail!(
                    "a sequence of {} tokens (1 to {} supported)",
                    s.len(),
                    self.max_positions
                );
            }
            starts.push(ids.len());
            ids.extend_from_slice(s);
        }
        let tokens = ids.len();
        starts.push(tokens);
        let ids = Tensor::from_vec(ids, tokens, &Device::Cpu)?;
        let mut x = self.word.embedding(&ids)?.flatten_all()?.to_vec1::<f32>()?;
        for s in starts.windows(2) {
            let len = (s[1] - s[0]) * h;
            x[s[0] * h..s[1] * h]
                .iter_mut()
                .zip(&self.pos[..len])
                .for_each(|(v, p)| *v += p);
        }
        let k = self.kernels;
        ops::layer_norm(k, &mut x, h, &self.emb_norm.w, &self.emb_norm.b, self.eps);
        let inter = self.layers.first().map_or(0, |l| l.up.out_features());
        let mut qkv = vec![0f32; tokens * 3 * h];
        let mut ctx = vec![0f32; tokens * h];
        let mut mid = vec![0f32; tokens * h];
        let mut up = vec![0f32; tokens * inter];
        for l in &self.layers {
            l.qkv.forward(&x, tokens, &mut qkv, Epilogue::Bias);
            ops::attention(k, &qkv, &starts, self.heads, &mut ctx);
            l.attn_out
                .forward(&ctx, tokens, &mut mid, Epilogue::Residual(&x));
            ops::layer_norm(k, &mut mid, h, &l.attn_norm.w, &l.attn_norm.b, self.eps);
            l.up.forward(&mid, tokens, &mut up, Epilogue::Gelu);
            l.down
                .forward(&up, tokens, &mut x, Epilogue::Residual(&mid));
            ops::layer_norm(k, &mut x, h, &l.out_norm.w, &l.out_norm.b, self.eps);
        }
        Ok(Hidden {
            states: x,
            starts,
            width: h,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_transformers::models::bert::BertModel;
    use rand::{Rng, SeedableRng};

    /// A tiny random BERT written to a temporary directory, its config and weights.
    fn tiny(seed: u64) -> (tempfile::TempDir, Config, VarBuilder<'static>) {
        let dir = tempfile::tempdir().unwrap();
        crate::model::tiny::write_tiny_bert(dir.path(), seed).unwrap();
        let config: Config =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();
        // SAFETY: the file is written above and not modified while mapped.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.path().join("model.safetensors")],
                DType::F32,
                &Device::Cpu,
            )
            .unwrap()
        };
        (dir, config, vb)
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (na * nb)
    }

    /// The engine (every kernel set this CPU has; fp32, bf16 and int8) against candle's BertModel
    /// on a tiny random BERT, sequence by sequence, in one unpadded batch.
    #[test]
    fn engine_matches_candle_bert() {
        let (_dir, config, vb) = tiny(7);
        let reference = BertModel::load(vb.clone(), &config).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let seqs: Vec<Vec<u32>> = [1usize, 3, 9, 17, 40]
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|_| rng.gen_range(0..config.vocab_size as u32))
                    .collect()
            })
            .collect();
        let expected: Vec<Vec<f32>> = seqs
            .iter()
            .map(|s| {
                let ids = Tensor::new(s.as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap();
                let tt = ids.zeros_like().unwrap();
                let out = reference.forward(&ids, &tt, None).unwrap();
                out.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            })
            .collect();
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        for kernels in Kernels::all_available() {
            for precision in [Precision::F32, Precision::Bf16, Precision::Int8] {
                let engine = InferenceBert::load(&vb, &config, kernels, precision).unwrap();
                let out = engine.forward(&refs).unwrap();
                assert_eq!(out.starts, vec![0, 1, 4, 13, 30, 70]);
                let quantized = !engine.describe().starts_with("f32");
                for (i, want) in expected.iter().enumerate() {
                    let got = &out.states[out.starts[i] * out.width..out.starts[i + 1] * out.width];
                    if quantized {
                        for (g, w) in got.chunks(out.width).zip(want.chunks(out.width)) {
                            let c = cosine(g, w);
                            assert!(c > 0.995, "{} seq {i}: cosine {c}", engine.describe());
                        }
                    } else {
                        let diff = got
                            .iter()
                            .zip(want)
                            .map(|(a, b)| (a - b).abs())
                            .fold(0f32, f32::max);
                        assert!(
                            diff < 1e-4,
                            "{} seq {i}: max diff {diff}",
                            engine.describe()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn empty_and_overlong_sequences_are_errors() {
        let (_dir, config, vb) = tiny(1);
        let engine = InferenceBert::load(&vb, &config, Kernels::detect(), Precision::F32).unwrap();
        assert!(engine.forward(&[&[]]).is_err());
        let long = vec![5u32; config.max_position_embeddings + 1];
        assert!(engine.forward(&[&long]).is_err());
    }

    #[test]
    fn exp_and_erf_are_accurate() {
        for i in -2000..=2000 {
            let x = i as f32 / 100.0;
            let e = ops::exp(x);
            assert!(((e - x.exp()) / x.exp()).abs() < 1e-6, "exp({x})");
        }
        for i in -600..=600 {
            let x = i as f32 / 100.0;
            let want = libm_erf(x as f64) as f32;
            let err = (ops::erf(x) - want).abs();
            assert!(err < 1e-6, "erf({x}): error {err}");
        }
    }

    /// erf from its series / continued fraction in f64 (reference only).
    fn libm_erf(x: f64) -> f64 {
        // Abramowitz and Stegun 7.1.5 series, exact enough for |x| <= 6 in f64.
        if x.abs() > 5.0 {
            return x.signum();
        }
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 || n < 5.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
            if n > 200.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
}
