//! The data's contract: the dev split never leaks into training (per language), the FAQ
//! evaluation queries are not among the pairs and tuning queries training and fitting read,
//! and every intent has at least 20 training messages in every language.

mod common;

use std::collections::{HashMap, HashSet};
use triage::dataset::read_all;
use triage::eval::faq::read_queries;

fn norm(t: &str) -> String {
    t.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[test]
fn dev_and_faq_evaluation_sets_stay_out_of_training() {
    let data = common::repo().join("training-data");
    let train = read_all(&data.join("train")).unwrap();
    let dev = read_all(&data.join("dev")).unwrap();
    let trained: HashSet<(String, String)> = train
        .iter()
        .map(|r| (r.lang().to_string(), norm(&r.text)))
        .collect();
    let leaked: Vec<&str> = dev
        .iter()
        .filter(|r| trained.contains(&(r.lang().to_string(), norm(&r.text))))
        .map(|r| r.text.as_str())
        .collect();
    assert!(leaked.is_empty(), "dev messages in train: {leaked:?}");

    let mut per: HashMap<(String, String), usize> = HashMap::new();
    for r in &train {
        *per.entry((r.lang().to_string(), r.intent.clone().unwrap_or_default()))
            .or_default() += 1;
    }
    assert_eq!(per.len(), 12 * 20, "every intent in every language");
    assert!(per.values().all(|&n| n >= 20), "{per:?}");

    let faq = data.join("faq");
    let seen: HashSet<String> = ["train-pairs.jsonl", "tuning-queries.jsonl"]
        .iter()
        .flat_map(|f| read_queries(&faq.join(f)).unwrap())
        .map(|q| norm(&q.text))
        .collect();
    let eval = read_queries(&faq.join("paraphrase-queries.jsonl")).unwrap();
    let leaked: Vec<&str> = eval
        .iter()
        .filter(|q| seen.contains(&norm(&q.text)))
        .map(|q| q.text.as_str())
        .collect();
    assert!(
        leaked.is_empty(),
        "evaluation queries in the fitting data: {leaked:?}"
    );
}
