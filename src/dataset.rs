//! Labelled message files: JSONL with `text`, `lang` and optional `intent` / `emotion`
//! (extra fields ignored, `null` labels allowed). Used by training and evaluation; errors
//! name the file and line.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One labelled message.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Labeled {
    pub text: String,
    #[serde(default)]
    pub lang: Option<String>,
    #[serde(default)]
    pub intent: Option<String>,
    #[serde(default)]
    pub emotion: Option<String>,
}

impl Labeled {
    /// The language, or `"?"` when the row has none.
    pub fn lang(&self) -> &str {
        self.lang.as_deref().unwrap_or("?")
    }
}

/// Read one JSONL file. Blank lines are skipped; anything else that is not an object with
/// a string `text` is an error naming the line.
pub fn read_jsonl(path: &Path) -> Result<Vec<Labeled>> {
    let content =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_jsonl(&content).with_context(|| format!("in {}", path.display()))
}

/// Parse JSONL content (see [`read_jsonl`]).
pub fn parse_jsonl(content: &str) -> Result<Vec<Labeled>> {
    let mut rows = Vec::new();
    for (i, line) in content.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("line {n}: not valid JSON"))?;
        if !value.is_object() {
            bail!("line {n}: expected a JSON object");
        }
        match value.get("text") {
            Some(serde_json::Value::String(_)) => {}
            Some(_) => bail!("line {n}: field 'text' must be a string"),
            None => bail!("line {n}: missing field 'text'"),
        }
        let row: Labeled =
            serde_json::from_value(value).with_context(|| format!("line {n}: bad field types"))?;
        rows.push(row);
    }
    Ok(rows)
}

/// Read a JSONL file of any row type; blank lines skipped, errors name the file and line.
pub fn read_rows<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        rows.push(
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}", path.display(), i + 1))?,
        );
    }
    Ok(rows)
}

/// All `*.jsonl` files of a path (a file, or a directory read non-recursively, sorted).
pub fn jsonl_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} has no .jsonl files", path.display());
    }
    Ok(files)
}

/// Read every JSONL file under a path.
pub fn read_all(path: &Path) -> Result<Vec<Labeled>> {
    let mut rows = Vec::new();
    for f in jsonl_files(path)? {
        rows.extend(read_jsonl(&f)?);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line() {
        let err = parse_jsonl("{\"text\":\"a\"}\n{oops\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        let err = parse_jsonl("{\"text\":\"a\"}\n\n{\"lang\":\"en\"}\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("line 3: missing field 'text'"),
            "{err:#}"
        );
        let err = parse_jsonl("{\"text\":5}").unwrap_err();
        assert!(format!("{err:#}").contains("must be a string"), "{err:#}");
    }

    #[test]
    fn null_labels_and_extra_fields_are_fine() {
        let rows =
            parse_jsonl("{\"text\":\"hi\",\"lang\":\"en\",\"intent\":null,\"x\":1}\n").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].intent, None);
        assert_eq!(rows[0].lang(), "en");
    }
}
