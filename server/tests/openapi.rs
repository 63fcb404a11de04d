//! docs/openapi.json against the code: its error codes are `ErrorCode::ALL`, it is served
//! as is at /v1/openapi.json, and every body a running server (against a real Dovecot)
//! answers with, and every registration body sent to it, validates against the schema the
//! document gives for that operation and status.

mod common;

use std::net::SocketAddr;

use common::{http, loopback_config, Reply, TempDir};
use push::testing::{Sink, Subscriber};
use serde_json::{json, Value};
use server::error_code::ErrorCode;
use server::{App, Config};
use testkit::{Dovecot, DovecotConfig};

const DOCUMENT: &str = include_str!("../../docs/openapi.json");
const TOKEN: &str = "openapi-test-token-0123456789";

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON")
}

/// `~` and `/` escaped for a JSON pointer segment (RFC 6901).
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// A validator for the schema at `pointer` in the document. The document itself is the
/// root resource, so its `#/components/...` references resolve; its OpenAPI members are
/// keywords JSON Schema ignores.
fn validator_at(pointer: &str) -> jsonschema::Validator {
    let mut root = document();
    assert!(
        root.pointer(pointer).is_some(),
        "docs/openapi.json has nothing at {pointer}"
    );
    // A URI fragment: the braces of a path template are percent-encoded (RFC 3986).
    let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
    root["$ref"] = Value::from(format!("#{fragment}"));
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema".into();
    jsonschema::draft202012::new(&root)
        .unwrap_or_else(|e| panic!("the schema at {pointer} does not compile: {e}"))
}

fn assert_valid(pointer: &str, instance: &Value, what: &str) {
    let validator = validator_at(pointer);
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: {instance} against {pointer}: {errors:#?}"
    );
}

/// Checks `reply` against the response the document gives for `method` on `template` and
/// the reply's status: the status must be documented, and the body match its schema (or
/// be empty where the document gives no content).
fn check_response(method: &str, template: &str, reply: &Reply) {
    let doc = document();
    let operation = format!("/paths/{}/{method}", escape(template));
    let at = if doc.pointer(&operation).is_some() {
        format!("{operation}/responses/{}", reply.status)
    } else {
        // A method the path does not list: the one shared answer.
        assert_eq!(reply.status, 405, "{method} {template}: not an operation");
        "/components/responses/MethodNotAllowed".to_owned()
    };
    let response = doc.pointer(&at).unwrap_or_else(|| {
        panic!(
            "{} {template} answered {}: undocumented",
            method, reply.status
        )
    });
    let what = format!("{method} {template} {}", reply.status);
    match response.pointer("/content/application~1json/schema") {
        Some(_) => {
            let body: Value = serde_json::from_str(&reply.body)
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", reply.body));
            assert_valid(
                &format!("{at}/content/application~1json/schema"),
                &body,
                &what,
            );
        }
        None if response.pointer("/content").is_none() => {
            assert!(
                reply.body.is_empty(),
                "{what}: a body where none is documented"
            )
        }
        None => {}
    }
}

/// Validates a request body against the operation's request schema; returns the verdict.
fn request_is_valid(template: &str, method: &str, body: &Value) -> bool {
    let pointer = format!(
        "/paths/{}/{method}/requestBody/content/application~1json/schema",
        escape(template)
    );
    validator_at(&pointer).is_valid(body)
}

