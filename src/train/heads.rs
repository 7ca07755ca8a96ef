//! Fitting classification heads on frozen encoder vectors with candle-nn (AdamW,
//! cross-entropy, seeded initialisation and shuffling), keeping the epoch with the best
//! dev accuracy, then temperature-scaling on dev.

use super::calibrate::{fit_temperature, softmax};
use crate::dataset::Labeled;
use crate::eval::expected_calibration_error;
use crate::model::heads::{HeadSpec, HeadsMeta, HEADS_META, HEADS_WEIGHTS};
use crate::model::Encoder;
use crate::taxonomy;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Knobs of `triage train`.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOptions {
    pub epochs: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Hidden layer width (0 = linear heads).
    pub hidden: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// Scale of the normalised embedding fed to the heads.
    pub input_scale: f32,
    /// Encoder batch size while embedding the data.
    pub embed_batch: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            epochs: 60,
            lr: 3e-3,
            weight_decay: 1e-3,
            hidden: 0,
            batch_size: 64,
            seed: 42,
            input_scale: 20.0,
            embed_batch: 32,
        }
    }
}

/// What one head's training achieved.
#[derive(Debug, Clone, Serialize)]
pub struct HeadReport {
    pub labels: usize,
    pub train_rows: usize,
    pub dev_rows: usize,
    pub best_epoch: usize,
    pub dev_accuracy: f64,
    pub temperature: f32,
    pub dev_ece_before: f64,
    pub dev_ece_after: f64,
}

/// The training report written next to the heads.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub encoder: String,
    pub options: TrainOptions,
    pub heads: BTreeMap<String, HeadReport>,
    pub seconds_embedding: f64,
    pub seconds_training: f64,
}

struct HeadData<'a> {
    name: &'a str,
    labels: Vec<String>,
    train_x: Tensor,
    train_y: Vec<u32>,
    dev_x: Tensor,
    dev_y: Vec<u32>,
}

/// Embed the data with the encoder, train an intent and an emotion head, calibrate them
/// and write `heads.safetensors` + `heads.json` + `training-report.json` into `out`.
pub fn train_heads(
    encoder: &Encoder,
    train: &[Labeled],
    dev: &[Labeled],
    opts: &TrainOptions,
    out: &Path,
) -> Result<TrainReport> {
    if train.is_empty() {
        bail!("no training rows");
    }
    let t0 = std::time::Instant::now();
    eprintln!(
        "embedding {} training and {} dev messages...",
        train.len(),
        dev.len()
    );
    let train_emb = embed_all(encoder, train, opts.embed_batch)?;
    let dev_emb = embed_all(encoder, dev, opts.embed_batch)?;
    let seconds_embedding = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let device = Device::Cpu;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut specs = BTreeMap::new();
    let mut reports = BTreeMap::new();
    type LabelOf = fn(&Labeled) -> Option<&str>;
    let tasks: [(&str, LabelOf, &[&str]); 2] = [
        ("intent", |r| r.intent.as_deref(), &taxonomy::INTENTS),
        ("emotion", |r| r.emotion.as_deref(), &taxonomy::EMOTIONS),
    ];
    for (name, label_of, tax) in tasks {
        let labels = taxonomy::order_labels(train.iter().filter_map(label_of), tax);
        if labels.len() < 2 {
            eprintln!("skipping head '{name}': fewer than two labels in the training data");
            continue;
        }
        let index: HashMap<&str, u32> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), i as u32))
            .collect();
        let pick = |rows: &[Labeled], emb: &[Vec<f32>]| -> Result<(Tensor, Vec<u32>)> {
            let mut xs = Vec::new();
            let mut ys = Vec::new();
            for (r, e) in rows.iter().zip(emb) {
                if let Some(l) = label_of(r) {
                    let Some(&y) = index.get(l) else { continue };
                    xs.extend(e.iter().map(|v| v * opts.input_scale));
                    ys.push(y);
                }
            }
            let d = emb.first().map(Vec::len).unwrap_or(0);
            Ok((Tensor::from_vec(xs, (ys.len(), d), &device)?, ys))
        };
        let (train_x, train_y) = pick(train, &train_emb)?;
        let (dev_x, dev_y) = pick(dev, &dev_emb)?;
        let data = HeadData {
            name,
            labels: labels.clone(),
            train_x,
            train_y,
            dev_x,
            dev_y,
        };
        let (weights, report) = fit_head(&data, opts)?;
        tensors.extend(weights);
        specs.insert(
            name.to_string(),
            HeadSpec {
                labels,
                hidden: opts.hidden,
                temperature: report.temperature,
            },
        );
        reports.insert(name.to_string(), report);
    }
    let report = TrainReport {
        encoder: encoder.model_id().to_string(),
        options: opts.clone(),
        heads: reports,
        seconds_embedding,
        seconds_training: t1.elapsed().as_secs_f64(),
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    candle_core::safetensors::save(&tensors, out.join(HEADS_WEIGHTS))?;
    let meta = HeadsMeta {
        format: "triage-heads/1".to_string(),
        encoder: encoder.model_id().to_string(),
        input_scale: opts.input_scale,
        heads: specs,
        training: serde_json::to_value(&report)?,
    };
    std::fs::write(out.join(HEADS_META), serde_json::to_string_pretty(&meta)?)?;
    Ok(report)
}

