//! The knowledge-base file: JSONL, one FAQ entry a line:
//! `{"id": "faq-returns-window", "intent": "return_policy" (optional),
//!   "question": {"en": "..." | ["...", "..."], ...}, "answer": {"en": "...", ...}}`.
//! Errors name the line and the field.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// One FAQ entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FaqEntry {
    pub id: String,
    pub intent: Option<String>,
    /// Question variants per language.
    pub questions: BTreeMap<String, Vec<String>>,
    /// The answer per language.
    pub answers: BTreeMap<String, String>,
}

/// Read a knowledge-base file.
pub fn read_kb(path: &Path) -> Result<Vec<FaqEntry>> {
    let content =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_kb(&content).with_context(|| format!("in knowledge base {}", path.display()))
}

/// Parse knowledge-base JSONL.
pub fn parse_kb(content: &str) -> Result<Vec<FaqEntry>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, line) in content.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("line {n}: not valid JSON"))?;
        let obj = v
            .as_object()
            .with_context(|| format!("line {n}: expected a JSON object"))?;
        let id = match obj.get("id") {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(_) => bail!("line {n}: field 'id' must be a non-empty string"),
            None => bail!("line {n}: missing field 'id'"),
        };
        if !seen.insert(id.clone()) {
            bail!("line {n}: duplicate id '{id}'");
        }
        let intent = match obj.get("intent") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(_) => bail!("line {n}: field 'intent' must be a string"),
        };
        let questions = lang_map(obj.get("question"), n, "question", true)?
            .into_iter()
            .collect::<BTreeMap<_, _>>();
        let answers = lang_map(obj.get("answer"), n, "answer", false)?
            .into_iter()
            .map(|(k, mut v)| (k, v.remove(0)))
            .collect::<BTreeMap<_, _>>();
        if questions.is_empty() {
            bail!("line {n}: field 'question' has no language");
        }
        if answers.is_empty() {
            bail!("line {n}: field 'answer' has no language");
        }
        for k in obj.keys() {
            if !["id", "intent", "question", "answer"].contains(&k.as_str()) {
                bail!("line {n}: unknown field '{k}'");
            }
        }
        out.push(FaqEntry {
            id,
            intent,
            questions,
            answers,
        });
    }
    if out.is_empty() {
        bail!("the knowledge base has no entries");
    }
    Ok(out)
}

/// Keep only the questions and answers in `languages` (a knowledge base written in those
/// languages only); entries left without a question or an answer are dropped. An empty list
/// keeps everything.
pub fn restrict_languages(entries: &mut Vec<FaqEntry>, languages: &[String]) {
    if languages.is_empty() {
        return;
    }
    for e in entries.iter_mut() {
        e.questions.retain(|l, _| languages.contains(l));
        e.answers.retain(|l, _| languages.contains(l));
    }
    entries.retain(|e| !e.questions.is_empty() && !e.answers.is_empty());
}

fn lang_map(
    v: Option<&serde_json::Value>,
    n: usize,
    field: &str,
    lists: bool,
) -> Result<Vec<(String, Vec<String>)>> {
    let Some(v) = v else {
        bail!("line {n}: missing field '{field}'")
    };
    let obj = v.as_object().with_context(|| {
        format!("line {n}: field '{field}' must be an object of language -> text")
    })?;
    let mut out = Vec::new();
    for (lang, t) in obj {
        let texts = match t {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) if lists => a
                .iter()
                .map(|x| x.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
                .with_context(|| format!("line {n}: field '{field}.{lang}' must hold strings"))?,
            _ if lists => {
                bail!("line {n}: field '{field}.{lang}' must be a string or a list of strings")
            }
            _ => bail!("line {n}: field '{field}.{lang}' must be a string"),
        };
        if texts.is_empty() || texts.iter().any(|t| t.trim().is_empty()) {
            bail!("line {n}: field '{field}.{lang}' is empty");
        }
        out.push((lang.clone(), texts));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strings_and_lists() {
        let kb = parse_kb(
            r#"{"id":"a","intent":"order_status","question":{"en":["q1","q2"],"zh":"问"},"answer":{"en":"A"}}"#,
        )
        .unwrap();
        assert_eq!(kb[0].questions["en"], vec!["q1", "q2"]);
        assert_eq!(kb[0].questions["zh"], vec!["问"]);
        assert_eq!(kb[0].answers["en"], "A");
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = |s: &str| format!("{:#}", parse_kb(s).unwrap_err());
        assert!(e(
            "{\"id\":\"a\",\"question\":{\"en\":\"q\"},\"answer\":{\"en\":\"A\"}}\n{\"id\":\"b\"}"
        )
        .contains("line 2: missing field 'question'"));
        assert!(e(r#"{"id":"a","question":{"en":5},"answer":{"en":"A"}}"#)
            .contains("line 1: field 'question.en'"));
        assert!(
            e(r#"{"id":"a","question":{"en":"q"},"answer":{"en":["A"]}}"#)
                .contains("field 'answer.en' must be a string")
        );
        assert!(e("{\"id\":\"a\",\"question\":{\"en\":\"q\"},\"answer\":{\"en\":\"A\"}}\n{\"id\":\"a\",\"question\":{\"en\":\"q\"},\"answer\":{\"en\":\"A\"}}").contains("duplicate id"));
        assert!(e("").contains("no entries"));
    }
}
