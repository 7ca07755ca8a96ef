//! Shared helpers for the integration tests: the real default model, provisioned on first
//! use into the repository's git-ignored cache (or `$TRIAGE_CACHE_DIR`).

#![allow(dead_code)]

pub mod server;

use std::path::PathBuf;
use std::sync::OnceLock;
use triage::model::provision;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("TRIAGE_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache/triage"))
}

/// The default model's directory, provisioned once per test process.
pub fn default_model_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        provision::ensure_default_model(&cache_dir()).expect("provisioning the default model")
    })
    .clone()
}

pub fn default_heads_dir() -> PathBuf {
    repo().join("models/default")
}

/// The default encoder with the shipped heads and adapters, on the CPU.
pub fn default_model() -> triage::model::Model {
    triage::model::Model::load_dirs(
        &default_model_dir(),
        Some(&default_heads_dir()),
        &candle_core::Device::Cpu,
    )
    .expect("loading the shipped model")
}
