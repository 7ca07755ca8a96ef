//! The shipped default policy (models/policy/default.toml + its texts) against the
//! taxonomy's rules, without the model: synthetic classifications in, decisions out.

use triage::model::Scored;
use triage::policy::memory::Turn;
use triage::policy::{ActionType, Input, Policy, Priority};
use triage::taxonomy::{INTENTS, LANGUAGES};

fn policy() -> Policy {
    Policy::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/policy/default.toml"),
        "en",
    )
    .unwrap()
}

fn s(label: &str, score: f32) -> Scored {
    Scored {
        label: label.into(),
        score,
    }
}

fn decide(
    p: &Policy,
    intent: &str,
    conf: f32,
    emotion: &str,
    history: &[Turn],
    text: &str,
) -> triage::policy::Decision {
    let intents = vec![s(intent, conf), s("order_status", (1.0 - conf) / 2.0)];
    let e = s(emotion, 0.9);
    p.decide(&Input {
        text,
        intents: &intents,
        emotion: Some(&e),
        history,
    })
}

#[test]
fn the_taxonomy_default_policy() {
    let p = policy();
    let d = decide(&p, "delivery_delay", 0.95, "angry", &[], "WHERE IS IT");
    assert_eq!(
        (d.action, d.priority, d.reason.as_str(), d.queue.as_str()),
        (
            ActionType::Escalate,
            Priority::Urgent,
            "angry_customer",
            "logistics"
        )
    );
    let d = decide(&p, "human_agent", 0.95, "neutral", &[], "a person please");
    assert_eq!(
        (d.action, d.reason.as_str()),
        (ActionType::Escalate, "asked_for_human")
    );
    let d = decide(
        &p,
        "complaint",
        0.9,
        "disappointed",
        &[],
        "your service is bad",
    );
    assert_eq!(
        (d.action, d.reason.as_str(), d.queue.as_str()),
        (ActionType::Escalate, "negative_complaint", "after_sales")
    );
    let d = decide(&p, "complaint", 0.9, "neutral", &[], "a remark");
    assert_eq!(d.action, ActionType::Answer);
    let d = decide(&p, "refund_status", 0.5, "neutral", &[], "money?");
    assert_eq!(
        (d.action, d.reason.as_str(), d.queue.as_str()),
        (ActionType::Clarify, "low_confidence", "payments")
    );
    let d = decide(
        &p,
        "refund_status",
        0.9,
        "neutral",
        &[],
        "where is my refund",
    );
    assert_eq!(
        (d.action, d.reason.as_str()),
        (ActionType::Answer, "answer")
    );
    // Two angry turns in a row: the second only disappointed still escalates.
    let prev = [Turn {
        intent: "delivery_delay".into(),
        emotion: Some("angry".into()),
        action: ActionType::Escalate,
    }];
    let d = decide(
        &p,
        "delivery_delay",
        0.9,
        "disappointed",
        &prev,
        "still nothing",
    );
    assert_eq!(
        (d.action, d.reason.as_str()),
        (ActionType::Escalate, "angry_twice_in_a_row")
    );
    let d = decide(&p, "delivery_delay", 0.9, "neutral", &prev, "ok thanks");
    assert_eq!(d.action, ActionType::Answer);
    // Survey keywords in several languages.
    for text in [
        "my problem is still not resolved",
        "问题未解决",
        "ยังไม่ได้แก้เลย",
        "해결되지 않았어요",
    ] {
        let d = decide(&p, "complaint", 0.9, "neutral", &[], text);
        assert!(
            d.survey && d.action == ActionType::Escalate,
            "{text}: {d:?}"
        );
    }
}

#[test]
fn replies_exist_in_all_twelve_languages() {
    let p = policy();
    for lang in LANGUAGES {
        for intent in INTENTS {
            let intents = vec![s(intent, 0.9), s("refund_status", 0.05)];
            let e = s("neutral", 0.9);
            let input = Input {
                text: "x",
                intents: &intents,
                emotion: Some(&e),
                history: &[],
            };
            let d = p.decide(&input);
            let r = p
                .reply(&d, &input, None, lang)
                .unwrap_or_else(|| panic!("no reply for {intent} in {lang}"));
            assert_eq!(r.language, lang, "{intent}");
        }
        // Clarify names the top two intents in the customer's language.
        let intents = vec![s("refund_status", 0.4), s("return_exchange", 0.3)];
        let e = s("anxious", 0.9);
        let input = Input {
            text: "x",
            intents: &intents,
            emotion: Some(&e),
            history: &[],
        };
        let d = p.decide(&input);
        assert_eq!(d.action, ActionType::Clarify);
        let r = p.reply(&d, &input, None, lang).unwrap();
        assert!(
            !r.text.contains("{a}") && !r.text.contains("{b}"),
            "{lang}: {}",
            r.text
        );
        assert_eq!(r.language, lang);
    }
}

#[test]
fn emotion_shapes_an_answer() {
    let p = policy();
    let intents = vec![s("order_status", 0.95)];
    let neutral = s("neutral", 0.9);
    let anxious = s("anxious", 0.9);
    let plain = Input {
        text: "x",
        intents: &intents,
        emotion: Some(&neutral),
        history: &[],
    };
    let worried = Input {
        text: "x",
        intents: &intents,
        emotion: Some(&anxious),
        history: &[],
    };
    let d = p.decide(&plain);
    let a = p.reply(&d, &plain, None, "en").unwrap().text;
    let b = p
        .reply(&p.decide(&worried), &worried, None, "en")
        .unwrap()
        .text;
    assert!(b.starts_with(&a) && b.len() > a.len(), "{a} / {b}");
}
