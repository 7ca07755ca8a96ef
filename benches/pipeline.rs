//! `cargo bench`: tokenizer, encoder forward at batch 1/8/32/128 (16-token messages, mean
//! pooling included) on each engine (candle reference, f32, bf16, int8), heads, FAQ retrieval at 1k/10k/100k entries, and the batcher's
//! queue + thread hand-off (on the tiny model, so the overhead dominates). Uses the default
//! model (provisioned on first run). Medians are what criterion prints as the middle value.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use triage::batch::{BatchConfig, Batcher, ModelSource};
use triage::model::{provision, tiny, EngineKind, Model, Tokenized};
use triage::retrieval::index::{ExactIndex, VectorIndex};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model(engine: EngineKind) -> Model {
    let cache = std::env::var_os("TRIAGE_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache/triage"));
    let dir = provision::ensure_default_model(&cache).expect("default model");
    Model::load_dirs_with(
        &dir,
        Some(&repo().join("models/default")),
        &Device::Cpu,
        engine,
    )
    .expect("model")
}

/// The encoder forwards to compare: `TRIAGE_BENCH_ENGINES` (comma separated, default
/// `candle,f32,bf16,int8`).
fn engines() -> Vec<(String, EngineKind)> {
    std::env::var("TRIAGE_BENCH_ENGINES")
        .unwrap_or_else(|_| "candle,f32,bf16,int8".into())
        .split(',')
        .map(|e| (e.to_string(), e.parse().expect("engine name")))
        .collect()
}

fn bench_model(c: &mut Criterion) {
    let model = model(EngineKind::Auto);
    let mut g = c.benchmark_group("tokenizer");
    let texts = [
        "hola, mi pedido #A1029 no ha llegado todavía 😡",
        "我張單幾時到呀？等咗好耐",
        "where is my order? it was supposed to arrive yesterday",
    ];
    g.throughput(Throughput::Elements(texts.len() as u64));
    g.bench_function("3 messages", |b| {
        b.iter(|| model.encoder.tokenize(&texts).unwrap())
    });
    g.finish();

    let msg = model
        .encoder
        .repeat_to_tokens("where is my order", 16)
        .unwrap();
    let mut g = c.benchmark_group("encoder_16_tokens");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for (name, engine) in engines() {
        let m = if engine == EngineKind::Auto {
            None
        } else {
            Some(self::model(engine))
        };
        let m = m.as_ref().unwrap_or(&model);
        for batch in [1usize, 8, 32, 128] {
            let rows: Vec<&Tokenized> = std::iter::repeat_n(&msg, batch).collect();
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_with_input(BenchmarkId::new(&name, batch), &rows, |b, rows| {
                b.iter(|| m.encoder.forward(rows).unwrap())
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("heads");
    let x = Tensor::randn(0f32, 0.05, (32, 384), &Device::Cpu).unwrap();
    g.throughput(Throughput::Elements(32));
    g.bench_function("intent+emotion batch 32", |b| {
        b.iter(|| {
            model.intent.probabilities(&x).unwrap();
            model.emotion.as_ref().map(|e| e.probabilities(&x).unwrap());
        })
    });
    g.finish();
}

fn unit_rows(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            let v: Vec<f32> = (0..dim)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
                })
                .collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect()
        })
        .collect()
}

fn bench_retrieval(c: &mut Criterion) {
    let mut g = c.benchmark_group("retrieval_exact_top3");
    let query = unit_rows(1, 384, 99).remove(0);
    for n in [1_000usize, 10_000, 100_000] {
        let index = ExactIndex::new(&unit_rows(n, 384, n as u64)).unwrap();
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::from_parameter(n), &index, |b, index| {
            b.iter(|| index.search(&query, 3))
        });
    }
    g.finish();
}

/// The full FAQ ranking of one query (question and answer indexes, intent prior, "no
/// answer"), on a knowledge base of `n` entries with two questions and two answers each.
fn bench_ranker(c: &mut Criterion) {
    use triage::model::Scored;
    use triage::retrieval::{kb::parse_kb, Ranker, RetrievalConfig, Retriever, TextKind};
    let mut g = c.benchmark_group("faq_rank");
    let query = unit_rows(1, 384, 7).remove(0);
    let intents: Vec<Scored> = triage::taxonomy::INTENTS
        .iter()
        .enumerate()
        .map(|(i, l)| Scored {
            label: l.to_string(),
            score: if i == 0 { 0.81 } else { 0.01 },
        })
        .collect();
    for n in [32usize, 1_000, 10_000] {
        let kb: String = (0..n)
            .map(|i| {
                let intent = triage::taxonomy::INTENTS[i % 20];
                format!(
                    "{{\"id\":\"e{i}\",\"intent\":\"{intent}\",\"question\":{{\"en\":[\"q{i}a\",\"q{i}b\"]}},\"answer\":{{\"en\":\"a{i}\",\"zh\":\"z{i}\"}}}}\n"
                )
            })
            .collect();
        let entries = parse_kb(&kb).unwrap();
        let fake = |texts: &[&str], kind: TextKind| {
            let seed = texts.len() as u64 + u64::from(kind == TextKind::Passage);
            Ok(unit_rows(texts.len(), 384, seed))
        };
        let ranker = Ranker {
            question: 10.0,
            answer: 5.0,
            intent: 0.7,
            null_bias: 12.0,
            null_unserved: 1.2,
            null_intents: Default::default(),
        };
        let r = Retriever::build(entries, fake, RetrievalConfig::default(), ranker).unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(n), &r, |b, r| {
            b.iter(|| r.rank(&query, &intents))
        });
    }
    g.finish();
}

struct TinySource(Arc<Model>);
impl ModelSource for TinySource {
    type State = Model;
    fn current(&self) -> Arc<Model> {
        self.0.clone()
    }
    fn model(state: &Model) -> &Model {
        state
    }
}

fn bench_batcher(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let enc = dir.path().join("enc");
    tiny::write_tiny_bert(&enc, 1).unwrap();
    let heads = dir.path().join("heads");
    let rows = vec![
        triage::dataset::Labeled {
            text: "hello".into(),
            lang: None,
            intent: Some("greeting".into()),
            emotion: None,
        },
        triage::dataset::Labeled {
            text: "where is my order".into(),
            lang: None,
            intent: Some("order_status".into()),
            emotion: None,
        },
    ];
    let opts = triage::train::TrainOptions {
        epochs: 1,
        top_layers: 0,
        ..Default::default()
    };
    triage::train::train(&enc, &rows, &rows, None, &opts, &heads).unwrap();
    let model = Arc::new(Model::load_dirs(&enc, Some(&heads), &Device::Cpu).unwrap());
    let direct = model.clone();
    let batcher = Batcher::start(
        Arc::new(TinySource(model)),
        BatchConfig {
            max_wait: Duration::from_micros(0),
            ..BatchConfig::default()
        },
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = vec!["where is my order".to_string()];
    let mut g = c.benchmark_group("batcher_tiny_model");
    g.bench_function("direct predict", |b| {
        b.iter(|| direct.predict(&["where is my order"], 1).unwrap())
    });
    g.bench_function("through the queue", |b| {
        b.iter(|| {
            let rx = batcher
                .submit(&text, Instant::now() + Duration::from_secs(5))
                .unwrap();
            rt.block_on(async {
                for r in rx {
                    r.await.unwrap().unwrap();
                }
            })
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_model,
    bench_retrieval,
    bench_ranker,
    bench_batcher
);
criterion_main!(benches);
