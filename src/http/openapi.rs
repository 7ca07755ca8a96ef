//! The OpenAPI 3 document served at `/openapi.json`.

use serde_json::{json, Value};

pub fn document() -> Value {
    let scored = json!({"type": "object", "properties": {"label": {"type": "string"}, "score": {"type": "number"}}, "required": ["label", "score"]});
    let error = json!({"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "request_id": {"type": "string"}}}}});
    let err = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let errors = json!({
        "400": err("Malformed body or invalid field (the message names it)"),
        "401": err("Missing or wrong API key"),
        "413": err("Body, text or text count over the configured limit"),
        "429": err("Queue full; retry after the Retry-After header"),
        "503": err("Deadline exceeded or model unavailable"),
    });
    let merged = |ok: Value| {
        let mut m = errors.as_object().cloned().unwrap_or_default();
        m.insert("200".into(), ok);
        Value::Object(m)
    };
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Triage", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Intent, emotion, FAQ answer and escalation decision for customer-service messages in twelve languages."},
        "paths": {
            "/classify": {"post": {
                "summary": "Classify one or more texts (intent, emotion, sentiment, language)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "properties": {
                    "texts": {"type": "array", "items": {"type": "string"}}, "text": {"type": "string"},
                    "top_k": {"type": "integer", "minimum": 1, "maximum": 100}, "language": {"type": "string"}}}}}},
                "responses": merged(json!({"description": "One result per text, in input order", "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "model": {"type": "string"},
                    "results": {"type": "array", "items": {"type": "object", "properties": {
                        "text": {"type": "string"}, "intent": {"$ref": "#/components/schemas/Scored"},
                        "intents": {"type": "array", "items": {"$ref": "#/components/schemas/Scored"}},
                        "emotion": {"$ref": "#/components/schemas/Scored"},
                        "emotions": {"type": "array", "items": {"$ref": "#/components/schemas/Scored"}},
                        "sentiment": {"type": "string", "enum": ["negative", "neutral", "positive"]},
                        "language": {"type": "string"}, "tokens": {"type": "integer"}, "truncated": {"type": "boolean"}}}}}}}}}))
            }},
            "/answer": {"post": {
                "summary": "Classify a message, find the FAQ answer and decide: answer, clarify or escalate",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "required": ["text"], "properties": {
                    "text": {"type": "string"}, "conversation_id": {"type": "string"}, "language": {"type": "string"}}}}}},
                "responses": merged(json!({"description": "Decision and answer", "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "intent": {"$ref": "#/components/schemas/Scored"}, "emotion": {"$ref": "#/components/schemas/Scored"},
                    "language": {"type": "string"},
                    "action": {"type": "object", "properties": {"type": {"type": "string", "enum": ["answer", "clarify", "escalate"]},
                        "priority": {"type": "string", "enum": ["normal", "high", "urgent"]}, "queue": {"type": "string"}, "reason": {"type": "string"}}},
                    "answer": {"nullable": true, "type": "object", "properties": {"faq_id": {"type": "string"}, "text": {"type": "string"}, "language": {"type": "string"}, "score": {"type": "number", "description": "probability that this entry answers the message (the FAQ ranker)"}, "similarity": {"type": "number", "description": "best cosine to the entry's questions"}}},
                    "reply": {"nullable": true, "type": "object"},
                    "candidates": {"type": "array", "items": {"type": "object", "properties": {"faq_id": {"type": "string"}, "score": {"type": "number"}, "similarity": {"type": "number"}}}},
                    "conversation": {"type": "object"}}}}}}))
            }},
            "/health": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
            "/ready": {"get": {"summary": "Readiness (model loaded, model thread running)", "responses": {"200": {"description": "ready"}, "503": err("not ready")}}},
            "/info": {"get": {"summary": "Model id, labels, versions, limits", "responses": {"200": {"description": "info"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition format"}}}},
            "/admin/reload/model": {"post": {"summary": "Reload the model (and re-embed the FAQ); admin key", "security": [{"bearer": []}], "responses": {"200": {"description": "reloaded"}, "401": err("no or wrong key"), "404": err("admin disabled"), "422": err("reload refused; old state kept")}}},
            "/admin/reload/faq": {"post": {"summary": "Reload the knowledge base; admin key", "security": [{"bearer": []}], "responses": {"200": {"description": "reloaded"}, "422": err("reload refused; old state kept")}}},
            "/admin/reload/policy": {"post": {"summary": "Reload the policy; admin key", "security": [{"bearer": []}], "responses": {"200": {"description": "reloaded"}, "422": err("reload refused; old state kept")}}}
        },
        "components": {
            "schemas": {"Scored": scored, "Error": error},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
    })
}