fn embed_all(encoder: &Encoder, rows: &[Labeled], batch: usize) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(rows.len());
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    for (i, chunk) in texts.chunks(256).enumerate() {
        out.extend(encoder.embed(chunk, batch)?);
        eprint!(
            "\r  {}/{}",
            (i * 256 + chunk.len()).min(texts.len()),
            texts.len()
        );
    }
    eprintln!();
    Ok(out)
}

fn init_var(
    rng: &mut StdRng,
    shape: (usize, usize),
    fan_in: usize,
    device: &Device,
) -> Result<Var> {
    let bound = (1.0 / fan_in as f32).sqrt();
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| rng.gen_range(-bound..bound))
        .collect();
    Ok(Var::from_tensor(&Tensor::from_vec(v, shape, device)?)?)
}

struct Params {
    hidden: Option<(Var, Var)>,
    out: (Var, Var),
}

impl Params {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = match &self.hidden {
            Some((w, b)) => xs.matmul(&w.t()?)?.broadcast_add(b)?.gelu_erf()?,
            None => xs.clone(),
        };
        Ok(xs.matmul(&self.out.0.t()?)?.broadcast_add(&self.out.1)?)
    }
    fn vars(&self) -> Vec<Var> {
        let mut v = vec![self.out.0.clone(), self.out.1.clone()];
        if let Some((w, b)) = &self.hidden {
            v.push(w.clone());
            v.push(b.clone());
        }
        v
    }
    fn snapshot(&self, name: &str) -> Result<HashMap<String, Tensor>> {
        let mut m = HashMap::new();
        m.insert(format!("{name}.out.weight"), self.out.0.as_tensor().copy()?);
        m.insert(format!("{name}.out.bias"), self.out.1.as_tensor().copy()?);
        if let Some((w, b)) = &self.hidden {
            m.insert(format!("{name}.hidden.weight"), w.as_tensor().copy()?);
            m.insert(format!("{name}.hidden.bias"), b.as_tensor().copy()?);
        }
        Ok(m)
    }
}

fn accuracy(logits: &Tensor, gold: &[u32]) -> Result<f64> {
    let pred = logits.argmax(1)?.to_vec1::<u32>()?;
    let ok = pred.iter().zip(gold).filter(|(p, g)| p == g).count();
    Ok(ok as f64 / gold.len().max(1) as f64)
}

