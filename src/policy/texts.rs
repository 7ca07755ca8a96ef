//! Reply texts of the policy (`policy-texts.toml`): emotion additions, the clarify
//! question, escalation and survey notices, short intent names and per-intent fallback
//! templates, each in several languages with a fallback language.

use anyhow::{Context, Result};

/// Loaded reply texts.
#[derive(Debug, Clone, Default)]
pub struct Texts {
    table: toml::Table,
    fallback: String,
}

impl Texts {
    /// Read and merge text files (later files add to and override earlier ones).
    pub fn read(paths: &[std::path::PathBuf], fallback: &str) -> Result<Self> {
        let mut table = toml::Table::new();
        for path in paths {
            let s = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let t: toml::Table =
                toml::from_str(&s).map_err(|e| anyhow::anyhow!("in {}: {e}", path.display()))?;
            merge(&mut table, t);
        }
        Ok(Self {
            table,
            fallback: fallback.to_string(),
        })
    }

    /// The text at a dotted path (`additions.anxious`, `templates.order_status`) in the
    /// language, else its base language, else the fallback language.
    pub fn get(&self, path: &str, lang: &str) -> Option<(String, String)> {
        let mut node: &toml::Value = self.table.get(path.split('.').next()?)?;
        for part in path.split('.').skip(1) {
            node = node.get(part)?;
        }
        let base = lang.split('-').next().unwrap_or(lang);
        for l in [lang, base, self.fallback.as_str()] {
            if let Some(s) = node.get(l).and_then(|v| v.as_str()) {
                return Some((s.to_string(), l.to_string()));
            }
        }
        None
    }
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_fallbacks() {
        let t = Texts {
            table: toml::from_str("[templates.greeting]\nen = \"Hi\"\nzh = \"你好\"\n").unwrap(),
            fallback: "en".into(),
        };
        assert_eq!(t.get("templates.greeting", "zh").unwrap().0, "你好");
        assert_eq!(
            t.get("templates.greeting", "th").unwrap(),
            ("Hi".to_string(), "en".to_string())
        );
        assert!(t.get("templates.nothing", "en").is_none());
    }
}
