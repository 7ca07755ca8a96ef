//! Our own BERT forward, written with candle ops so it can run *part* of the stack (the
//! frozen lower layers once, the adapted top layers many times while training) and carry
//! LoRA adapters. It reads the same Hugging Face tensors as
//! `candle_transformers::models::bert::BertModel`, which stays the reference inference
//! path; a test checks the two agree.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};
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
        mut x: Tensor,
        mask_bias: &Tensor,
        from: usize,
        to: usize,
        adapters: Option<&LayerAdapters>,
    ) -> Result<Tensor> {
        for i in from..to {
            let ad = adapters.and_then(|a| a.get(&i));
            x = self.layer(&self.layers[i], &x, mask_bias, ad)?;
        }
        Ok(x)
    }

    fn layer(
        &self,
        l: &Layer,
        x: &Tensor,
        mask_bias: &Tensor,
        ad: Option<&[Option<LoraPair>; 6]>,
    ) -> Result<Tensor> {
        let a = |i: usize| ad.and_then(|a| a[i].as_ref());
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
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((n, len, hidden))?;
        let attn = l.attn_norm.forward(&(l.lin[3].forward(&ctx, a(3))? + x)?)?;
        let inter = l.lin[4].forward(&attn, a(4))?.gelu_erf()?;
        l.out_norm
            .forward(&(l.lin[5].forward(&inter, a(5))? + attn)?)
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