fn fit_head(d: &HeadData, opts: &TrainOptions) -> Result<(HashMap<String, Tensor>, HeadReport)> {
    let device = d.train_x.device().clone();
    let dim = d.train_x.dim(1)?;
    let n_labels = d.labels.len();
    let mut rng = StdRng::seed_from_u64(opts.seed ^ fxhash(d.name));
    let hidden = if opts.hidden > 0 {
        Some((
            init_var(&mut rng, (opts.hidden, dim), dim, &device)?,
            Var::from_tensor(&Tensor::zeros(opts.hidden, DType::F32, &device)?)?,
        ))
    } else {
        None
    };
    let out_in = if opts.hidden > 0 { opts.hidden } else { dim };
    let params = Params {
        hidden,
        out: (
            init_var(&mut rng, (n_labels, out_in), out_in, &device)?,
            Var::from_tensor(&Tensor::zeros(n_labels, DType::F32, &device)?)?,
        ),
    };
    let mut opt = candle_nn::AdamW::new(
        params.vars(),
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            ..Default::default()
        },
    )?;
    let n = d.train_y.len();
    let train_y = Tensor::from_vec(d.train_y.clone(), n, &device)?;
    let mut order: Vec<usize> = (0..n).collect();
    let mut best = (0usize, -1.0f64, params.snapshot(d.name)?);
    for epoch in 1..=opts.epochs {
        order.shuffle(&mut rng);
        let mut loss_sum = 0f64;
        let mut batches = 0usize;
        for chunk in order.chunks(opts.batch_size.max(1)) {
            let idx = Tensor::from_vec(
                chunk.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                chunk.len(),
                &device,
            )?;
            let xs = d.train_x.index_select(&idx, 0)?;
            let ys = train_y.index_select(&idx, 0)?;
            let loss = candle_nn::loss::cross_entropy(&params.forward(&xs)?, &ys)?;
            opt.backward_step(&loss)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            batches += 1;
        }
        let dev_acc = if d.dev_y.is_empty() {
            accuracy(&params.forward(&d.train_x)?, &d.train_y)?
        } else {
            accuracy(&params.forward(&d.dev_x)?, &d.dev_y)?
        };
        if dev_acc > best.1 {
            best = (epoch, dev_acc, params.snapshot(d.name)?);
        }
        if epoch == 1 || epoch % 5 == 0 || epoch == opts.epochs {
            eprintln!(
                "  {:<8} epoch {epoch:>3}/{} loss={:.4} dev_acc={:.1}%",
                d.name,
                opts.epochs,
                loss_sum / batches.max(1) as f64,
                100.0 * dev_acc
            );
        }
    }
    // Calibrate the best snapshot on dev.
    let (best_epoch, dev_accuracy, weights) = best;
    let snap = Params {
        hidden: match (
            weights.get(&format!("{}.hidden.weight", d.name)),
            weights.get(&format!("{}.hidden.bias", d.name)),
        ) {
            (Some(w), Some(b)) => Some((Var::from_tensor(w)?, Var::from_tensor(b)?)),
            _ => None,
        },
        out: (
            Var::from_tensor(&weights[&format!("{}.out.weight", d.name)])?,
            Var::from_tensor(&weights[&format!("{}.out.bias", d.name)])?,
        ),
    };
    let (temperature, ece_before, ece_after) = if d.dev_y.is_empty() {
        (1.0, 0.0, 0.0)
    } else {
        let logits = snap.forward(&d.dev_x)?.to_vec2::<f32>()?;
        let gold: Vec<usize> = d.dev_y.iter().map(|&y| y as usize).collect();
        let t = fit_temperature(&logits, &gold);
        let ece = |t: f32| {
            let (conf, ok): (Vec<f32>, Vec<bool>) = logits
                .iter()
                .zip(&gold)
                .map(|(row, &g)| {
                    let p = softmax(row, t);
                    let (arg, &c) = p
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .unwrap_or((0, &0.0));
                    (c, arg == g)
                })
                .unzip();
            expected_calibration_error(&conf, &ok, 15)
        };
        (t, ece(1.0), ece(t))
    };
    eprintln!(
        "  {:<8} best epoch {best_epoch}, dev accuracy {:.1}%, temperature {temperature:.3}, dev ECE {ece_before:.3} -> {ece_after:.3}",
        d.name,
        100.0 * dev_accuracy
    );
    Ok((
        weights,
        HeadReport {
            labels: n_labels,
            train_rows: n,
            dev_rows: d.dev_y.len(),
            best_epoch,
            dev_accuracy,
            temperature,
            dev_ece_before: ece_before,
            dev_ece_after: ece_after,
        },
    ))
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}