#[test]
fn the_error_codes_are_error_code_all_with_their_statuses() {
    let doc = document();
    let schema = &doc["components"]["schemas"]["ErrorCode"];
    let documented: Vec<&str> = schema["enum"]
        .as_array()
        .expect("ErrorCode has an enum")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let code: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        documented, code,
        "docs/openapi.json ErrorCode vs ErrorCode::ALL"
    );
    let statuses = schema["x-statuses"].as_object().expect("x-statuses");
    assert_eq!(statuses.len(), ErrorCode::ALL.len());
    for c in ErrorCode::ALL {
        assert_eq!(statuses[c.as_str()], c.status(), "{c}");
    }
    // Each error response of an operation names only codes of its status.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(responses) = op.get("responses").and_then(Value::as_object) else {
                continue;
            };
            for (status, response) in responses {
                let text = response["description"].as_str().unwrap_or_default();
                for c in ErrorCode::ALL {
                    if text.contains(&format!("`{}`", c.as_str())) {
                        assert_eq!(
                            status,
                            &c.status().to_string(),
                            "{method} {path}: {c} documented under {status}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_document_is_openapi_3_1_and_every_schema_compiles() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        validator_at(&format!("/components/schemas/{name}"));
    }
    // A schema that rejects nothing would let the document drift unseen.
    let error = validator_at("/components/schemas/Error");
    assert!(!error.is_valid(&json!({"error": "no_such_code", "message": "x"})));
    assert!(!error.is_valid(&json!({"error": "not_found"})));
    assert!(error.is_valid(&json!({"error": "not_found", "message": "x"})));
}

struct Api {
    addr: SocketAddr,
}

impl Api {
    fn call(&self, method: &str, template: &str, path: &str, body: &str) -> Reply {
        let auth = format!("Authorization: Bearer {TOKEN}\r\n");
        let reply = http(self.addr, method, path, body, &auth);
        check_response(&method.to_ascii_lowercase(), template, &reply);
        reply
    }

    fn register(&self, body: &Value) -> Reply {
        self.call(
            "POST",
            "/v1/subscriptions",
            "/v1/subscriptions",
            &body.to_string(),
        )
    }
}

fn registration(port: u16, password: &str, new_mail: Value, reconnect: &str) -> Value {
    json!({
        "imap": {"host": "127.0.0.1", "port": port, "security": "tls",
                 "username": "olga", "password": password},
        "device_id": "phone-1",
        "mailboxes": ["INBOX"],
        "new_mail": new_mail,
        "reconnect": {"endpoint": reconnect},
        "tag": "work",
    })
}

/// Dovecot with olga's account, a push sink, and a temp dir.
fn olga() -> (Dovecot, Sink, TempDir) {
    let dovecot =
        Dovecot::start(DovecotConfig::default().with_user("olga", "secret-olga")).unwrap();
    (dovecot, Sink::start(), TempDir::new())
}

/// A server for `dovecot` that wants the token, with `tune` applied to its config.
fn start(dir: &TempDir, dovecot: &Dovecot, tune: impl FnOnce(&mut Config)) -> (App, Api) {
    let mut config = loopback_config(dir, Some(dovecot));
    config.api_token = Some(TOKEN.into());
    tune(&mut config);
    let app = App::start(config).unwrap();
    let api = Api {
        addr: app.local_addr(),
    };
    (app, api)
}

#[test]
fn every_body_a_running_server_answers_validates() {
    let (dovecot, sink, dir) = olga();
    let phone = Subscriber::generate();
    // One device per account, so that a second device meets 409 too_many_sessions.
    let (app, api) = start(&dir, &dovecot, |c| c.limits.sessions_per_account_max = 1);

    let health = http(api.addr, "GET", "/healthz", "", "");
    check_response("get", "/healthz", &health);
    assert_eq!(health.status, 200);
    let served = api.call("GET", "/v1/openapi.json", "/v1/openapi.json", "");
    assert_eq!(served.status, 200);
    assert_eq!(
        served.body, DOCUMENT,
        "the served document is the checked-in one"
    );
    let unauthorized = http(api.addr, "GET", "/v1/vapid-public-key", "", "");
    check_response("get", "/v1/vapid-public-key", &unauthorized);
    assert_eq!(unauthorized.status, 401);
    let key = api.call("GET", "/v1/vapid-public-key", "/v1/vapid-public-key", "");
    assert_eq!(key.status, 200);
    let not_allowed = api.call("POST", "/v1/vapid-public-key", "/v1/vapid-public-key", "");
    assert_eq!(not_allowed.status, 405);

    let new_mail: Value =
        serde_json::from_str(&phone.subscription_json(&sink.url("/new"))).unwrap();
    let good = registration(
        dovecot.imaps_port(),
        "secret-olga",
        new_mail,
        &sink.url("/re"),
    );
    let mut wrong_password = good.clone();
    wrong_password["imap"]["password"] = "not-her-password".into();
    wrong_password["device_id"] = "phone-2".into();
    assert!(request_is_valid(
        "/v1/subscriptions",
        "post",
        &wrong_password
    ));
    assert_eq!(api.register(&wrong_password).status, 422);
    assert!(request_is_valid("/v1/subscriptions", "post", &good));
    let created = api.register(&good);
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let one = format!("/v1/subscriptions/{id}");
    let described = api.call("GET", "/v1/subscriptions/{id}", &one, "");
    assert_eq!(described.status, 200);

    // Bodies the server refuses for their shape are refused by the schema too.
    let mut bad_security = good.clone();
    bad_security["imap"]["security"] = "ssl".into();
    let mut no_reconnect = good.clone();
    no_reconnect.as_object_mut().unwrap().remove("reconnect");
    let mut unknown_field = good.clone();
    unknown_field["colour"] = "blue".into();
    let mut both_secrets = good.clone();
    both_secrets["imap"]["oauth2_token"] = "t".into();
    for bad in [bad_security, no_reconnect, unknown_field, both_secrets] {
        assert!(
            !request_is_valid("/v1/subscriptions", "post", &bad),
            "{bad}"
        );
        let reply = api.register(&bad);
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        assert!(reply.json()["field"].is_string());
    }
    let mut second_device = good.clone();
    second_device["device_id"] = "tablet".into();
    let reply = api.register(&second_device);
    assert_eq!(reply.error(), "too_many_sessions", "{}", reply.body);
    let mut closed_port = good.clone();
    closed_port["imap"]["port"] = 1.into();
    closed_port["imap"]["username"] = "nobody".into();
    let reply = api.register(&closed_port);
    assert_eq!(reply.error(), "imap_unreachable", "{}", reply.body);
    let huge = json!({"imap": {"host": "x".repeat(20_000)}});
    assert_eq!(api.register(&huge).status, 413);

    let deleted = api.call("DELETE", "/v1/subscriptions/{id}", &one, "");
    assert_eq!(deleted.status, 204);
    let gone = api.call("GET", "/v1/subscriptions/{id}", &one, "");
    assert_eq!(gone.status, 404);
    let metrics = api.call("GET", "/metrics", "/metrics", "");
    assert_eq!(metrics.status, 200);
    app.shutdown();
}

#[test]
fn refusals_of_a_strict_server_validate() {
    let dir = TempDir::new();
    let mut config = loopback_config(&dir, None);
    config.allow_private_destinations = false;
    config.api_token = Some(TOKEN.into());
    config.limits.registrations_per_minute_per_ip = 1;
    let app = App::start(config).unwrap();
    let api = Api {
        addr: app.local_addr(),
    };
    let local = registration(
        993,
        "pw",
        json!({"endpoint": "https://push.example/n"}),
        "https://push.example/r",
    );
    assert!(request_is_valid("/v1/subscriptions", "post", &local));
    let reply = api.register(&local);
    assert_eq!(reply.error(), "forbidden_destination", "{}", reply.body);
    let reply = api.register(&local);
    assert_eq!(reply.error(), "rate_limited", "{}", reply.body);
    assert!(reply.header("retry-after").is_some());
    app.shutdown();
}

/// With `require_endpoint_verification`: the 201 and GET of a verifying subscription, the
/// verification pushes, and every answer of the verify route validate.
#[test]
fn the_verification_flow_validates() {
    let dovecot =
        Dovecot::start(DovecotConfig::default().with_user("olga", "secret-olga")).unwrap();
    let sink = Sink::start();
    let phone = Subscriber::generate();
    let dir = TempDir::new();
    let mut config = loopback_config(&dir, Some(&dovecot));
    config.api_token = Some(TOKEN.into());
    config.require_endpoint_verification = true;
    let app = App::start(config).unwrap();
    let api = Api {
        addr: app.local_addr(),
    };
    let new_mail: Value =
        serde_json::from_str(&phone.subscription_json(&sink.url("/new"))).unwrap();
    let created = api.register(&registration(
        dovecot.imaps_port(),
        "secret-olga",
        new_mail,
        &sink.url("/re"),
    ));
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["state"], "verifying");
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let one = format!("/v1/subscriptions/{id}");
    let described = api.call("GET", "/v1/subscriptions/{id}", &one, "");
    assert_eq!(described.json()["state"], "verifying");

    let pushes = sink.wait_for(2, std::time::Duration::from_secs(10));
    assert_eq!(pushes.len(), 2);
    let mut codes = serde_json::Map::new();
    for push in &pushes {
        let body = match push.header("content-encoding") {
            Some(_) => phone.decrypt(&push.body).unwrap(),
            None => push.body.clone(),
        };
        let payload: Value = serde_json::from_slice(&body).unwrap();
        assert_valid("/components/schemas/VerifyPush", &payload, &push.path);
        let field = if push.path == "/new" {
            "new_mail"
        } else {
            "reconnect"
        };
        codes.insert(field.into(), payload["code"].clone());
    }
    let right = Value::Object(codes);
    let wrong = json!({"new_mail": right["reconnect"], "reconnect": right["new_mail"]});
    let template = "/v1/subscriptions/{id}/verify";
    let path = format!("{one}/verify");
    for body in [&right, &wrong] {
        assert!(request_is_valid(template, "post", body), "{body}");
    }
    assert!(!request_is_valid(
        template,
        "post",
        &json!({"new_mail": "x"})
    ));
    let bad = api.call("POST", template, &path, r#"{"new_mail": "x"}"#);
    assert_eq!(bad.status, 400);
    let refused = api.call("POST", template, &path, &wrong.to_string());
    assert_eq!(refused.error(), "verification_failed");
    let unknown = api.call(
        "POST",
        template,
        "/v1/subscriptions/00000000000000000000000000000000/verify",
        &right.to_string(),
    );
    assert_eq!(unknown.status, 404);
    let not_allowed = api.call("GET", template, &path, "");
    assert_eq!(not_allowed.status, 405);
    let verified = api.call("POST", template, &path, &right.to_string());
    assert_eq!(verified.status, 200, "{}", verified.body);
    assert_eq!(verified.json()["state"], "idle");
    let again = api.call("POST", template, &path, &right.to_string());
    assert_eq!(again.error(), "verification_failed");
    app.shutdown();
}

/// `/readyz` answers, ready and not (at capacity: `sessions_max = 1` holding one session),
/// validate; neither needs the token.
#[test]
fn readyz_answers_validate() {
    let (dovecot, sink, dir) = olga();
    let (app, api) = start(&dir, &dovecot, |c| c.limits.sessions_max = 1);
    let ready = http(api.addr, "GET", "/readyz", "", "");
    check_response("get", "/readyz", &ready);
    assert_eq!(ready.status, 200);
    let body = registration(
        dovecot.imaps_port(),
        "secret-olga",
        json!({"endpoint": sink.url("/n")}),
        &sink.url("/r"),
    );
    assert_eq!(api.register(&body).status, 201);
    let full = http(api.addr, "GET", "/readyz", "", "");
    check_response("get", "/readyz", &full);
    assert_eq!(
        (full.status, full.json()["reason"].clone()),
        (503, json!("at_capacity"))
    );
    app.shutdown();
}
