//! Joint training of the intent and emotion heads and LoRA adapters on the top encoder
//! layers. The frozen lower layers run once per message (their outputs are cached), the
//! adapted top layers and the heads train together with one loss (intent + emotion
//! cross-entropy), with a fixed seed, length-bucketed batches (little padding) and a
//! warm-up + cosine learning-rate schedule. The epoch with the best dev score is kept, then
//! each head is temperature-scaled on dev. `top_layers = 0` trains heads on the frozen encoder.

use super::calibrate::{fit_temperature, softmax};
use super::contrastive::{RetrievalData, RetrievalTask};
use crate::dataset::Labeled;
use crate::eval::expected_calibration_error;
use crate::model::bert::{
    load_tensors, mask_bias, Bert, Dropout, LayerAdapters, LoraPair, LINEARS,
};
use crate::model::encoder::{length_sorted_batches, mean_pool_normalize};
use crate::model::heads::{AdapterSpec, HeadSpec, HeadsMeta, HEADS_META, HEADS_WEIGHTS};
use crate::model::lora::ADAPTERS_FILE;
use crate::model::{Encoder, Tokenized};
use crate::taxonomy;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Knobs of `triage train`.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOptions {
    pub epochs: usize,
    /// Learning rate of the heads.
    pub lr: f64,
    /// Learning rate of the LoRA adapters.
    pub lr_adapters: f64,
    pub weight_decay: f64,
    /// How many top encoder layers get LoRA adapters (0 = frozen encoder).
    pub top_layers: usize,
    pub rank: usize,
    pub alpha: f64,
    pub batch_size: usize,
    pub seed: u64,
    /// Scale of the normalised embedding fed to the heads.
    pub input_scale: f32,
    /// Encoder batch size for the frozen pass.
    pub embed_batch: usize,
    /// Weight of the retrieval (contrastive) loss next to the heads' losses.
    pub retrieval_weight: f64,
    /// Pairs per retrieval step.
    pub retrieval_batch: usize,
    /// InfoNCE temperature of the retrieval loss.
    pub retrieval_temperature: f64,
    /// Learning-rate schedule over all steps: warm up linearly over the first
    /// `warmup_fraction`, then follow a cosine down to `final_lr_fraction` of the peak
    /// (`final_lr_fraction = 1` and no warm-up give a constant rate).
    pub warmup_fraction: f64,
    pub final_lr_fraction: f64,
    /// Batches per length bucket: each epoch's shuffled messages are cut into groups of
    /// `batch_size * length_buckets`, sorted by length within a group and split into
    /// batches, whose order is then shuffled, so a batch pads to lengths close to its
    /// own (0 = plain random batches).
    pub length_buckets: usize,
    /// BERT's dropout (attention probabilities and sub-layer outputs) in the adapted
    /// layers while training, from its own generator seeded by `seed` (0 = off).
    pub dropout: f32,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            epochs: 6,
            lr: 3e-3,
            lr_adapters: 1e-3,
            weight_decay: 1e-3,
            top_layers: 6,
            rank: 8,
            alpha: 16.0,
            batch_size: 32,
            seed: 42,
            input_scale: 20.0,
            embed_batch: 32,
            retrieval_weight: 1.0,
            retrieval_batch: 32,
            retrieval_temperature: 0.05,
            warmup_fraction: 0.05,
            final_lr_fraction: 0.1,
            length_buckets: 20,
            dropout: 0.0,
        }
    }
}

