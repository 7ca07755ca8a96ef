//! `triage serve`: the HTTP server. Every setting is a flag, an environment variable
//! (`TRIAGE_*`) or a key of a TOML config file (`--config`), in that order of precedence.

use crate::batch::BatchConfig;
use crate::http::{auth, serve, AppState, Limits, NetOptions, TlsFiles};
use crate::model::{device_name, parse_device, ModelOptions};
use crate::retrieval::RetrievalConfig;
use crate::state::{Sources, State};
use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of these settings (keys as the flags, with underscores).
    #[arg(long, env = "TRIAGE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "TRIAGE_ADDR")]
    pub addr: Option<String>,
    /// Model directory or hub id [default: the default model].
    #[arg(long, env = "TRIAGE_MODEL")]
    pub model: Option<String>,
    /// Heads directory [default: the model's own, or models/default].
    #[arg(long, env = "TRIAGE_HEADS")]
    pub heads: Option<PathBuf>,
    /// FAQ knowledge base (JSONL) [default: models/faq/default-kb.jsonl].
    #[arg(long, env = "TRIAGE_FAQ")]
    pub faq: Option<PathBuf>,
    /// Policy file (TOML) [default: models/policy/default.toml].
    #[arg(long, env = "TRIAGE_POLICY")]
    pub policy: Option<PathBuf>,
    /// cpu, cuda or cuda:N [default: cpu].
    #[arg(long, env = "TRIAGE_DEVICE")]
    pub device: Option<String>,
    /// Encoder forward: auto (the CPU inference engine where the CPU has AVX-512: bf16 on
    /// AMX tiles where it has AMX, else fp32; candle on a GPU, an older CPU or a model the
    /// engine cannot run), f32, int8 (VNNI int8 weights and activations; not exact), bf16
    /// (AMX tiles or AVX-512 BF16; fp32 sums), or candle (the reference) [default: auto].
    #[arg(long, env = "TRIAGE_ENGINE")]
    pub engine: Option<String>,
    /// Model cache directory [default: .cache/triage].
    #[arg(long, env = "TRIAGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Padded tokens per batch [default: 8192].
    #[arg(long, env = "TRIAGE_MAX_BATCH_TOKENS")]
    pub max_batch_tokens: Option<usize>,
    /// Texts per batch [default: 64].
    #[arg(long, env = "TRIAGE_MAX_BATCH_SIZE")]
    pub max_batch_size: Option<usize>,
    /// How long a batch's first text waits for company when nothing else is queued, ms
    /// (texts already queued always join) [default: 0].
    #[arg(long, env = "TRIAGE_MAX_WAIT_MS")]
    pub max_wait_ms: Option<u64>,
    /// Model threads, each running its own batches on its share of the cores (0 = auto:
    /// two where there are at least two cores, so one batch forms while another runs)
    /// [default: 0].
    #[arg(long, env = "TRIAGE_MODEL_WORKERS")]
    pub model_workers: Option<usize>,
    /// Texts queued before 429 [default: 1024].
    #[arg(long, env = "TRIAGE_QUEUE_DEPTH")]
    pub queue_depth: Option<usize>,
    /// [default: 64]
    #[arg(long, env = "TRIAGE_MAX_TEXTS_PER_REQUEST")]
    pub max_texts_per_request: Option<usize>,
    /// [default: 4000]
    #[arg(long, env = "TRIAGE_MAX_CHARS_PER_TEXT")]
    pub max_chars_per_text: Option<usize>,
    /// [default: 1048576]
    #[arg(long, env = "TRIAGE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Per-request deadline, ms [default: 10000].
    #[arg(long, env = "TRIAGE_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// A plain cosine floor for FAQ answers, replacing the model's fitted ranker
    /// (heads.json `retrieval`) [default: the model's ranker, else a floor of 0.86].
    #[arg(long, env = "TRIAGE_FAQ_FLOOR")]
    pub faq_floor: Option<f32>,
    /// Language of answers when an entry lacks the customer's [default: en].
    #[arg(long, env = "TRIAGE_FALLBACK_LANGUAGE")]
    pub fallback_language: Option<String>,
    /// File holding the admin key (else env TRIAGE_ADMIN_KEY; none = admin routes off).
    #[arg(long)]
    pub admin_key_file: Option<PathBuf>,
    /// File holding public API keys, one per line (else env TRIAGE_API_KEYS, comma
    /// separated; none = public routes open).
    #[arg(long)]
    pub api_keys_file: Option<PathBuf>,
    /// Time a client has to send a request's headers, ms [default: 10000].
    #[arg(long, env = "TRIAGE_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Time a client has to send a request's body, ms; slower gets 408 [default: 10000].
    #[arg(long, env = "TRIAGE_BODY_READ_TIMEOUT_MS")]
    pub body_read_timeout_ms: Option<u64>,
    /// Connections open at once [default: 1024].
    #[arg(long, env = "TRIAGE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Origins allowed by CORS, comma separated (`*` = any) [default: none, CORS off].
    #[arg(long, env = "TRIAGE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Serve HTTPS: certificate chain (PEM). Needs --tls-key.
    #[arg(long, env = "TRIAGE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Serve HTTPS: private key (PEM).
    #[arg(long, env = "TRIAGE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Log each request's text, with e-mail addresses, phone, card and order numbers masked
    /// [default: false: customer text is never logged].
    #[arg(long, env = "TRIAGE_LOG_TEXT")]
    pub log_text: Option<bool>,
}

