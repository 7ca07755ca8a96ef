//! API keys: admin routes always need one (no key configured = admin disabled), public
//! routes optionally. Keys come from the environment or a file, never the command line;
//! comparison is constant-time.

use super::error::ApiError;
use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

/// Configured keys.
#[derive(Clone, Default)]
pub struct Keys {
    pub admin: Option<String>,
    pub public: Vec<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("admin", &self.admin.as_ref().map(|_| "<set>"))
            .field("public", &self.public.len())
            .finish()
    }
}

/// Read a key from an environment variable or a file (first line), env first.
pub fn key_from(env: &str, file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    if let Ok(k) = std::env::var(env) {
        if !k.trim().is_empty() {
            return Ok(Some(k.trim().to_string()));
        }
    }
    match file {
        Some(f) => {
            let s = std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("reading key file {}: {e}", f.display()))?;
            Ok(s.lines()
                .next()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()))
        }
        None => Ok(None),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn matches(given: &str, key: &str) -> bool {
    given.as_bytes().ct_eq(key.as_bytes()).into()
}

impl Keys {
    pub fn check_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.admin else {
            return Err(ApiError::NotFound(
                "admin routes are disabled: set TRIAGE_ADMIN_KEY (or --admin-key-file)".into(),
            ));
        };
        match bearer(headers) {
            Some(g) if matches(g, key) => Ok(()),
            Some(_) => Err(ApiError::Unauthorized("wrong admin key".into())),
            None => Err(ApiError::Unauthorized(
                "admin routes need 'Authorization: Bearer KEY'".into(),
            )),
        }
    }

    pub fn check_public(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.public.is_empty() {
            return Ok(());
        }
        match bearer(headers) {
            Some(g) if self.public.iter().fold(false, |ok, k| ok | matches(g, k)) => Ok(()),
            Some(_) => Err(ApiError::Unauthorized("unknown API key".into())),
            None => Err(ApiError::Unauthorized(
                "this server needs 'Authorization: Bearer KEY'".into(),
            )),
        }
    }
}
