//! The server over real HTTP on loopback with the real model: both routes, batching under
//! concurrent clients, bad input, overload, deadlines, admin reloads (also under load and
//! when they fail), and graceful shutdown on SIGTERM.

mod common;

use common::server::{base_args, client, post, spawn_server, start, Server};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use triage::cli::serve::ServeArgs;

/// One shared server with the default knowledge base and default limits.
fn shared() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        start(ServeArgs {
            faq: Some(common::repo().join("models/faq/default-kb.jsonl")),
            ..base_args()
        })
    })
}

#[test]
fn classify_answers_every_text_in_order() {
    let s = shared();
    let texts = [
        "where is my order #A1029?",
        "我要退款，钱什么时候到账？",
        "hola buenos días",
    ];
    let (status, body) = post(s, "/classify", json!({"texts": texts}));
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for (r, t) in results.iter().zip(texts) {
        assert_eq!(r["text"], t);
        assert!(triage::taxonomy::INTENTS.contains(&r["intent"]["label"].as_str().unwrap()));
        assert_eq!(r["intents"].as_array().unwrap().len(), 3);
        assert_eq!(r["emotions"].as_array().unwrap().len(), 5);
    }
    assert_eq!(results[1]["language"], "zh");
    assert_eq!(results[2]["language"], "es");
    // Single "text" form and top_k.
    let (status, body) = post(s, "/classify", json!({"text": "hello", "top_k": 5}));
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["intents"].as_array().unwrap().len(), 5);
}

#[test]
fn concurrent_clients_get_the_same_results_as_one_at_a_time() {
    let s = shared();
    let texts: Vec<String> = (0..24)
        .map(|i| match i % 4 {
            0 => format!("where is my parcel number {i}?"),
            1 => format!("I want to return the shoes from order {i}, they are too small"),
            2 => format!("my card was charged twice for order #{i}!!"),
            _ => format!("mi pedido {i} llegó roto"),
        })
        .collect();
    let one_by_one: Vec<Value> = texts
        .iter()
        .map(|t| post(s, "/classify", json!({"text": t})).1["results"][0].clone())
        .collect();
    let handles: Vec<_> = texts
        .iter()
        .cloned()
        .map(|t| {
            let url = s.url("/classify");
            std::thread::spawn(move || {
                client()
                    .post(url)
                    .json(&json!({"text": t}))
                    .send()
                    .unwrap()
                    .json::<Value>()
                    .unwrap()
            })
        })
        .collect();
    let concurrent: Vec<Value> = handles
        .into_iter()
        .map(|h| h.join().unwrap()["results"][0].clone())
        .collect();
    for (a, b) in one_by_one.iter().zip(&concurrent) {
        assert_eq!(a["text"], b["text"]);
        assert_eq!(a["intent"]["label"], b["intent"]["label"]);
        let (x, y) = (
            a["intent"]["score"].as_f64().unwrap(),
            b["intent"]["score"].as_f64().unwrap(),
        );
        assert!((x - y).abs() < 1e-3, "{x} vs {y} for {}", a["text"]);
        assert_eq!(a["emotion"]["label"], b["emotion"]["label"]);
    }
    let batches = s
        .state
        .batcher
        .stats
        .batches
        .load(std::sync::atomic::Ordering::Relaxed);
    let texts_run = s
        .state
        .batcher
        .stats
        .texts
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        texts_run > batches,
        "concurrent requests were batched together ({texts_run} texts in {batches} batches)"
    );
}

#[test]
fn answer_decides_with_the_default_policy() {
    let s = shared();
    let (status, b) = post(
        s,
        "/answer",
        json!({"text": "How many days do I have to send an item back?"}),
    );
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["action"]["type"], "answer");
    assert_eq!(b["answer"]["faq_id"], "faq-return-window");
    assert_eq!(b["answer"]["language"], "en");
    assert_eq!(b["candidates"].as_array().unwrap().len(), 3);
    assert!(b["reason"].is_null() && b["action"]["reason"].is_string());

    // The customer's language when the entry has it.
    let (_, b) = post(
        s,
        "/answer",
        json!({"text": "¿Cuántos días tengo para devolver un producto?"}),
    );
    assert_eq!(b["language"], "es");
    assert_eq!(b["answer"]["language"], "es");

    // Anger escalates at once, urgently; the next negative turn escalates too.
    let (_, b) = post(
        s,
        "/answer",
        json!({"text": "THIS IS RIDICULOUS!!! THIRD TIME I ASK, WHERE IS MY PACKAGE??? I'LL SUE YOU", "conversation_id": "t-angry"}),
    );
    assert_eq!(b["emotion"]["label"], "angry", "{b}");
    assert_eq!(b["action"]["type"], "escalate");
    assert_eq!(b["action"]["priority"], "urgent");
    assert_eq!(b["action"]["reason"], "angry_customer");
    assert!(b["answer"].is_null());
    let (_, b2) = post(
        s,
        "/answer",
        json!({"text": "still nothing arrived, I'm really disappointed", "conversation_id": "t-angry"}),
    );
    assert_eq!(b2["action"]["type"], "escalate", "{b2}");
    assert_eq!(b2["conversation"]["turns"], 2);
    assert_eq!(b2["conversation"]["summary"].as_array().unwrap().len(), 2);

    // Asking for a human escalates.
    let (_, b) = post(
        s,
        "/answer",
        json!({"text": "can I talk to a real person please"}),
    );
    assert_eq!(b["intent"]["label"], "human_agent", "{b}");
    assert_eq!(b["action"]["type"], "escalate");
}

