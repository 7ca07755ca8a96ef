//! `triage classify` and `triage embed`.

use super::{InputError, ModelArgs};
use crate::model::{resolve_model_dir, Encoder, Model};
use crate::output::ClassificationView;
use anyhow::{Context, Result};
use clap::Args;
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    /// Texts to classify.
    pub texts: Vec<String>,
    /// JSONL file with a "text" field per line ("-" for stdin).
    #[arg(long, short)]
    pub input: Option<PathBuf>,
    /// How many intents to list in "intents".
    #[arg(long, default_value_t = 3)]
    pub top_k: usize,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Texts to embed.
    pub texts: Vec<String>,
    /// JSONL file with a "text" field per line ("-" for stdin).
    #[arg(long, short)]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Collect and validate the texts before any model work, so bad input fails fast.
pub fn collect_texts(texts: &[String], input: Option<&PathBuf>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        if t.trim().is_empty() {
            return Err(InputError(format!("text argument {} is empty", i + 1)).into());
        }
        out.push(t.clone());
    }
    if let Some(path) = input {
        let name = path.display().to_string();
        let reader: Box<dyn BufRead> = if name == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::io::BufReader::new(
                std::fs::File::open(path)
                    .map_err(|e| InputError(format!("cannot open {name}: {e}")))?,
            ))
        };
        for (i, line) in reader.lines().enumerate() {
            let n = i + 1;
            let line = line.map_err(|e| InputError(format!("{name} line {n}: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&line)
                .map_err(|e| InputError(format!("{name} line {n}: invalid JSON ({e})")))?;
            let text = match v.get("text") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(_) => {
                    return Err(InputError(format!(
                        "{name} line {n}: field 'text' must be a string"
                    ))
                    .into())
                }
                None => {
                    return Err(InputError(format!("{name} line {n}: missing field 'text'")).into())
                }
            };
            if text.trim().is_empty() {
                return Err(InputError(format!("{name} line {n}: field 'text' is empty")).into());
            }
            out.push(text);
        }
    }
    if out.is_empty() {
        return Err(InputError(
            "nothing to do: give TEXT arguments or --input FILE.jsonl (- for stdin)".into(),
        )
        .into());
    }
    Ok(out)
}

pub fn run(a: &ClassifyArgs) -> Result<()> {
    let texts = collect_texts(&a.texts, a.input.as_ref())?;
    let model = Model::load(&a.model.options()?)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for chunk in texts.chunks(256) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let preds = model.predict(&refs, a.model.batch_size)?;
        for (t, p) in chunk.iter().zip(&preds) {
            let view = ClassificationView::new(t, p, a.top_k, None);
            writeln!(out, "{}", serde_json::to_string(&view)?).context("writing stdout")?;
        }
    }
    Ok(())
}

pub fn run_embed(a: &EmbedArgs) -> Result<()> {
    let texts = collect_texts(&a.texts, a.input.as_ref())?;
    let opts = a.model.options()?;
    let (dir, _) = resolve_model_dir(&opts)?;
    let encoder = Encoder::load(&dir, &opts.device)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = encoder.embed(&refs, a.model.batch_size)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (t, v) in texts.iter().zip(vectors) {
        writeln!(out, "{}", serde_json::json!({"text": t, "embedding": v}))?;
    }
    Ok(())
}
