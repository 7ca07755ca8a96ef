//! Hostile clients and bad deploys, over real sockets with the real model: slow headers and
//! bodies, CORS, TLS, customer text kept out of logs (masked when logging is on), startup
//! refused for broken knowledge-base and policy files, and reloads refused (old model
//! serving on) for corrupt weights, a config that does not match them and labels that do not
//! match the heads.

mod common;

use common::server::{base_args, client, post, spawn_with, start, Server};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use triage::cli::serve::ServeArgs;

fn read_all(tcp: &mut TcpStream) -> String {
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn slow_clients_are_cut_off_and_do_not_hold_the_server() {
    let s = start(ServeArgs {
        header_read_timeout_ms: Some(400),
        body_read_timeout_ms: Some(400),
        ..base_args()
    });
    // Forty clients trickling headers or bodies a byte at a time.
    let trickle: Vec<_> = (0..40)
        .map(|i| {
            let addr = s.addr;
            std::thread::spawn(move || {
                let mut tcp = TcpStream::connect(addr).unwrap();
                let start = Instant::now();
                let head = if i % 2 == 0 {
                    "POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"
                } else {
                    "POST /classify HTTP/1.1\r\nHost: x\r\nX-Slow: "
                };
                tcp.write_all(head.as_bytes()).unwrap();
                for _ in 0..30 {
                    std::thread::sleep(Duration::from_millis(100));
                    if tcp.write_all(b"a").is_err() {
                        break;
                    }
                }
                (i, read_all(&mut tcp), start.elapsed())
            })
        })
        .collect();
    // Meanwhile a normal client is served.
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let (status, _) = post(&s, "/classify", json!({"text": "where is my parcel"}));
    assert_eq!(status, 200);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    for h in trickle {
        let (i, reply, took) = h.join().unwrap();
        assert!(
            took < Duration::from_secs(8),
            "client {i} held for {took:?}"
        );
        if i % 2 == 0 {
            assert!(
                reply.starts_with("HTTP/1.1 408"),
                "body trickler {i}: {reply}"
            );
            assert!(reply.contains("body_read_timeout"), "{reply}");
        } else {
            // Headers never completed: the connection is closed (hyper may say 408 first).
            assert!(
                reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
                "header trickler {i}: {reply}"
            );
        }
    }
    assert_eq!(
        post(&s, "/classify", json!({"text": "still there?"})).0,
        200
    );
}

#[test]
fn cors_is_off_by_default_and_answers_configured_origins_only() {
    let origin_header = |s: &Server, origin: &str| {
        client()
            .get(s.url("/health"))
            .header("Origin", origin)
            .send()
            .unwrap()
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let plain = start(base_args());
    assert_eq!(origin_header(&plain, "https://shop.example"), None);
    let cors = start(ServeArgs {
        cors_origins: Some(vec!["https://shop.example".into()]),
        ..base_args()
    });
    assert_eq!(
        origin_header(&cors, "https://shop.example").as_deref(),
        Some("https://shop.example")
    );
    assert_eq!(origin_header(&cors, "https://evil.example"), None);
    // A preflight for the API is answered.
    let r = client()
        .request(reqwest::Method::OPTIONS, cors.url("/classify"))
        .header("Origin", "https://shop.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type,authorization",
        )
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert!(r.headers().contains_key("access-control-allow-methods"));
}

fn fixture(name: &str) -> PathBuf {
    common::repo().join("tests/fixtures").join(name)
}

#[test]
fn tls_serves_https_and_bad_certificate_files_are_refused_at_startup() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    let s = start(ServeArgs {
        tls_cert: Some(fixture("tls-test-cert.pem")),
        tls_key: Some(fixture("tls-test-key.pem")),
        ..base_args()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reply = rt.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(fixture("tls-test-ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let mut tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tls.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    });
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // Plain HTTP to the TLS port gets no answer.
    let mut tcp = TcpStream::connect(s.addr).unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(!read_all(&mut tcp).contains("200 OK"));
    // A key that is not PEM: refused before anything loads, naming the file.
    let err = triage::cli::serve::build_state(&ServeArgs {
        tls_cert: Some(fixture("tls-test-cert.pem")),
        tls_key: Some(fixture("kb-small.jsonl")),
        ..base_args()
    })
    .err()
    .expect("bad key must be refused");
    assert!(format!("{err:#}").contains("kb-small.jsonl"), "{err:#}");
}

#[test]
fn customer_text_stays_out_of_logs_and_is_masked_when_logging_is_on() {
    let text =
        "my email is jane.doe@example.com and card 4111 1111 1111 1111, order #A99812 where is it";
    for log_text in [false, true] {
        let flag = log_text.to_string();
        let child = spawn_with(&["--log-text", &flag], &[]);
        let r = client()
            .post(format!("http://{}/answer", child.addr))
            .json(&json!({"text": text}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        std::thread::sleep(Duration::from_millis(200));
        let log = child.log_text();
        for secret in ["jane.doe", "example.com", "4111", "A99812", "where is it"] {
            if log_text && secret == "where is it" {
                continue;
            }
            assert!(
                !log.contains(secret),
                "log_text={log_text}: '{secret}' in log:\n{log}"
            );
        }
        if log_text {
            assert!(log.contains("[email]") && log.contains("[card]"), "{log}");
            assert!(log.contains("where is it"), "{log}");
        }
        child.stop();
    }
}

/// Run `triage serve` with extra arguments and expect it to refuse to start.
fn refused_startup(args: &[&str]) -> String {
    common::default_model_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["serve", "--addr", "127.0.0.1:0", "--cache-dir"])
        .arg(common::cache_dir())
        .args(args)
        .current_dir(common::repo())
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn broken_faq_and_policy_files_are_refused_at_startup_naming_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let kb = dir.path().join("kb.jsonl");
    std::fs::write(
        &kb,
        "{\"id\":\"a\",\"question\":{\"en\":\"q\"},\"answer\":{\"en\":\"A\"}}\n{\"id\":\"b\",\"question\":{\"en\":7},\"answer\":{\"en\":\"B\"}}\n",
    )
    .unwrap();
    let err = refused_startup(&["--faq", kb.to_str().unwrap()]);
    assert!(
        err.contains("line 2") && err.contains("question.en"),
        "{err}"
    );

    // The policy with its text files, in a scratch folder.
    let policy_dir = dir.path().join("policy");
    copy_dir(&common::repo().join("models/policy"), &policy_dir);
    let policy = policy_dir.join("default.toml");
    let good = std::fs::read_to_string(&policy).unwrap();
    let bad = good.replacen("[[rules]]", "[[rules]]\nwhen_typo = 1", 1);
    assert_ne!(bad, good, "the default policy has rules");
    std::fs::write(&policy, &bad).unwrap();
    let err = refused_startup(&["--policy", policy.to_str().unwrap()]);
    assert!(err.contains("when_typo") && err.contains("line"), "{err}");
    let bad = good.replacen("max_turns = 10", "max_turns = \"ten\"", 1);
    assert_ne!(bad, good);
    std::fs::write(&policy, &bad).unwrap();
    let err = refused_startup(&["--policy", policy.to_str().unwrap()]);
    assert!(err.contains("max_turns") && err.contains("line"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn reloads_of_corrupt_or_mismatched_models_are_refused_and_the_old_one_serves() {
    let tmp = tempfile::tempdir().unwrap();
    // The encoder: its weights linked, its config copied so that it can be broken.
    let model = tmp.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    let real = common::default_model_dir();
    for f in std::fs::read_dir(&real).unwrap() {
        let f = f.unwrap();
        let name = f.file_name();
        if name == "config.json" {
            std::fs::copy(f.path(), model.join(&name)).unwrap();
        } else {
            std::os::unix::fs::symlink(f.path(), model.join(&name)).unwrap();
        }
    }
    let heads = tmp.path().join("heads");
    copy_dir(&common::default_heads_dir(), &heads);
    let key = tmp.path().join("admin.key");
    std::fs::write(&key, "k\n").unwrap();
    let s = start(ServeArgs {
        model: Some(model.to_string_lossy().into_owned()),
        heads: Some(heads.clone()),
        admin_key_file: Some(key),
        ..base_args()
    });
    let reload = || {
        let r = client()
            .post(s.url("/admin/reload/model"))
            .bearer_auth("k")
            .send()
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    let first = post(&s, "/classify", json!({"text": "where is my order #123?"})).1;
    let generation = s.state.shared.current_generation();
    let pristine = |p: &Path| std::fs::read(p).unwrap();
    type Corrupt = Box<dyn Fn(&[u8]) -> Vec<u8>>;
    let cases: Vec<(&str, PathBuf, Corrupt)> = vec![
        (
            "garbage heads weights",
            heads.join("heads.safetensors"),
            Box::new(|b: &[u8]| b.iter().map(|x| x ^ 0x5a).collect()),
        ),
        (
            "truncated adapters",
            heads.join("adapters.safetensors"),
            Box::new(|b: &[u8]| b[..b.len() / 3].to_vec()),
        ),
        (
            "a config that does not match the weights",
            model.join("config.json"),
            Box::new(|b: &[u8]| {
                let mut c: Value = serde_json::from_slice(b).unwrap();
                c["hidden_size"] = json!(512);
                serde_json::to_vec(&c).unwrap()
            }),
        ),
        (
            "labels that do not match the heads",
            heads.join("heads.json"),
            Box::new(|b: &[u8]| {
                let mut m: Value = serde_json::from_slice(b).unwrap();
                m["heads"]["intent"]["labels"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("extra_label"));
                serde_json::to_vec(&m).unwrap()
            }),
        ),
    ];
    for (what, file, corrupt) in cases {
        let good = pristine(&file);
        std::fs::write(&file, corrupt(&good)).unwrap();
        let (status, v) = reload();
        assert_eq!(status, 422, "{what}: {v}");
        assert_eq!(v["error"]["code"], "reload_failed", "{what}");
        assert!(
            v["error"]["message"].as_str().is_some_and(|m| m.len() > 20),
            "{what}: {v}"
        );
        assert_eq!(s.state.shared.current_generation(), generation, "{what}");
        let (status, again) = post(&s, "/classify", json!({"text": "where is my order #123?"}));
        assert_eq!(status, 200, "{what}");
        assert_eq!(again, first, "{what}: the old model must answer as before");
        std::fs::write(&file, good).unwrap();
    }
    assert_eq!(reload().0, 200);
}

/// Run `triage load --json` against a server and return its report.
fn run_load(s: &Server, args: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triage"))
        .arg("load")
        .args(args)
        .args(["--json", "--addr"])
        .arg(s.addr.to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_short_soak_loses_nothing_and_conversation_memory_stays_capped() {
    // A policy whose conversation memory holds at most 20 conversations.
    let dir = tempfile::tempdir().unwrap();
    let policy_dir = dir.path().join("policy");
    copy_dir(&common::repo().join("models/policy"), &policy_dir);
    let policy = policy_dir.join("default.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    let capped = text.replacen("max_conversations = 100000", "max_conversations = 20", 1);
    assert_ne!(capped, text);
    std::fs::write(&policy, capped).unwrap();
    let s = start(ServeArgs {
        policy: Some(policy),
        ..base_args()
    });
    let r = run_load(
        &s,
        &[
            "--route",
            "mixed",
            "--concurrency",
            "16",
            "--duration-s",
            "4",
            "--warmup-s",
            "1",
            "--report-every-s",
            "1",
            "--conversations",
            "200",
        ],
    );
    let summary = &r["summary"];
    assert!(summary["ok"].as_u64().unwrap() > 10, "{r}");
    assert_eq!(summary["mismatched"], 0, "{r}");
    assert_eq!(summary["io_errors"], 0, "{r}");
    let statuses = summary["statuses"].as_object().unwrap();
    assert!(statuses.keys().all(|k| k == "200"), "{statuses:?}");
    let samples = r["samples"].as_array().unwrap();
    assert!(samples.len() >= 3, "{r}");
    for sample in samples {
        assert!(sample["server_rss_mb"].as_f64().unwrap() > 10.0, "{sample}");
        assert!(
            sample["conversations"].as_f64().unwrap() <= 20.0,
            "{sample}"
        );
    }
}

#[test]
fn overload_is_shed_with_fast_429s_and_the_server_recovers_at_once() {
    // A queue of 8 texts and 48 clients: most requests find it full.
    let s = start(ServeArgs {
        queue_depth: Some(8),
        max_batch_size: Some(8),
        ..base_args()
    });
    let r = run_load(
        &s,
        &[
            "--route",
            "classify",
            "--concurrency",
            "48",
            "--duration-s",
            "3",
            "--warmup-s",
            "1",
        ],
    );
    let summary = &r["summary"];
    let statuses = summary["statuses"].as_object().unwrap();
    assert!(
        statuses.get("429").is_some_and(|n| n.as_u64().unwrap() > 0),
        "{r}"
    );
    assert!(
        statuses.get("200").is_some_and(|n| n.as_u64().unwrap() > 0),
        "{r}"
    );
    assert!(
        statuses.keys().all(|k| k == "200" || k == "429"),
        "only served or shed: {statuses:?}"
    );
    assert_eq!(summary["mismatched"], 0, "{r}");
    assert_eq!(summary["io_errors"], 0, "{r}");
    // Shedding answers in milliseconds (generous for a loaded 2-core CI box).
    assert!(summary["shed_p50_ms"].as_f64().unwrap() < 50.0, "{r}");
    // Load gone: served at once.
    let t = Instant::now();
    assert_eq!(
        post(&s, "/classify", json!({"text": "back to normal?"})).0,
        200
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}
