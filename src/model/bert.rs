//! Our own BERT forward, written with candle ops so it can run *part* of the stack (the
//! frozen lower layers once, the adapted top layers many times while training) and carry
//! LoRA adapters. It reads the same Hugging Face tensors as
//! `candle_transformers::models::bert::BertModel`, which stays the reference inference
//! path; a test checks the two agree.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// The six linear maps of a BERT layer, in the order adapters name them.
pub const LINEARS: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

/// A linear map `y = x W^T + b` with an optional low-rank update `scale * (x A^T) B^T`.
#[derive(Clone)]
pub struct Lin {
    pub w: Tensor,
    pub b: Tensor,
}

impl Lin {
    fn forward(&self, x: &Tensor, lora: Option<&LoraPair>) -> Result<Tensor> {
        let y = x.broadcast_matmul(&self.w.t()?)?.broadcast_add(&self.b)?;
        Ok(match lora {
            Some(l) => {
                (y + (x.broadcast_matmul(&l.a.t()?)?.broadcast_matmul(&l.b.t()?)? * l.scale)?)?
            }
            None => y,
        })
    }
}

/// One LoRA update: `A` is `[rank, in]`, `B` is `[out, rank]`.
#[derive(Clone)]
pub struct LoraPair {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
}

/// Layer norm weights.
#[derive(Clone)]
pub struct Norm {
    pub w: Tensor,
    pub b: Tensor,
    pub eps: f64,
}

impl Norm {
    /// Layer norm from primitive ops (differentiable).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = x.dim(D::Minus1)? as f64;
        let mean = (x.sum_keepdim(D::Minus1)? / h)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = (xc.sqr()?.sum_keepdim(D::Minus1)? / h)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(xn.broadcast_mul(&self.w)?.broadcast_add(&self.b)?)
    }
}

/// One transformer layer.
#[derive(Clone)]
pub struct Layer {
    /// query, key, value, attention output, intermediate, output (see [`LINEARS`]).
    pub lin: [Lin; 6],
    pub attn_norm: Norm,
    pub out_norm: Norm,
}

/// The BERT encoder as plain tensors.
pub struct Bert {
    pub word: Tensor,
    pub pos: Tensor,
    pub token_type: Tensor,
    pub emb_norm: Norm,
    pub layers: Vec<Layer>,
    pub heads: usize,
}

/// Adapters for some layers: `adapters[layer][linear]`.
pub type LayerAdapters = HashMap<usize, [Option<LoraPair>; 6]>;

/// Training-time dropout where BERT has it (attention probabilities, and each sub-layer's
/// output before its residual sum), with its own seeded generator: candle's CPU random
/// numbers cannot be seeded, and a training run must be reproducible from its seed.
pub struct Dropout {
    p: f32,
    rng: StdRng,
}