macro_rules! merge {
    ($a:ident, $f:ident, $($field:ident),*) => { $( if $a.$field.is_none() { $a.$field = $f.$field.clone(); } )* };
}

impl ServeArgs {
    /// Fill unset settings from the config file.
    pub fn resolved(&self) -> Result<Self> {
        let mut a = self.clone();
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config {}", path.display()))?;
            let f: ServeArgs = toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("in config {}: {e}", path.display()))?;
            merge!(
                a,
                f,
                addr,
                model,
                heads,
                faq,
                policy,
                device,
                engine,
                cache_dir,
                max_batch_tokens,
                max_batch_size,
                max_wait_ms,
                model_workers,
                queue_depth,
                max_texts_per_request,
                max_chars_per_text,
                max_body_bytes,
                request_timeout_ms,
                faq_floor,
                fallback_language,
                admin_key_file,
                api_keys_file,
                header_read_timeout_ms,
                body_read_timeout_ms,
                max_connections,
                cors_origins,
                tls_cert,
                tls_key,
                log_text
            );
        }
        Ok(a)
    }
}

fn repo_default(rel: &str) -> PathBuf {
    let local = PathBuf::from(rel);
    if local.exists() {
        local
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
    }
}

/// Everything `serve` needs, built from the settings.
pub struct Built {
    pub state: Arc<AppState>,
    pub addr: std::net::SocketAddr,
    pub net: NetOptions,
}