impl TrainOptions {
    /// Why these options cannot train, if they cannot (checked by [`train`] before any
    /// work, and by the CLI so a bad flag is an input error).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let mut problems = Vec::new();
        if self.epochs == 0 {
            problems.push("epochs must be at least 1".to_string());
        }
        if self.batch_size == 0 || self.embed_batch == 0 || self.retrieval_batch == 0 {
            problems.push("batch sizes must be at least 1".to_string());
        }
        for (name, v) in [("lr", self.lr), ("lr-adapters", self.lr_adapters)] {
            if !(v.is_finite() && v > 0.0) {
                problems.push(format!("{name} must be a positive number (got {v})"));
            }
        }
        if self.top_layers > 0 && self.rank == 0 {
            problems.push("rank must be at least 1 when layers are adapted".to_string());
        }
        if !(0.0..1.0).contains(&self.warmup_fraction) {
            problems.push(format!(
                "warmup-fraction must be in [0, 1) (got {})",
                self.warmup_fraction
            ));
        }
        if !(0.0..=1.0).contains(&self.final_lr_fraction) {
            problems.push(format!(
                "final-lr-fraction must be in [0, 1] (got {})",
                self.final_lr_fraction
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            problems.push(format!("dropout must be in [0, 1) (got {})", self.dropout));
        }
        if !(self.retrieval_weight.is_finite() && self.retrieval_weight >= 0.0) {
            problems.push(format!(
                "retrieval-weight must be 0 or more (got {})",
                self.retrieval_weight
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// What one head's training achieved.
#[derive(Debug, Clone, Serialize)]
pub struct HeadReport {
    pub labels: usize,
    pub best_epoch: usize,
    pub dev_accuracy: f64,
    pub temperature: f32,
    pub dev_ece_before: f64,
    pub dev_ece_after: f64,
}

/// The training report written into `heads.json`.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub encoder: String,
    pub options: TrainOptions,
    pub train_rows: usize,
    pub dev_rows: usize,
    pub heads: BTreeMap<String, HeadReport>,
    pub epochs: Vec<EpochLog>,
    pub seconds_frozen_pass: f64,
    pub seconds_training: f64,
}

/// One epoch's figures.
#[derive(Debug, Clone, Serialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f64,
    pub dev_intent_accuracy: f64,
    pub dev_emotion_accuracy: f64,
    /// Top-1 of the retrieval objective's held-out pairs (when trained with it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_retrieval_top1: Option<f64>,
    /// The retrieval objective's learnt "no entry" cosine floor (when trained with
    /// unanswered messages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieval_null_floor: Option<f64>,
    pub seconds: f64,
}

struct Task {
    name: &'static str,
    labels: Vec<String>,
    train_y: Vec<Option<u32>>,
    dev_y: Vec<Option<u32>>,
    w: Var,
    b: Var,
}

pub(super) struct Cached {
    /// Per message `[len, hidden]` output of the frozen layers.
    states: Vec<Tensor>,
}

/// Train and write `heads.safetensors`, `heads.json` and (with `top_layers > 0`)
/// `adapters.safetensors` into `out`. With `retrieval` data the adapters also learn the
/// retrieval objective ([`super::contrastive`]).
pub fn train(
    encoder_dir: &Path,
    train: &[Labeled],
    dev: &[Labeled],
    retrieval: Option<&RetrievalData>,
    opts: &TrainOptions,
    out: &Path,
) -> Result<TrainReport> {
    if train.is_empty() {
        bail!("no training rows");
    }
    if let Err(problem) = opts.validate() {
        bail!("training options: {problem}");
    }
    let device = Device::Cpu;
    let encoder = Encoder::load(encoder_dir, &device)?;
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(encoder_dir.join("config.json"))?)?;
    let n_layers = cfg["num_hidden_layers"]
        .as_u64()
        .context("config: num_hidden_layers")? as usize;
    let n_heads = cfg["num_attention_heads"]
        .as_u64()
        .context("config: num_attention_heads")? as usize;
    let eps = cfg["layer_norm_eps"].as_f64().unwrap_or(1e-12);
    anyhow::ensure!(
        opts.top_layers <= n_layers,
        "--top-layers {} > {n_layers} layers",
        opts.top_layers
    );
    let bert = Bert::from_tensors(&load_tensors(encoder_dir, &device)?, n_heads, n_layers, eps)?;
    let lower = n_layers - opts.top_layers;
    let hidden = encoder.hidden_size();

    let t0 = std::time::Instant::now();
    eprintln!(
        "frozen pass (layers 0..{lower}) over {} training and {} dev messages...",
        train.len(),
        dev.len()
    );
    let train_cache = frozen_pass(&encoder, &bert, &texts_of(train), lower, opts.embed_batch)?;
    let dev_cache = frozen_pass(&encoder, &bert, &texts_of(dev), lower, opts.embed_batch)?;
    let mut retrieval = match retrieval {
        Some(data) if opts.top_layers > 0 && opts.retrieval_weight > 0.0 => {
            Some(RetrievalTask::new(
                data,
                &encoder,
                &bert,
                lower,
                opts.embed_batch,
                opts.retrieval_batch,
                opts.retrieval_temperature,
            )?)
        }
        _ => None,
    };
    let seconds_frozen_pass = t0.elapsed().as_secs_f64();

    let mut rng = StdRng::seed_from_u64(opts.seed);
    type LabelOf = fn(&Labeled) -> Option<&str>;
    let specs: [(&'static str, LabelOf, &[&str]); 2] = [
        ("intent", |r| r.intent.as_deref(), &taxonomy::INTENTS),
        ("emotion", |r| r.emotion.as_deref(), &taxonomy::EMOTIONS),
    ];
    let mut tasks = Vec::new();
    for (name, label_of, tax) in specs {
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
        let ys = |rows: &[Labeled]| {
            rows.iter()
                .map(|r| label_of(r).and_then(|l| index.get(l).copied()))
                .collect::<Vec<_>>()
        };
        let (train_y, dev_y) = (ys(train), ys(dev));
        tasks.push(Task {
            name,
            w: rand_var(&mut rng, (labels.len(), hidden), hidden)?,
            b: Var::from_tensor(&Tensor::zeros(labels.len(), DType::F32, &device)?)?,
            labels,
            train_y,
            dev_y,
        });
    }
    if tasks.is_empty() {
        bail!("no head to train");
    }
    // LoRA: A random, B zero, so training starts from the base model.
    let mut lora: BTreeMap<(usize, usize), (Var, Var)> = BTreeMap::new();
    for layer in lower..n_layers {
        for (j, lin) in bert.layers[layer].lin.iter().enumerate() {
            let (out_dim, in_dim) = lin.w.dims2()?;
            let a = rand_var(&mut rng, (opts.rank, in_dim), in_dim)?;
            let b = Var::from_tensor(&Tensor::zeros((out_dim, opts.rank), DType::F32, &device)?)?;
            lora.insert((layer, j), (a, b));
        }
    }
    let scale = opts.alpha / opts.rank.max(1) as f64;
    let mut head_vars: Vec<Var> = tasks
        .iter()
        .flat_map(|t| [t.w.clone(), t.b.clone()])
        .collect();
    if let Some(floor) = retrieval.as_ref().and_then(|r| r.null_floor()) {
        head_vars.push(floor.clone());
    }
    let lora_vars: Vec<Var> = lora
        .values()
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    let mut opt_heads = candle_nn::AdamW::new(
        head_vars,
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            ..Default::default()
        },
    )?;
    let mut opt_lora = if lora_vars.is_empty() {
        None
    } else {
        Some(candle_nn::AdamW::new(
            lora_vars,
            ParamsAdamW {
                lr: opts.lr_adapters,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?)
    };

    let ctx = Ctx {
        bert: &bert,
        lower,
        n_layers,
        scale,
        input_scale: opts.input_scale as f64,
        dropout: RefCell::new(Dropout::new(opts.dropout, opts.seed.wrapping_add(1))),
    };
    let t1 = std::time::Instant::now();
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut logs = Vec::new();
    type Snapshot = (HashMap<String, Tensor>, HashMap<String, Tensor>);
    let mut best: Option<(f64, usize, Snapshot)> = None;
    let lens: Vec<usize> = train_cache
        .states
        .iter()
        .map(|s| s.dim(0).unwrap_or(0))
        .collect();
    let batch_size = opts.batch_size.max(1);
    let total_steps = order.len().div_ceil(batch_size) * opts.epochs;
    let mut step = 0usize;
    for epoch in 1..=opts.epochs {
        let te = std::time::Instant::now();
        order.shuffle(&mut rng);
        let epoch_batches =
            bucketed_batches(&order, &lens, batch_size, opts.length_buckets, &mut rng);
        let (mut loss_sum, mut batches) = (0f64, 0usize);
        let total_batches = epoch_batches.len();
        let retrieval_steps = retrieval.as_ref().map_or(0, |r| r.steps_per_epoch());
        for chunk in &epoch_batches {
            let f = lr_factor(
                step,
                total_steps,
                opts.warmup_fraction,
                opts.final_lr_fraction,
            );
            opt_heads.set_learning_rate(opts.lr * f);
            if let Some(o) = opt_lora.as_mut() {
                o.set_learning_rate(opts.lr_adapters * f);
            }
            step += 1;
            if batches % 10 == 0 {
                eprint!(
                    "\repoch {epoch:>2}/{} batch {batches}/{total_batches} loss={:.4}   ",
                    opts.epochs,
                    loss_sum / batches.max(1) as f64
                );
            }
            let (x, mask) = pad_batch(&train_cache, chunk)?;
            let adapters = adapters_of(&lora, scale, false);
            let pooled = ctx.pooled(x, &mask, Some(&adapters))?;
            let mut loss: Option<Tensor> = None;
            for t in &tasks {
                let (rows, ys): (Vec<u32>, Vec<u32>) = chunk
                    .iter()
                    .enumerate()
                    .filter_map(|(k, &i)| t.train_y[i].map(|y| (k as u32, y)))
                    .unzip();
                if rows.is_empty() {
                    continue;
                }
                let sel = pooled.index_select(&Tensor::new(rows.as_slice(), &device)?, 0)?;
                let logits = sel.matmul(&t.w.t()?)?.broadcast_add(&t.b)?;
                let l =
                    candle_nn::loss::cross_entropy(&logits, &Tensor::new(ys.as_slice(), &device)?)?;
                loss = Some(match loss {
                    Some(acc) => (acc + l)?,
                    None => l,
                });
            }
            // Retrieval steps spread evenly over the epoch's classification batches.
            if let Some(r) = retrieval.as_mut() {
                if (batches + 1) * retrieval_steps / total_batches
                    > batches * retrieval_steps / total_batches
                {
                    let l = (r.loss(&ctx, &adapters, &mut rng)? * opts.retrieval_weight)?;
                    loss = Some(match loss {
                        Some(acc) => (acc + l)?,
                        None => l,
                    });
                }
            }
            let Some(loss) = loss else { continue };
            let grads = loss.backward()?;
            opt_heads.step(&grads)?;
            if let Some(o) = opt_lora.as_mut() {
                o.step(&grads)?;
            }
            loss_sum += loss.to_scalar::<f32>()? as f64;
            batches += 1;
        }
        let dev_logits = ctx.logits(&dev_cache, &tasks, &lora)?;
        let acc: Vec<f64> = tasks
            .iter()
            .zip(&dev_logits)
            .map(|(t, l)| accuracy(l, &t.dev_y))
            .collect();
        let intent_acc = acc.first().copied().unwrap_or(0.0);
        let emotion_acc = acc.get(1).copied().unwrap_or(0.0);
        let retrieval_top1 = match &retrieval {
            Some(r) => Some(r.dev_top1(&ctx, &adapters_of(&lora, scale, true))?),
            None => None,
        };
        let null_floor = match retrieval.as_ref().and_then(|r| r.null_floor()) {
            Some(f) => Some(f.as_tensor().to_vec1::<f32>()?[0] as f64),
            None => None,
        };
        let log = EpochLog {
            epoch,
            retrieval_null_floor: null_floor,
            loss: loss_sum / batches.max(1) as f64,
            dev_intent_accuracy: intent_acc,
            dev_emotion_accuracy: emotion_acc,
            dev_retrieval_top1: retrieval_top1,
            seconds: te.elapsed().as_secs_f64(),
        };
        eprintln!(
            "\repoch {epoch:>2}/{} loss={:.4} dev intent={:.1}% emotion={:.1}%{}{} ({:.0}s)",
            opts.epochs,
            log.loss,
            100.0 * intent_acc,
            100.0 * emotion_acc,
            retrieval_top1
                .map(|t| format!(" retrieval top-1={:.1}%", 100.0 * t))
                .unwrap_or_default(),
            null_floor
                .map(|f| format!(" no-entry floor={f:.3}"))
                .unwrap_or_default(),
            log.seconds
        );
        logs.push(log);
        let score = acc.iter().sum::<f64>() + retrieval_top1.unwrap_or(0.0);
        if best.as_ref().is_none_or(|b| score > b.0) {
            best = Some((
                score,
                epoch,
                (snapshot_heads(&tasks)?, snapshot_lora(&lora)?),
            ));
        }
    }
    let (_, best_epoch, (head_t, lora_t)) = best.context("no epoch ran")?;
    // Restore the best snapshot, then calibrate on dev.
    for t in &tasks {
        t.w.set(&head_t[&format!("{}.out.weight", t.name)])?;
        t.b.set(&head_t[&format!("{}.out.bias", t.name)])?;
    }
    for ((layer, j), (a, b)) in &lora {
        a.set(&lora_t[&lora_name(*layer, *j, "a")])?;
        b.set(&lora_t[&lora_name(*layer, *j, "b")])?;
    }
    let dev_logits = ctx.logits(&dev_cache, &tasks, &lora)?;
    let mut head_specs = BTreeMap::new();
    let mut reports = BTreeMap::new();
    for (t, logits) in tasks.iter().zip(&dev_logits) {
        let (l, g): (Vec<Vec<f32>>, Vec<usize>) = logits
            .iter()
            .zip(&t.dev_y)
            .filter_map(|(row, y)| y.map(|y| (row.clone(), y as usize)))
            .unzip();
        let temperature = if g.is_empty() {
            1.0
        } else {
            fit_temperature(&l, &g)
        };
        let ece = |temp: f32| {
            let (conf, ok): (Vec<f32>, Vec<bool>) = l
                .iter()
                .zip(&g)
                .map(|(row, &gold)| {
                    let p = softmax(row, temp);
                    let (arg, c) = argmax(&p);
                    (c, arg == gold)
                })
                .unzip();
            expected_calibration_error(&conf, &ok, 15)
        };
        let report = HeadReport {
            labels: t.labels.len(),
            best_epoch,
            dev_accuracy: accuracy(logits, &t.dev_y),
            temperature,
            dev_ece_before: ece(1.0),
            dev_ece_after: ece(temperature),
        };
        eprintln!(
            "{:<8} best epoch {best_epoch}: dev accuracy {:.1}%, temperature {:.3}, dev ECE {:.3} -> {:.3}",
            t.name,
            100.0 * report.dev_accuracy,
            temperature,
            report.dev_ece_before,
            report.dev_ece_after
        );
        head_specs.insert(
            t.name.to_string(),
            HeadSpec {
                labels: t.labels.clone(),
                temperature,
            },
        );
        reports.insert(t.name.to_string(), report);
    }
    let report = TrainReport {
        encoder: encoder.model_id().to_string(),
        options: opts.clone(),
        train_rows: train.len(),
        dev_rows: dev.len(),
        heads: reports,
        epochs: logs,
        seconds_frozen_pass,
        seconds_training: t1.elapsed().as_secs_f64(),
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    candle_core::safetensors::save(&head_t, out.join(HEADS_WEIGHTS))?;
    let adapters = if lora.is_empty() {
        let _ = std::fs::remove_file(out.join(ADAPTERS_FILE));
        None
    } else {
        candle_core::safetensors::save(&lora_t, out.join(ADAPTERS_FILE))?;
        Some(AdapterSpec {
            rank: opts.rank,
            alpha: opts.alpha,
            layers: (lower..n_layers).collect(),
        })
    };
    let meta = HeadsMeta {
        format: "triage-heads/1".to_string(),
        encoder: encoder.model_id().to_string(),
        input_scale: opts.input_scale,
        heads: head_specs,
        adapters,
        retrieval: None,
        training: serde_json::to_value(&report)?,
    };
    std::fs::write(out.join(HEADS_META), serde_json::to_string_pretty(&meta)?)?;
    Ok(report)
}

pub(super) struct Ctx<'a> {
    bert: &'a Bert,
    lower: usize,
    n_layers: usize,
    scale: f64,
    input_scale: f64,
    /// Dropout of the training forward ([`Ctx::embedded`], identity at 0); evaluation
    /// runs without.
    dropout: RefCell<Dropout>,
}

impl Ctx<'_> {
    /// Top layers + mean pooling + normalisation: the retrieval vector, in training mode
    /// (with the configured dropout).
    pub(super) fn embedded(
        &self,
        x: Tensor,
        mask: &Tensor,
        adapters: Option<&LayerAdapters>,
    ) -> Result<Tensor> {
        self.forward(x, mask, adapters, Some(&mut self.dropout.borrow_mut()))
    }

    fn forward(
        &self,
        x: Tensor,
        mask: &Tensor,
        adapters: Option<&LayerAdapters>,
        dropout: Option<&mut Dropout>,
    ) -> Result<Tensor> {
        let h = self.bert.layers_with_dropout(
            x,
            &mask_bias(mask)?,
            self.lower,
            self.n_layers,
            adapters,
            dropout,
        )?;
        mean_pool_normalize(&h, mask)
    }

    /// The retrieval vector scaled for the heads.
    fn pooled(&self, x: Tensor, mask: &Tensor, adapters: Option<&LayerAdapters>) -> Result<Tensor> {
        Ok((self.embedded(x, mask, adapters)? * self.input_scale)?)
    }

    /// Retrieval vectors `[n, hidden]` of every cached message, in cache order, without a
    /// gradient graph (pass detached adapters).
    pub(super) fn embed_cache(&self, cache: &Cached, adapters: &LayerAdapters) -> Result<Tensor> {
        let lens: Vec<usize> = cache.states.iter().map(|s| s.dim(0).unwrap_or(0)).collect();
        let mut order: Vec<usize> = (0..lens.len()).collect();
        order.sort_by_key(|&i| lens[i]);
        let mut parts = Vec::new();
        for chunk in order.chunks(64) {
            let (x, mask) = pad_batch(cache, chunk)?;
            parts.push(self.forward(x, &mask, Some(adapters), None)?.detach());
        }
        let sorted = Tensor::cat(&parts, 0)?;
        // Row k of `sorted` is message order[k]: invert the permutation.
        let mut inverse = vec![0u32; order.len()];
        for (k, &i) in order.iter().enumerate() {
            inverse[i] = k as u32;
        }
        Ok(sorted.index_select(&Tensor::new(inverse.as_slice(), &Device::Cpu)?, 0)?)
    }

    /// Dev logits per task, without building a gradient graph.
    fn logits(
        &self,
        cache: &Cached,
        tasks: &[Task],
        lora: &BTreeMap<(usize, usize), (Var, Var)>,
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        let pooled =
            (self.embed_cache(cache, &adapters_of(lora, self.scale, true))? * self.input_scale)?;
        tasks
            .iter()
            .map(|t| {
                Ok(pooled
                    .matmul(&t.w.as_tensor().detach().t()?)?
                    .broadcast_add(&t.b.as_tensor().detach())?
                    .to_vec2::<f32>()?)
            })
            .collect()
    }
}

fn texts_of(rows: &[Labeled]) -> Vec<&str> {
    rows.iter().map(|r| r.text.as_str()).collect()
}

/// Run the frozen lower layers once over `texts` and keep each message's states.
pub(super) fn frozen_pass(
    encoder: &Encoder,
    bert: &Bert,
    texts: &[&str],
    lower: usize,
    batch: usize,
) -> Result<Cached> {
    let tokens = encoder.tokenize(texts)?;
    let mut states = vec![None; texts.len()];
    let mut done = 0;
    for b in length_sorted_batches(&tokens, batch) {
        let refs: Vec<&Tokenized> = b.iter().map(|&i| &tokens[i]).collect();
        let (ids, mask) = encoder.pad(&refs)?;
        let h = bert.layers(bert.embed(&ids)?, &mask_bias(&mask)?, 0, lower, None)?;
        for (k, &i) in b.iter().enumerate() {
            states[i] = Some(h.get(k)?.narrow(0, 0, tokens[i].ids.len())?.contiguous()?);
        }
        done += b.len();
        eprint!("\r  {done}/{}", texts.len());
    }
    eprintln!();
    Ok(Cached {
        states: states
            .into_iter()
            .map(|s| s.context("missing state"))
            .collect::<Result<_>>()?,
    })
}

pub(super) fn pad_batch(cache: &Cached, idx: &[usize]) -> Result<(Tensor, Tensor)> {
    let len = idx
        .iter()
        .map(|&i| cache.states[i].dim(0).unwrap_or(0))
        .max()
        .unwrap_or(1);
    let device = Device::Cpu;
    let mut xs = Vec::with_capacity(idx.len());
    let mut mask = Vec::with_capacity(idx.len() * len);
    for &i in idx {
        let s = &cache.states[i];
        let (l, h) = s.dims2()?;
        xs.push(if l < len {
            Tensor::cat(&[s, &Tensor::zeros((len - l, h), DType::F32, &device)?], 0)?
        } else {
            s.clone()
        });
        mask.extend(std::iter::repeat_n(1f32, l));
        mask.extend(std::iter::repeat_n(0f32, len - l));
    }
    Ok((
        Tensor::stack(&xs, 0)?,
        Tensor::from_vec(mask, (idx.len(), len), &device)?,
    ))
}

/// The epoch's batches: `order` cut into groups of `batch * buckets` messages, each group
/// sorted by length and split into batches, the batches shuffled. `buckets = 0` keeps
/// `order`'s plain chunks.
fn bucketed_batches(
    order: &[usize],
    lens: &[usize],
    batch: usize,
    buckets: usize,
    rng: &mut StdRng,
) -> Vec<Vec<usize>> {
    if buckets == 0 {
        return order.chunks(batch).map(<[usize]>::to_vec).collect();
    }
    let mut out = Vec::with_capacity(order.len().div_ceil(batch));
    for group in order.chunks(batch * buckets) {
        let mut g = group.to_vec();
        g.sort_by_key(|&i| lens[i]);
        out.extend(g.chunks(batch).map(<[usize]>::to_vec));
    }
    out.shuffle(rng);
    out
}

/// Multiplier of the peak learning rate at `step` of `total`: linear warm-up, then a
/// cosine from 1 down to `floor`.
fn lr_factor(step: usize, total: usize, warmup: f64, floor: f64) -> f64 {
    let warm = (warmup * total as f64).round() as usize;
    if step < warm {
        return (step + 1) as f64 / warm as f64;
    }
    let span = total.saturating_sub(warm).max(1) as f64;
    let t = ((step - warm) as f64 / span).min(1.0);
    floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

fn adapters_of(
    lora: &BTreeMap<(usize, usize), (Var, Var)>,
    scale: f64,
    detach: bool,
) -> LayerAdapters {
    let mut out: LayerAdapters = HashMap::new();
    for ((layer, j), (a, b)) in lora {
        let (a, b) = if detach {
            (a.as_tensor().detach(), b.as_tensor().detach())
        } else {
            (a.as_tensor().clone(), b.as_tensor().clone())
        };
        let entry = out
            .entry(*layer)
            .or_insert_with(|| [None, None, None, None, None, None]);
        entry[*j] = Some(LoraPair { a, b, scale });
    }
    out
}

fn lora_name(layer: usize, j: usize, which: &str) -> String {
    format!("encoder.layer.{layer}.{}.lora_{which}", LINEARS[j])
}

fn snapshot_lora(lora: &BTreeMap<(usize, usize), (Var, Var)>) -> Result<HashMap<String, Tensor>> {
    let mut m = HashMap::new();
    for ((layer, j), (a, b)) in lora {
        m.insert(lora_name(*layer, *j, "a"), a.as_tensor().copy()?);
        m.insert(lora_name(*layer, *j, "b"), b.as_tensor().copy()?);
    }
    Ok(m)
}

fn snapshot_heads(tasks: &[Task]) -> Result<HashMap<String, Tensor>> {
    let mut m = HashMap::new();
    for t in tasks {
        m.insert(format!("{}.out.weight", t.name), t.w.as_tensor().copy()?);
        m.insert(format!("{}.out.bias", t.name), t.b.as_tensor().copy()?);
    }
    Ok(m)
}

fn rand_var(rng: &mut StdRng, shape: (usize, usize), fan_in: usize) -> Result<Var> {
    let bound = (1.0 / fan_in as f32).sqrt();
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| rng.gen_range(-bound..bound))
        .collect();
    Ok(Var::from_tensor(&Tensor::from_vec(
        v,
        shape,
        &Device::Cpu,
    )?)?)
}

fn argmax(p: &[f32]) -> (usize, f32) {
    p.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
}

fn accuracy(logits: &[Vec<f32>], gold: &[Option<u32>]) -> f64 {
    let (ok, n) = logits
        .iter()
        .zip(gold)
        .fold((0usize, 0usize), |(ok, n), (row, g)| match g {
            Some(g) => (ok + usize::from(argmax(row).0 == *g as usize), n + 1),
            None => (ok, n),
        });
    ok as f64 / n.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_that_cannot_train_are_named() {
        assert_eq!(TrainOptions::default().validate(), Ok(()));
        let bad = TrainOptions {
            epochs: 0,
            warmup_fraction: 1.0,
            lr: f64::NAN,
            dropout: 1.0,
            ..TrainOptions::default()
        };
        let problem = bad.validate().expect_err("four problems");
        for name in ["epochs", "warmup-fraction", "lr must", "dropout"] {
            assert!(problem.contains(name), "{problem}");
        }
        let frozen = TrainOptions {
            top_layers: 0,
            rank: 0,
            ..TrainOptions::default()
        };
        assert_eq!(frozen.validate(), Ok(()));
    }

    #[test]
    fn bucketed_batches_cover_every_message_once_with_close_lengths() {
        let lens: Vec<usize> = (0..200).map(|i| (i * 37) % 50 + 1).collect();
        let mut rng = StdRng::seed_from_u64(7);
        let mut order: Vec<usize> = (0..lens.len()).collect();
        order.shuffle(&mut rng);
        let batches = bucketed_batches(&order, &lens, 8, 25, &mut rng);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..lens.len()).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| b.len() == 8));
        // One group of 200 sorted by length: each batch spans a narrow range.
        let padded: usize = batches
            .iter()
            .map(|b| b.iter().map(|&i| lens[i]).max().unwrap_or(0) * b.len())
            .sum();
        let real: usize = lens.iter().sum();
        assert!(padded < real * 11 / 10, "padded {padded} vs real {real}");
        let plain = bucketed_batches(&order, &lens, 8, 0, &mut rng);
        assert_eq!(plain[0], order[..8].to_vec());
    }

    #[test]
    fn lr_warms_up_then_decays_to_the_floor() {
        let total = 100;
        assert!((lr_factor(0, total, 0.05, 0.1) - 0.2).abs() < 1e-9);
        assert!((lr_factor(4, total, 0.05, 0.1) - 1.0).abs() < 1e-9);
        assert!((lr_factor(5, total, 0.05, 0.1) - 1.0).abs() < 1e-9);
        let mid = lr_factor(52, total, 0.05, 0.1);
        assert!(mid > 0.5 && mid < 0.6, "{mid}");
        assert!((lr_factor(100, total, 0.05, 0.1) - 0.1).abs() < 1e-9);
        let mut prev = f64::INFINITY;
        for s in 5..=100 {
            let f = lr_factor(s, total, 0.05, 0.1);
            assert!(f <= prev + 1e-12);
            prev = f;
        }
        // Constant schedule.
        assert!((lr_factor(50, total, 0.0, 1.0) - 1.0).abs() < 1e-9);
    }
}
