//! Evaluation: metrics over gold and predicted labels (accuracy, macro-F1, per-label
//! precision/recall/F1, the most costly confusion pairs, expected calibration error) and
//! their report, per language and overall, as text or JSON; FAQ retrieval quality
//! ([`faq`]); embedding geometry on graded sentence pairs ([`sts`]). Knows nothing about
//! training.

pub mod agreement;
pub mod faq;
pub mod metrics;
pub mod report;
pub mod sts;

pub use metrics::{evaluate_task, expected_calibration_error, LabelMetrics, TaskReport};
