//! Training: the intent and emotion heads, jointly with LoRA adapters on the top encoder
//! layers (with a contrastive FAQ-retrieval objective next to the classification loss),
//! calibrated by temperature on the dev split, written as a small heads directory
//! with its training report. Data comes from [`crate::dataset`]; nothing here knows about
//! HTTP.

pub mod adapt;
pub mod calibrate;
pub mod contrastive;

pub use adapt::{train, TrainOptions, TrainReport};
pub use contrastive::RetrievalData;
