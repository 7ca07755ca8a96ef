//! Fast tests on the tiny random model: the E5S1 importer, our heads, and Hugging Face
//! sequence-classification checkpoints, all through the real loading code.

use candle_core::Device;
use triage::dataset::Labeled;
use triage::import::{hf_tensor_name, write_hf_dir, E5s1Model};
use triage::model::{tiny, Encoder, Model};
use triage::train::{train, TrainOptions};

fn row(text: &str, intent: &str, emotion: &str) -> Labeled {
    Labeled {
        text: text.into(),
        lang: Some("en".into()),
        intent: Some(intent.into()),
        emotion: Some(emotion.into()),
    }
}

#[test]
fn importer_converts_a_synthetic_e5s1_file_to_a_loadable_bert_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = tiny::tiny_e5s1(7);
    let model = E5s1Model::parse(bytes).unwrap();
    assert_eq!(model.header.hidden, tiny::HIDDEN as i32);
    assert_eq!(model.tensors.len(), 5 + 16 * tiny::LAYERS);
    let tok = tmp.path().join("tokenizer.json");
    tiny::tiny_tokenizer().unwrap().save(&tok, false).unwrap();
    let out = tmp.path().join("hf");
    write_hf_dir(&model, &tok, &out).unwrap();

    // Every tensor is stored under its HF name with exactly the dequantized values.
    let stored =
        candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    for t in &model.tensors {
        let name = hf_tensor_name(&t.name).unwrap();
        let got: Vec<f32> = stored[&name].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got, model.dequantize(t).unwrap(), "{name}");
    }
    // Q4 weights really went through quantization (values are multiples of the scale).
    let q = stored["encoder.layer.0.attention.self.query.weight"]
        .dims()
        .to_vec();
    assert_eq!(q, vec![tiny::HIDDEN, tiny::HIDDEN]);

    // candle's BertModel loads it and gives unit vectors.
    let enc = Encoder::load(&out, &Device::Cpu).unwrap();
    let v = enc.embed(&["where is my order", "hello"], 2).unwrap();
    assert_eq!(v.len(), 2);
    for e in &v {
        let norm: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    assert_ne!(v[0], v[1]);
}

#[test]
fn corrupt_e5s1_files_are_refused_with_a_reason() {
    let bytes = tiny::tiny_e5s1(1);
    let truncated = bytes[..bytes.len() / 2].to_vec();
    let err = E5s1Model::parse(truncated)
        .err()
        .expect("truncated file must fail");
    assert!(
        format!("{err:#}").contains("past the end") || format!("{err:#}").contains("truncated"),
        "{err:#}"
    );
}

#[test]
fn heads_train_save_load_and_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let enc_dir = tmp.path().join("enc");
    tiny::write_tiny_bert(&enc_dir, 3).unwrap();
    let rows = vec![
        row("where is my order", "order_status", "neutral"),
        row("where is my parcel", "order_status", "neutral"),
        row("i want a refund now !", "refund_status", "angry"),
        row("refund please !", "refund_status", "angry"),
        row("hello", "greeting", "satisfied"),
        row("hi", "greeting", "satisfied"),
    ];
    let opts = TrainOptions {
        epochs: 60,
        lr: 1e-2,
        top_layers: 1,
        embed_batch: 4,
        dropout: 0.1,
        ..TrainOptions::default()
    };
    let heads_dir = tmp.path().join("heads");
    let report = train(&enc_dir, &rows, &rows, None, &opts, &heads_dir).unwrap();
    assert!(report.heads["intent"].dev_accuracy >= 0.83, "{report:?}");

    let model = Model::load_dirs(&enc_dir, Some(&heads_dir), &Device::Cpu).unwrap();
    assert_eq!(
        model.intent.labels,
        vec!["order_status", "refund_status", "greeting"]
    );
    let preds = model
        .predict(&["where is my order", "hello", "refund please !"], 8)
        .unwrap();
    assert_eq!(preds[0].intents[0].label, "order_status");
    assert_eq!(preds[1].intents[0].label, "greeting");
    for p in &preds {
        let s: f32 = p.intents.iter().map(|x| x.score).sum();
        assert!((s - 1.0).abs() < 1e-4);
        let e = p.emotions.as_ref().unwrap();
        assert_eq!(e.len(), 3);
        assert!(p.intents.windows(2).all(|w| w[0].score >= w[1].score));
    }
}

#[test]
fn heads_that_do_not_match_the_encoder_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let enc_dir = tmp.path().join("enc");
    tiny::write_tiny_bert(&enc_dir, 3).unwrap();
    let heads_dir = tmp.path().join("heads");
    std::fs::create_dir_all(&heads_dir).unwrap();
    // heads.json says 3 labels, the weights have 2 rows.
    std::fs::write(
        heads_dir.join("heads.json"),
        r#"{"format":"triage-heads/1","encoder":"x","heads":{"intent":{"labels":["a","b","c"]}}}"#,
    )
    .unwrap();
    let mut t = std::collections::HashMap::new();
    t.insert(
        "intent.out.weight".to_string(),
        candle_core::Tensor::zeros((2, tiny::HIDDEN), candle_core::DType::F32, &Device::Cpu)
            .unwrap(),
    );
    t.insert(
        "intent.out.bias".to_string(),
        candle_core::Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&t, heads_dir.join("heads.safetensors")).unwrap();
    let err = Model::load_dirs(&enc_dir, Some(&heads_dir), &Device::Cpu)
        .err()
        .expect("must fail");
    assert!(format!("{err:#}").contains("do not match"), "{err:#}");
}

