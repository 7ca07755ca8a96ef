//! The label contract of `shared/taxonomy.md`: the default model's intent and emotion ids
//! and the twelve languages it serves. Other models may bring other labels.

/// The 20 intents, in the taxonomy's order.
pub const INTENTS: [&str; 20] = [
    "order_status",
    "delivery_delay",
    "cancel_order",
    "change_order",
    "return_exchange",
    "refund_status",
    "return_policy",
    "damaged_item",
    "wrong_or_missing_item",
    "payment_issue",
    "invoice_request",
    "promotion_coupon",
    "product_inquiry",
    "shipping_info",
    "account_issue",
    "complaint",
    "human_agent",
    "greeting",
    "thanks_goodbye",
    "out_of_scope",
];

/// The 5 emotions, in the taxonomy's order.
pub const EMOTIONS: [&str; 5] = ["neutral", "satisfied", "anxious", "disappointed", "angry"];

/// The twelve languages the default model must serve.
pub const LANGUAGES: [&str; 12] = [
    "en", "zh", "zh-Hant", "es", "pt", "fr", "de", "th", "vi", "id", "ja", "ko",
];

/// Order labels found in data: taxonomy labels first in taxonomy order, then any others
/// alphabetically.
pub fn order_labels<'a>(
    found: impl IntoIterator<Item = &'a str>,
    taxonomy: &[&str],
) -> Vec<String> {
    let mut found: Vec<&str> = found.into_iter().collect();
    found.sort_unstable();
    found.dedup();
    let mut out: Vec<String> = taxonomy
        .iter()
        .filter(|t| found.contains(t))
        .map(|t| t.to_string())
        .collect();
    out.extend(
        found
            .iter()
            .filter(|f| !taxonomy.contains(f))
            .map(|f| f.to_string()),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_taxonomy_order_then_extras() {
        let got = order_labels(
            ["zzz", "refund_status", "order_status", "refund_status"],
            &INTENTS,
        );
        assert_eq!(got, vec!["order_status", "refund_status", "zzz"]);
    }
}
