//! Masking customer text for logs: e-mail addresses, card numbers, phone numbers and
//! order-like ids become placeholders. Customer text is only logged when `log_text` is on,
//! and then only through [`mask_pii`].

use regex::Regex;
use std::sync::OnceLock;

struct Patterns {
    email: Regex,
    card: Regex,
    phone: Regex,
    id: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        let re = |s: &str| Regex::new(s).expect("built-in pattern");
        Patterns {
            email: re(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"),
            // 13 to 19 digits, optionally grouped by spaces or dashes.
            card: re(r"\b\d(?:[ \-]?\d){12,18}\b"),
            // An optional +, then 7 or more digits with the usual separators.
            phone: re(r"\+?\(?\d[\d ().\-]{5,}\d"),
            // Order numbers and other ids: a run with four or more digits, with its letters.
            id: re(r"#?[A-Za-z]{0,6}[\-_]?\d[\dA-Za-z\-_]*\d[\dA-Za-z\-_]*"),
        }
    })
}

/// The text with personal data replaced by `[email]`, `[card]`, `[phone]` and `[id]`.
pub fn mask_pii(text: &str) -> String {
    let p = patterns();
    let s = p.email.replace_all(text, "[email]");
    let s = p.card.replace_all(&s, "[card]");
    let s = p.phone.replace_all(&s, "[phone]");
    p.id.replace_all(&s, |c: &regex::Captures| {
        let m = &c[0];
        if m.chars().filter(char::is_ascii_digit).count() >= 4 {
            "[id]".to_string()
        } else {
            m.to_string()
        }
    })
    .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_emails_cards_phones_and_ids() {
        let m = mask_pii(
            "I'm jane.doe+shop@example.co.uk, card 4111 1111 1111 1111, call +49 (30) 1234-5678, \
             order #FR88231 / 4471-22 and SO-2024-0099",
        );
        for secret in [
            "jane", "example", "4111", "1234", "5678", "88231", "4471", "2024", "0099",
        ] {
            assert!(!m.contains(secret), "{secret} leaked: {m}");
        }
        assert!(m.contains("[email]") && m.contains("[card]") && m.contains("[phone]"));
        assert!(m.contains("[id]"), "{m}");
    }

    #[test]
    fn leaves_ordinary_text_and_small_numbers() {
        let t = "where is my order? I bought 2 shirts for 35 euros on 3/11 😡 订单还没到";
        assert_eq!(mask_pii(t), t);
    }
}
