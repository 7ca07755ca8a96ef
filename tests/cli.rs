//! The `triage` binary as a user runs it: bad input is refused with a clear message that
//! names the problem and the line, before any model work; good input prints JSON lines.

mod common;

use std::io::Write;
use std::process::{Command, Output};

fn triage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(args)
        .env("TRIAGE_CACHE_DIR", common::cache_dir())
        .current_dir(common::repo())
        .output()
        .expect("running triage")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn empty_text_is_refused() {
    let o = triage(&["classify", "   "]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("text argument 1 is empty"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn no_input_at_all_is_refused() {
    let o = triage(&["classify"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nothing to do"), "{}", stderr(&o));
}

fn jsonl_file(content: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f
}

#[test]
fn invalid_jsonl_line_is_named() {
    let f = jsonl_file("{\"text\": \"ok\"}\n{\"text\": broken\n");
    let o = triage(&["classify", "--input", f.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("line 2: invalid JSON"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn missing_text_field_is_named() {
    let f = jsonl_file("{\"text\": \"ok\"}\n\n{\"message\": \"hi\"}\n");
    let o = triage(&["classify", "--input", f.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("line 3: missing field 'text'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn wrong_type_and_empty_text_in_jsonl_are_named() {
    let f = jsonl_file("{\"text\": 12}\n");
    let o = triage(&["classify", "--input", f.path().to_str().unwrap()]);
    assert!(
        stderr(&o).contains("line 1: field 'text' must be a string"),
        "{}",
        stderr(&o)
    );
    let f = jsonl_file("{\"text\": \"a\"}\n{\"text\": \"\"}\n");
    let o = triage(&["classify", "--input", f.path().to_str().unwrap()]);
    assert!(
        stderr(&o).contains("line 2: field 'text' is empty"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn eval_refuses_a_bad_data_file_with_the_line() {
    let f = jsonl_file("{\"text\": \"a\", \"intent\": \"greeting\"}\nnot json\n");
    let o = triage(&["eval", "--data", f.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("line 2"), "{}", stderr(&o));
}

#[test]
fn cuda_without_the_feature_is_a_clear_error() {
    if cfg!(feature = "cuda") {
        return;
    }
    let o = triage(&["classify", "--device", "cuda", "hello"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--features cuda"), "{}", stderr(&o));
}

#[test]
fn classify_prints_one_json_line_per_text_with_the_documented_fields() {
    common::default_model_dir();
    let o = triage(&[
        "classify",
        "where is my order #A1029?",
        "THIS IS THE THIRD TIME I ASK!!! REFUND ME NOW",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for v in &lines {
        for field in [
            "text",
            "intent",
            "intents",
            "emotion",
            "emotions",
            "sentiment",
        ] {
            assert!(v.get(field).is_some(), "missing {field} in {v}");
        }
        assert_eq!(v["intents"].as_array().unwrap().len(), 3);
        assert_eq!(v["emotions"].as_array().unwrap().len(), 5);
        let score = v["intent"]["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
    }
    assert_eq!(lines[0]["text"], "where is my order #A1029?");
    assert_eq!(lines[1]["emotion"]["label"], "angry");
    assert_eq!(lines[1]["sentiment"], "negative");
}

#[test]
fn train_refuses_options_that_cannot_train_before_reading_data() {
    let o = triage(&["train", "--epochs", "0", "--final-lr-fraction", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("epochs must be at least 1"), "{err}");
    assert!(err.contains("final-lr-fraction must be in [0, 1]"), "{err}");
}

#[test]
fn load_generator_refuses_non_loopback_targets() {
    let o = triage(&["load", "--addr", "10.1.2.3:8080", "--duration-s", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not a loopback address"),
        "{}",
        stderr(&o)
    );
}
