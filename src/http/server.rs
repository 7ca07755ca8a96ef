//! Sockets: the accept loop with a cap on open connections, an HTTP/1 header read timeout
//! (slow clients cannot hold connections open by trickling headers; slow bodies are cut by
//! the body read timeout in the router's middleware), optional TLS (rustls), CORS (off unless
//! origins are configured), SIGHUP reloads, and graceful shutdown on SIGTERM / Ctrl-C: stop
//! accepting, finish every admitted request, then return.

use super::{router, AppState};
use anyhow::{Context, Result};
use axum::http::{HeaderValue, Method};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// Socket-level settings (reported by `/info`, except the key's path).
#[derive(Debug, Clone, Serialize)]
pub struct NetOptions {
    /// Serve HTTPS with this certificate chain and private key (PEM files).
    pub tls: Option<TlsFiles>,
    /// Origins allowed by CORS (`*` for any); empty = no CORS headers.
    pub cors_origins: Vec<String>,
    /// Connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    #[serde(serialize_with = "super::ser_ms")]
    pub header_read_timeout: Duration,
}

impl Default for NetOptions {
    fn default() -> Self {
        Self {
            tls: None,
            cors_origins: Vec::new(),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// PEM files for TLS.
#[derive(Debug, Clone, Serialize)]
pub struct TlsFiles {
    pub cert: PathBuf,
    #[serde(skip)]
    pub key: PathBuf,
}

/// A TLS acceptor from PEM files, with errors naming the file.
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("TLS certificate {}: {e}", files.cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "TLS certificate {}: no certificate in the file",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| anyhow::anyhow!("TLS key {}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not go together")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The router with CORS when origins are configured.
fn with_cors(app: Router, origins: &[String]) -> Result<Router> {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    if origins.is_empty() {
        return Ok(app);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .map(|o| HeaderValue::from_str(o).with_context(|| format!("CORS origin '{o}'")))
                .collect::<Result<Vec<_>>>()?,
        )
    };
    Ok(app.layer(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers(Any)
            .expose_headers([axum::http::HeaderName::from_static("x-request-id")])
            .max_age(Duration::from_secs(600)),
    ))
}

/// Serve until SIGTERM / Ctrl-C; finishes admitted requests before returning. SIGHUP
/// reloads model, knowledge base and policy. `ready` gets the bound address.
pub async fn serve(
    state: Arc<AppState>,
    addr: SocketAddr,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    net: NetOptions,
) -> Result<()> {
    let tls = net.tls.as_ref().map(tls_acceptor).transpose()?;
    let app = with_cors(router(state.clone()), &net.cors_origins)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("triage: listening on {scheme}://{local}");
    if let Some(tx) = ready {
        let _ = tx.send(local);
    }
    reload_on_sighup(&state);

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(net.header_read_timeout);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(net.max_connections.max(1)));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.context("connection limiter closed")?,
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        let handshake_timeout = net.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    eprintln!("triage: shutting down, finishing admitted requests...");
    graceful.shutdown().await;
    eprintln!("triage: stopped");
    Ok(())
}

fn reload_on_sighup(state: &Arc<AppState>) {
    #[cfg(unix)]
    {
        let shared = state.shared.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hup.recv().await.is_some() {
                let s = shared.clone();
                let r = tokio::task::spawn_blocking(move || {
                    s.reload_model().and_then(|_| s.reload_policy())
                })
                .await;
                match r {
                    Ok(Ok(g)) => eprintln!("triage: SIGHUP reload done (generation {g})"),
                    Ok(Err(e)) => eprintln!("triage: SIGHUP reload refused, old state kept: {e:#}"),
                    Err(e) => eprintln!("triage: SIGHUP reload task failed: {e}"),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = state;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
