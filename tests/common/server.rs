//! Starting the real server for integration tests: in-process on a loopback port
//! ([`start`]) or as a `triage serve` child process ([`spawn_server`]), and small clients.

use reqwest::blocking::Client;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use triage::cli::serve::{build_state, Built, ServeArgs};
use triage::http::{serve, AppState};

pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Settings for a test server: the real default model, a small knowledge base.
pub fn base_args() -> ServeArgs {
    super::default_model_dir();
    ServeArgs {
        addr: Some("127.0.0.1:0".into()),
        cache_dir: Some(super::cache_dir()),
        heads: Some(super::default_heads_dir()),
        policy: Some(super::repo().join("models/policy/default.toml")),
        faq: Some(super::repo().join("tests/fixtures/kb-small.jsonl")),
        ..ServeArgs::default()
    }
}

/// Serve in this process on its own runtime thread.
pub fn start(args: ServeArgs) -> Server {
    let Built { state, addr, net } = build_state(&args).expect("server state");
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = state.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (otx, orx) = tokio::sync::oneshot::channel();
            tokio::spawn(serve(s2, addr, Some(otx), net));
            tx.send(orx.await.unwrap()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    Server {
        addr: rx.recv().unwrap(),
        state,
    }
}

pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

pub fn post(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = client().post(s.url(path)).json(&body).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// A `triage serve` child process and everything it wrote on stderr so far.
pub struct Child {
    pub process: std::process::Child,
    pub addr: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Child {
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
    pub fn stop(mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Start `triage serve` as a child process with extra arguments and environment; returns
/// once it listens.
pub fn spawn_with(args: &[&str], envs: &[(&str, String)]) -> Child {
    use std::io::BufRead;
    super::default_model_dir();
    let repo = super::repo();
    let mut process = std::process::Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .arg("--faq")
        .arg(repo.join("tests/fixtures/kb-small.jsonl"))
        .arg("--cache-dir")
        .arg(super::cache_dir())
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(&repo)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = process.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(a) = line.split("listening on ").nth(1) {
                let a = a.trim().trim_start_matches("http://");
                let _ = tx.send(a.trim_start_matches("https://").to_string());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("server did not start");
    Child { process, addr, log }
}

/// [`spawn_with`] without extra arguments; returns the process and its address.
pub fn spawn_server(envs: &[(&str, String)]) -> (std::process::Child, String) {
    let c = spawn_with(&[], envs);
    (c.process, c.addr)
}