#[test]
fn bad_input_gets_a_json_4xx_naming_the_problem_and_the_server_stays_healthy() {
    let s = shared();
    let long = "a".repeat(5000);
    let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "/classify",
            br#"{"texts": "not a list"}"#.to_vec(),
            400,
            "invalid type",
        ),
        (
            "/classify",
            br#"{"texts": [1, 2]}"#.to_vec(),
            400,
            "invalid type",
        ),
        (
            "/classify",
            br#"{"texts": []}"#.to_vec(),
            400,
            "'texts' is empty",
        ),
        (
            "/classify",
            br#"{"texts": ["ok", "  "]}"#.to_vec(),
            400,
            "texts[1] is empty",
        ),
        ("/classify", br#"{}"#.to_vec(), 400, "missing field 'texts'"),
        (
            "/classify",
            br#"{"texts": ["a"], "colour": 1}"#.to_vec(),
            400,
            "unknown field",
        ),
        (
            "/classify",
            serde_json::to_vec(&json!({"text": long})).unwrap(),
            413,
            "max_chars_per_text",
        ),
        (
            "/classify",
            serde_json::to_vec(&json!({"texts": many})).unwrap(),
            413,
            "max_texts_per_request",
        ),
        (
            "/classify",
            b"{\"text\": \"caf\xff\"}".to_vec(),
            400,
            "UTF-8",
        ),
        ("/classify", b"not json".to_vec(), 400, "invalid JSON"),
        ("/classify", Vec::new(), 400, "empty"),
        ("/answer", br#"{"text": 5}"#.to_vec(), 400, "invalid type"),
        (
            "/answer",
            br#"{"conversation_id": "x"}"#.to_vec(),
            400,
            "missing field `text`",
        ),
        ("/answer", br#"{"text": ""}"#.to_vec(), 400, "is empty"),
    ];
    for (path, body, want, needle) in cases {
        let r = client()
            .post(s.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        assert!(r.headers().contains_key("x-request-id"));
        let v: Value = r.json().unwrap_or(Value::Null);
        assert_eq!(status, want, "{path} {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{path}: '{msg}' should mention '{needle}'"
        );
        assert!(v["error"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()));
    }
    // A body over max_body_bytes is refused from its Content-Length, before it is read.
    {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(s.addr).unwrap();
        write!(tcp, "POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", 2 << 20).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = String::new();
        let _ = tcp.read_to_string(&mut buf);
        assert!(buf.starts_with("HTTP/1.1 413"), "{buf}");
        assert!(buf.contains("max_body_bytes"), "{buf}");
    }
    let r = client().get(s.url("/nope")).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        client()
            .get(s.url("/health"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let (status, _) = post(s, "/classify", json!({"text": "still alive?"}));
    assert_eq!(status, 200);
}

#[test]
fn info_metrics_openapi_ready() {
    let s = shared();
    let info: Value = client().get(s.url("/info")).send().unwrap().json().unwrap();
    assert_eq!(info["labels"]["intents"].as_array().unwrap().len(), 20);
    assert_eq!(info["labels"]["emotions"].as_array().unwrap().len(), 5);
    assert!(info["limits"]["max_texts_per_request"].is_number());
    assert!(info["batching"]["max_batch_tokens"].is_number());
    assert_eq!(
        info["policy"]["clarify_threshold"]
            .as_f64()
            .map(|x| (x * 100.0).round()),
        Some(70.0)
    );
    let ready = client().get(s.url("/ready")).send().unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    post(s, "/classify", json!({"text": "metrics please"}));
    let m = client()
        .get(s.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        m.contains("triage_requests_total{route=\"/classify\",status=\"200\"}"),
        "{m}"
    );
    assert!(m.contains("triage_batches_total"));
    let o: Value = client()
        .get(s.url("/openapi.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(o["paths"]["/answer"]["post"].is_object());
}

#[test]
fn a_full_queue_answers_429_with_retry_after_at_once() {
    let s = start(ServeArgs {
        queue_depth: Some(4),
        ..base_args()
    });
    let texts: Vec<String> = (0..10).map(|i| format!("text {i}")).collect();
    let t0 = std::time::Instant::now();
    let r = client()
        .post(s.url("/classify"))
        .json(&json!({"texts": texts}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(t0.elapsed() < Duration::from_secs(2));
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "overloaded");
    // Small requests still pass.
    assert_eq!(post(&s, "/classify", json!({"text": "hi"})).0, 200);
}

#[test]
fn requests_past_their_deadline_get_503() {
    let s = start(ServeArgs {
        request_timeout_ms: Some(1),
        ..base_args()
    });
    let texts: Vec<String> = (0..32)
        .map(|i| format!("a fairly long message number {i} about a parcel that never came"))
        .collect();
    let (status, v) = post(&s, "/classify", json!({"texts": texts}));
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "deadline_exceeded");
}

fn admin_server(heads: PathBuf) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("admin.key");
    std::fs::write(&key, "s3cret-key\n").unwrap();
    let s = start(ServeArgs {
        admin_key_file: Some(key),
        heads: Some(heads),
        ..base_args()
    });
    (s, dir)
}

fn admin(s: &Server, what: &str, key: Option<&str>) -> (u16, Value) {
    let mut r = client().post(s.url(&format!("/admin/reload/{what}")));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r.send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

#[test]
fn admin_reloads_need_the_key_and_keep_serving_under_load() {
    let (s, _dir) = admin_server(common::default_heads_dir());
    assert_eq!(admin(&s, "policy", None).0, 401);
    assert_eq!(admin(&s, "policy", Some("wrong")).0, 401);
    assert_eq!(shared_admin_disabled(), 404);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = s.url("/classify");
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (url, stop) = (url.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = client()
                        .post(&url)
                        .json(&json!({"text": format!("where is my order {i}")}))
                        .send()
                        .unwrap();
                    statuses.push(r.status().as_u16());
                }
                statuses
            })
        })
        .collect();
    let mut generations = Vec::new();
    for what in ["model", "faq", "policy", "model"] {
        let (status, v) = admin(&s, what, Some("s3cret-key"));
        assert_eq!(status, 200, "{what}: {v}");
        generations.push(v["generation"].as_u64().unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses: Vec<u16> = load.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert!(statuses.len() >= 4);
    assert!(
        statuses.iter().all(|&c| c == 200),
        "failed during reload: {statuses:?}"
    );
    assert!(generations.windows(2).all(|w| w[1] > w[0]));
}

fn shared_admin_disabled() -> u16 {
    admin(shared(), "model", Some("anything")).0
}

#[test]
fn a_failing_reload_changes_nothing_and_says_why() {
    let heads = tempfile::tempdir().unwrap();
    for f in ["heads.json", "heads.safetensors", "adapters.safetensors"] {
        let src = common::default_heads_dir().join(f);
        if src.exists() {
            std::fs::copy(&src, heads.path().join(f)).unwrap();
        }
    }
    let (s, _dir) = admin_server(heads.path().to_path_buf());
    let before = s.state.shared.current_generation();
    // Truncate the heads' weights: the reload must be refused.
    let w = heads.path().join("heads.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let (status, v) = admin(&s, "model", Some("s3cret-key"));
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "reload_failed");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("heads"),
        "{v}"
    );
    assert_eq!(s.state.shared.current_generation(), before);
    assert_eq!(
        post(&s, "/classify", json!({"text": "still serving?"})).0,
        200
    );
}

#[test]
fn a_panic_in_a_batch_fails_only_that_batch_with_500_and_the_server_keeps_serving() {
    // Pick a token that only the poisoned text contains.
    let enc = triage::model::Encoder::load(&common::default_model_dir(), &candle_core::Device::Cpu)
        .unwrap();
    let poison = "Zyxwvutqponm";
    let ids = enc.tokenize(&[poison, "where is my order"]).unwrap();
    let token = *ids[0]
        .ids
        .iter()
        .filter(|t| !ids[1].ids.contains(t))
        .max()
        .unwrap();
    let (mut child, addr) = spawn_server(&[("TRIAGE_TEST_PANIC_TOKEN", token.to_string())]);
    let url = format!("http://{addr}/classify");
    let r = client()
        .post(&url)
        .json(&json!({"text": poison}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "internal");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("panic"),
        "{v}"
    );
    assert!(
        v["error"]["request_id"]
            .as_str()
            .is_some_and(|s| s != "-" && !s.is_empty()),
        "{v}"
    );
    for _ in 0..3 {
        let r = client()
            .post(&url)
            .json(&json!({"text": "where is my order"}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn public_routes_can_require_api_keys() {
    let (mut child, addr) = spawn_server(&[("TRIAGE_API_KEYS", "k1, k2".to_string())]);
    let url = format!("http://{addr}/classify");
    let body = json!({"text": "hello"});
    assert_eq!(
        client()
            .post(&url)
            .json(&body)
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        client()
            .post(&url)
            .bearer_auth("nope")
            .json(&body)
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        client()
            .post(&url)
            .bearer_auth("k2")
            .json(&body)
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        client()
            .get(format!("http://{addr}/health"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn sigterm_finishes_admitted_requests_and_exits_zero() {
    let (mut child, addr) = spawn_server(&[]);
    let texts: Vec<String> = (0..16)
        .map(|i| format!("my parcel {i} has not arrived, what is going on?"))
        .collect();
    let inflight: Vec<_> = (0..6)
        .map(|_| {
            let (url, texts) = (format!("http://{addr}/classify"), texts.clone());
            std::thread::spawn(move || {
                client()
                    .post(url)
                    .json(&json!({"texts": texts}))
                    .send()
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for h in inflight {
        assert_eq!(
            h.join().unwrap().expect("admitted request was dropped"),
            200
        );
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
}
