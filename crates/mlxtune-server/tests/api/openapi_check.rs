//! Responses checked against the server's own OpenAPI document: for a request's method,
//! path and status, the document must describe the response, and the body must validate
//! against that schema (JSON Schema 2020-12, as OpenAPI 3.1 uses). So the document cannot
//! drift from what the server sends.

use serde_json::{json, Value};

pub struct OpenApiCheck {
    doc: Value,
}

impl OpenApiCheck {
    pub fn new(doc: Value) -> OpenApiCheck {
        assert!(doc["paths"].is_object(), "not an OpenAPI document: {doc}");
        OpenApiCheck { doc }
    }

    /// The documented path template (`/v1/fine_tuning/jobs/{id}`) that `path` matches.
    fn template_of(&self, path: &str) -> String {
        let path = path.split('?').next().unwrap_or(path);
        let parts: Vec<&str> = path.split('/').collect();
        let paths = self.doc["paths"].as_object().unwrap();
        let matches = |t: &str| {
            let tp: Vec<&str> = t.split('/').collect();
            tp.len() == parts.len()
                && tp
                    .iter()
                    .zip(&parts)
                    .all(|(a, b)| a == b || (a.starts_with('{') && a.ends_with('}')))
        };
        // A literal segment wins over a parameter (`/jobs/x/cancel` before `/jobs/{id}`).
        let mut found: Vec<&String> = paths.keys().filter(|t| matches(t)).collect();
        found.sort_by_key(|t| t.matches('{').count());
        found
            .first()
            .unwrap_or_else(|| panic!("{path} is not in the OpenAPI document"))
            .to_string()
    }

    /// Panics unless the document describes this response and `body` validates against it.
    pub fn check_response(&self, method: &str, path: &str, status: u16, body: &Value) {
        let template = self.template_of(path);
        let op = &self.doc["paths"][&template][method];
        assert!(op.is_object(), "{method} {template} is not documented");
        let response = &op["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {template}: status {status} is not documented (body {body})"
        );
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template} {status}: no JSON schema"
        );
        self.validate(schema, body, &format!("{method} {template} {status}"));
    }

    /// A WebSocket message of a job stream: a `Snapshot` first, then `JobEvent`s.
    pub fn check_stream_message(&self, message: &Value) {
        let name = if message["type"] == "snapshot" {
            "Snapshot"
        } else {
            "JobEvent"
        };
        let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
        self.validate(&schema, message, &format!("stream message ({name})"));
    }

    /// Panics unless `value` validates against the named component schema.
    pub fn check_schema(&self, name: &str, value: &Value) {
        let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
        self.validate(&schema, value, name);
    }

    fn validate(&self, schema: &Value, body: &Value, what: &str) {
        let mut root = schema.as_object().unwrap().clone();
        root.insert("components".into(), self.doc["components"].clone());
        let validator = jsonschema::draft202012::new(&Value::Object(root))
            .unwrap_or_else(|e| panic!("{what}: the document's schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: the response does not match the OpenAPI document:\n  {}\nbody: {body}",
            errors.join("\n  ")
        );
    }
}

#[test]
fn a_body_that_breaks_the_schema_is_caught() {
    let check = OpenApiCheck::new(mlxtune_server::openapi::document());
    let good = json!({ "error": { "type": "not_found_error", "code": "not_found", "message": "job x not found", "param": null } });
    check.check_response("get", "/v1/fine_tuning/jobs/x", 404, &good);
    let bad = json!({ "error": { "code": 404, "message": "job x not found" } });
    let caught = std::panic::catch_unwind(|| {
        check.check_response("get", "/v1/fine_tuning/jobs/x", 404, &bad)
    });
    assert!(caught.is_err(), "a numeric code must not validate");
    let undocumented = std::panic::catch_unwind(|| {
        check.check_response("get", "/v1/fine_tuning/jobs/x", 418, &good)
    });
    assert!(
        undocumented.is_err(),
        "an undocumented status must not pass"
    );
}
