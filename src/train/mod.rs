//! Training: fitting the intent and emotion heads on the encoder's vectors, calibrating
//! them by temperature on the dev split, and writing a small heads directory with a
//! training report. Data comes from [`crate::dataset`]; nothing here knows about HTTP.

pub mod calibrate;
pub mod heads;

pub use heads::{train_heads, TrainOptions, TrainReport};