impl Dropout {
    /// Drop each value with probability `p` (in `[0, 1)`), scaling the kept ones by
    /// `1 / (1 - p)`.
    pub fn new(p: f32, seed: u64) -> Self {
        Self {
            p,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// `x` with a fresh random mask applied (`x` itself when `p` is 0).
    pub fn apply(&mut self, x: &Tensor) -> Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 / (1.0 - self.p);
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| {
                if self.rng.gen::<f32>() < self.p {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        Ok((x * Tensor::from_vec(mask, x.shape(), x.device())?)?)
    }
}

impl Bert {
    /// Build from Hugging Face BERT tensors (with or without a `bert.` prefix).
    pub fn from_tensors(
        t: &HashMap<String, Tensor>,
        heads: usize,
        layers: usize,
        eps: f64,
    ) -> Result<Self> {
        let prefix = if t.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let get = |n: &str| -> Result<Tensor> {
            t.get(&format!("{prefix}{n}"))
                .cloned()
                .with_context(|| format!("missing tensor {prefix}{n}"))
        };
        let norm = |n: &str| -> Result<Norm> {
            Ok(Norm {
                w: get(&format!("{n}.weight"))?,
                b: get(&format!("{n}.bias"))?,
                eps,
            })
        };
        let mut ls = Vec::with_capacity(layers);
        for i in 0..layers {
            let p = format!("encoder.layer.{i}");
            let lin = |n: &str| -> Result<Lin> {
                Ok(Lin {
                    w: get(&format!("{p}.{n}.weight"))?,
                    b: get(&format!("{p}.{n}.bias"))?,
                })
            };
            ls.push(Layer {
                lin: [
                    lin(LINEARS[0])?,
                    lin(LINEARS[1])?,
                    lin(LINEARS[2])?,
                    lin(LINEARS[3])?,
                    lin(LINEARS[4])?,
                    lin(LINEARS[5])?,
                ],
                attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                out_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        Ok(Self {
            word: get("embeddings.word_embeddings.weight")?,
            pos: get("embeddings.position_embeddings.weight")?,
            token_type: get("embeddings.token_type_embeddings.weight")?,
            emb_norm: norm("embeddings.LayerNorm")?,
            layers: ls,
            heads,
        })
    }

    /// Embeddings for `[n, len]` ids (token type 0).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let words = self
            .word
            .embedding(&ids.flatten_all()?)?
            .reshape((ids.dim(0)?, len, ()))?;
        let pos = self.pos.narrow(0, 0, len)?;
        let tt = self.token_type.narrow(0, 0, 1)?;
        let x = words.broadcast_add(&pos)?.broadcast_add(&tt)?;
        self.emb_norm.forward(&x)
    }

    /// Run layers `from..to` on hidden states `[n, len, hidden]` with an additive mask
    /// bias `[n, 1, 1, len]` (0 keep, large negative drop).
    pub fn layers(
        &self,
        x: Tensor,
        mask_bias: &Tensor,
        from: usize,
        to: usize,
        adapters: Option<&LayerAdapters>,
    ) -> Result<Tensor> {
        self.layers_with_dropout(x, mask_bias, from, to, adapters, None)
    }

    /// [`Bert::layers`] in training mode: with `dropout`, BERT's dropout sites are active.
    pub fn layers_with_dropout(
        &self,
        mut x: Tensor,
        mask_bias: &Tensor,
        from: usize,
        to: usize,
        adapters: Option<&LayerAdapters>,
        mut dropout: Option<&mut Dropout>,
    ) -> Result<Tensor> {
        for i in from..to {
            let ad = adapters.and_then(|a| a.get(&i));
            x = self.layer(&self.layers[i], &x, mask_bias, ad, dropout.as_deref_mut())?;
        }
        Ok(x)
    }

    fn layer(
        &self,
        l: &Layer,
        x: &Tensor,
        mask_bias: &Tensor,
        ad: Option<&[Option<LoraPair>; 6]>,
        mut dropout: Option<&mut Dropout>,
    ) -> Result<Tensor> {
        let a = |i: usize| ad.and_then(|a| a[i].as_ref());
        let mut drop = |t: Tensor| -> Result<Tensor> {
            match dropout.as_deref_mut() {
                Some(d) => d.apply(&t),
                None => Ok(t),
            }
        };
        let (n, len, hidden) = x.dims3()?;
        let hd = hidden / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((n, len, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(l.lin[0].forward(x, a(0))?)?;
        let k = split(l.lin[1].forward(x, a(1))?)?;
        let v = split(l.lin[2].forward(x, a(2))?)?;
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(mask_bias)?;
        let probs = drop(candle_nn::ops::softmax(&scores, D::Minus1)?)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((n, len, hidden))?;
        let attn = l
            .attn_norm
            .forward(&(drop(l.lin[3].forward(&ctx, a(3))?)? + x)?)?;
        let inter = l.lin[4].forward(&attn, a(4))?.gelu_erf()?;
        l.out_norm
            .forward(&(drop(l.lin[5].forward(&inter, a(5))?)? + attn)?)
    }
}

/// The additive attention bias `[n, 1, 1, len]` for a `[n, len]` 0/1 mask.
pub fn mask_bias(mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?;
    Ok(((m.ones_like()? - m)? * -1e9)?.unsqueeze(1)?.unsqueeze(1)?)
}

/// Load every tensor of a model directory's `model.safetensors` into memory.
pub fn load_tensors(dir: &std::path::Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let p = dir.join("model.safetensors");
    candle_core::safetensors::load(&p, device).with_context(|| format!("loading {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_is_seeded_scaled_and_off_at_zero() {
        let x = Tensor::ones((64, 256), DType::F32, &Device::Cpu).unwrap();
        let draw = |seed| -> Vec<f32> {
            let mut d = Dropout::new(0.25, seed);
            d.apply(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let (a, b, c) = (draw(1), draw(1), draw(2));
        assert_eq!(a, b, "same seed, same mask");
        assert_ne!(a, c, "another seed, another mask");
        let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
        assert!((dropped - 0.25).abs() < 0.03, "dropped {dropped}");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!((mean - 1.0).abs() < 0.05, "mean {mean}");
        let off = Dropout::new(0.0, 1).apply(&x).unwrap();
        assert_eq!(
            off.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0; 64 * 256]
        );
    }
}