/// Build the application state from settings (also used by the integration tests).
pub fn build_state(a: &ServeArgs) -> Result<Built> {
    let a = a.resolved()?;
    let device = parse_device(a.device.as_deref().unwrap_or("cpu"))?;
    let sources = Sources {
        model: ModelOptions {
            model: a.model.clone(),
            heads: a.heads.clone(),
            cache_dir: a
                .cache_dir
                .clone()
                .unwrap_or_else(crate::model::provision::default_cache_dir),
            device: device.clone(),
            engine: a
                .engine
                .as_deref()
                .unwrap_or("auto")
                .parse()
                .map_err(anyhow::Error::msg)?,
        },
        faq: a
            .faq
            .clone()
            .unwrap_or_else(|| repo_default("models/faq/default-kb.jsonl")),
        policy: a
            .policy
            .clone()
            .unwrap_or_else(|| repo_default("models/policy/default.toml")),
        retrieval: RetrievalConfig {
            floor: a.faq_floor,
            fallback_language: a.fallback_language.clone().unwrap_or_else(|| "en".into()),
        },
    };
    let d = BatchConfig::default();
    let batch = BatchConfig {
        max_batch_tokens: a.max_batch_tokens.unwrap_or(d.max_batch_tokens),
        max_batch_size: a.max_batch_size.unwrap_or(d.max_batch_size),
        max_wait: a
            .max_wait_ms
            .map(Duration::from_millis)
            .unwrap_or(d.max_wait),
        queue_depth: a.queue_depth.unwrap_or(d.queue_depth),
        workers: a.model_workers.unwrap_or(d.workers),
    };
    let l = Limits::default();
    let limits = Limits {
        max_texts_per_request: a.max_texts_per_request.unwrap_or(l.max_texts_per_request),
        max_chars_per_text: a.max_chars_per_text.unwrap_or(l.max_chars_per_text),
        max_body_bytes: a.max_body_bytes.unwrap_or(l.max_body_bytes),
        request_timeout: a
            .request_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(l.request_timeout),
        body_read_timeout: a
            .body_read_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(l.body_read_timeout),
        log_text: a.log_text.unwrap_or(l.log_text),
    };
    let n = NetOptions::default();
    let net = NetOptions {
        tls: match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            _ => anyhow::bail!("TLS needs both tls_cert and tls_key"),
        },
        cors_origins: a.cors_origins.clone().unwrap_or_default(),
        max_connections: a.max_connections.unwrap_or(n.max_connections),
        header_read_timeout: a
            .header_read_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(n.header_read_timeout),
    };
    if let Some(t) = &net.tls {
        // Refuse bad certificate files before loading the model.
        crate::http::server::tls_acceptor(t)?;
    }
    let public = match auth::key_from("TRIAGE_API_KEYS", None)? {
        Some(k) => k
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => match &a.api_keys_file {
            Some(f) => std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect(),
            None => Vec::new(),
        },
    };
    let keys = auth::Keys {
        admin: auth::key_from("TRIAGE_ADMIN_KEY", a.admin_key_file.as_deref())?,
        public,
    };
    let addr: std::net::SocketAddr = a
        .addr
        .as_deref()
        .unwrap_or("127.0.0.1:8080")
        .parse()
        .context("--addr must be HOST:PORT, e.g. 127.0.0.1:8080")?;
    eprintln!("triage: loading model, knowledge base and policy...");
    let shared = Arc::new(State::load(sources)?);
    let state = Arc::new(AppState::new(
        shared,
        batch,
        limits,
        keys,
        device_name(&device),
    ));
    Ok(Built { state, addr, net })
}

pub fn run(a: &ServeArgs) -> Result<()> {
    // Logs on stderr; TRIAGE_LOG filters them (e.g. `warn`, `triage=debug`).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRIAGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let Built { state, addr, net } = build_state(a)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(state, addr, None, net))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_config_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("triage.toml");
        std::fs::write(
            &cfg,
            "addr = \"0.0.0.0:9000\"\nqueue_depth = 7\nmax_wait_ms = 2\n",
        )
        .unwrap();
        let a = ServeArgs {
            config: Some(cfg.clone()),
            queue_depth: Some(99),
            ..ServeArgs::default()
        };
        let r = a.resolved().unwrap();
        assert_eq!(r.addr.as_deref(), Some("0.0.0.0:9000"));
        assert_eq!(r.queue_depth, Some(99));
        assert_eq!(r.max_wait_ms, Some(2));
        assert_eq!(r.max_batch_tokens, None);
        std::fs::write(&cfg, "adress = \"x\"\n").unwrap();
        let err = ServeArgs {
            config: Some(cfg),
            ..ServeArgs::default()
        }
        .resolved()
        .unwrap_err();
        assert!(format!("{err:#}").contains("adress"), "{err:#}");
    }
}