#[test]
fn a_hugging_face_sequence_classification_checkpoint_loads_and_classifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf-clf");
    let labels = ["billing", "shipping", "other"];
    tiny::write_tiny_classifier(&dir, 11, &labels).unwrap();
    let model = Model::load_dirs(&dir, None, &Device::Cpu).unwrap();
    assert_eq!(model.intent.labels, labels);
    assert!(model.emotion.is_none());
    // No e5 prefix for a classifier trained elsewhere.
    assert_eq!(model.encoder.prefix(), "");
    let preds = model
        .predict(&["where is my parcel", "card pay"], 4)
        .unwrap();
    for p in &preds {
        assert_eq!(p.intents.len(), 3);
        let s: f32 = p.intents.iter().map(|x| x.score).sum();
        assert!((s - 1.0).abs() < 1e-4);
    }
    // Different inputs, different distributions: the classifier really ran.
    assert_ne!(preds[0].intents, preds[1].intents);
}

#[test]
fn a_directory_without_heads_or_classifier_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    tiny::write_tiny_bert(tmp.path(), 1).unwrap();
    let err = Model::load_dirs(tmp.path(), None, &Device::Cpu)
        .err()
        .expect("must fail");
    assert!(format!("{err:#}").contains("no intent head"), "{err:#}");
}

#[test]
fn our_bert_forward_matches_candles_bert_model() {
    use triage::model::bert::{load_tensors, mask_bias, Bert};
    use triage::model::encoder::mean_pool_normalize;
    let tmp = tempfile::tempdir().unwrap();
    tiny::write_tiny_bert(tmp.path(), 5).unwrap();
    // candle's BertModel itself (auto may pick the bf16 engine, which rounds).
    let enc = Encoder::load_with_adapters(
        tmp.path(),
        &Device::Cpu,
        None,
        triage::model::EngineKind::Candle,
    )
    .unwrap();
    let texts = [
        "where is my order",
        "hello",
        "i want a refund now ! very angry",
    ];
    let reference = enc.embed(&texts, 3).unwrap();
    let bert = Bert::from_tensors(
        &load_tensors(tmp.path(), &Device::Cpu).unwrap(),
        tiny::HEADS,
        tiny::LAYERS,
        1e-12,
    )
    .unwrap();
    let toks = enc.tokenize(&texts).unwrap();
    for (t, r) in toks.iter().zip(&reference) {
        let ids = candle_core::Tensor::new(t.ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mask = ids.ones_like().unwrap();
        let h = bert
            .layers(
                bert.embed(&ids).unwrap(),
                &mask_bias(&mask).unwrap(),
                0,
                tiny::LAYERS,
                None,
            )
            .unwrap();
        let v: Vec<f32> = mean_pool_normalize(&h, &mask)
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        let max_diff = v
            .iter()
            .zip(r)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max_diff < 1e-4, "max diff {max_diff}");
    }
}

#[test]
fn the_retrieval_objective_pulls_messages_to_their_faq_entry() {
    use triage::train::RetrievalData;
    let tmp = tempfile::tempdir().unwrap();
    let enc_dir = tmp.path().join("enc");
    tiny::write_tiny_bert(&enc_dir, 3).unwrap();
    let kb = tmp.path().join("kb.jsonl");
    std::fs::write(
        &kb,
        concat!(
            r#"{"id":"track","question":{"en":["where is my order"]},"answer":{"en":"A"}}"#,
            "\n",
            r#"{"id":"refund","question":{"en":["refund please"]},"answer":{"en":"B"}}"#,
            "\n",
            r#"{"id":"hello","question":{"en":["hello"]},"answer":{"en":"C"}}"#,
        ),
    )
    .unwrap();
    let pairs = tmp.path().join("pairs.jsonl");
    std::fs::write(
        &pairs,
        concat!(
            r#"{"text":"hi","faq_id":"hello"}"#,
            "\n",
            r#"{"text":"my parcel ?","faq_id":"track"}"#,
            "\n",
            r#"{"text":"money back now","faq_id":"refund"}"#,
            "\n",
            r#"{"text":"unrelated","faq_id":null}"#,
        ),
    )
    .unwrap();
    let data = RetrievalData::load(&kb, &pairs, &pairs).unwrap();
    assert_eq!(data.train.texts.len(), 3);
    assert_eq!(
        data.train_null,
        vec!["unrelated".to_string()],
        "the null row learns 'no entry'"
    );
    let rows = vec![
        row("where is my order", "order_status", "neutral"),
        row("i want a refund now !", "refund_status", "angry"),
        row("hello", "greeting", "satisfied"),
    ];
    let opts = TrainOptions {
        epochs: 40,
        lr: 1e-2,
        lr_adapters: 1e-2,
        top_layers: 1,
        embed_batch: 4,
        retrieval_batch: 3,
        ..TrainOptions::default()
    };
    let report = train(
        &enc_dir,
        &rows,
        &rows,
        Some(&data),
        &opts,
        &tmp.path().join("heads"),
    )
    .unwrap();
    let top1: Vec<f64> = report
        .epochs
        .iter()
        .map(|e| e.dev_retrieval_top1.unwrap())
        .collect();
    assert_eq!(*top1.last().unwrap(), 1.0, "{top1:?}");
    let floors: Vec<f64> = report
        .epochs
        .iter()
        .map(|e| e.retrieval_null_floor.unwrap())
        .collect();
    assert!(
        (floors[0] - floors[floors.len() - 1]).abs() > 1e-4,
        "the no-entry floor is trained: {floors:?}"
    );

    // A pair naming an entry the knowledge base lacks is refused by name.
    std::fs::write(&pairs, r#"{"text":"x","faq_id":"nope"}"#).unwrap();
    let err = RetrievalData::load(&kb, &pairs, &pairs).unwrap_err();
    assert!(format!("{err:#}").contains("'nope'"), "{err:#}");
}
