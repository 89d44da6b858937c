//! `/admin/api/openapi.json`: the OpenAPI document of the bridge's HTTP API, from the
//! handlers' own declarations, completed with what their attributes cannot say: the error
//! answers' bodies, the parameters' constraints (from the same constants the handlers check
//! against) and the webhooks' credentials as this instance's ESP adapter reads them.

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use crate::http::admin::deliveries::{DESTINATIONS, MAX_LIMIT, STATUSES};
use crate::http::admin::{self, deliveries, stats, subscribers, AdminAuth, AdminError};
use crate::state::AppState;
use referral_bridge_adapters::{WebhookCredential, MAX_NAME_CHARS};

/// The OpenAPI document of the bridge's HTTP API, from the handlers' own declarations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "referral-bridge",
        description = "Webhooks in from the ESP and the referral platforms; the operator's admin API. No text of a request may hold a NUL character (U+0000): Postgres cannot store one, and no address, name or event type has one; such a request is a 400 on every database."
    ),
    paths(
        crate::http::webhooks::esp,
        crate::http::webhooks::esp_ping,
        crate::http::webhooks::sparkloop,
        crate::http::webhooks::loyaltysurf,
        crate::http::webhooks::referralloop,
        crate::http::ops::healthz,
        crate::http::ops::readyz,
        crate::http::ops::metrics,
        admin::deliveries::list_deliveries,
        admin::deliveries::get_delivery,
        admin::deliveries::retry_delivery,
        admin::deliveries::retry_dead,
        admin::deliveries::cancel_delivery,
        admin::subscribers::get_subscriber,
        admin::subscribers::erase_subscriber,
        admin::stats::get_stats,
        admin::reconcile::get_reconcile,
        openapi,
    ),
    components(schemas(
        deliveries::DeliveryPage,
        deliveries::Delivery,
        deliveries::DeliveryDetail,
        deliveries::Attempt,
        deliveries::ActionResult,
        subscribers::SubscriberView,
        subscribers::EraseResult,
        subscribers::TimelineItem,
        stats::Stats,
        stats::Period,
        stats::Queue,
        admin::reconcile::ReconcileStatus,
        admin::reconcile::ReconcileRun,
        admin::reconcile::Differences
    ))
)]
pub struct ApiDoc;

/// `GET /admin/api/openapi.json`: this document.
#[utoipa::path(get, path = "/admin/api/openapi.json", tag = "admin",
    responses((status = 200, description = "the OpenAPI 3.1 document of the whole HTTP API, for this instance's ESP adapter", content_type = "application/json", body = Object),
        (status = 401), (status = 404)),
    security(("admin_token" = [])))]
pub async fn openapi(
    _admin: AdminAuth,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    Ok(HttpResponse::Ok().json(document(state.esp.name(), state.esp.credentials())))
}

/// The whole document, for the ESP adapter named `esp_adapter`, which takes `esp_credentials`.
pub fn document(esp_adapter: &str, esp_credentials: &[WebhookCredential]) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    add_components(&mut doc, esp_credentials);
    constrain_parameters(&mut doc);
    declare_bodies(&mut doc, esp_adapter == "custom");
    declare_webhook_security(&mut doc, esp_credentials);
    declare_errors(&mut doc);
    declare_answers(&mut doc);
    doc
}

/// The successful answers' bodies the handlers' attributes leave out.
fn declare_answers(doc: &mut Value) {
    let status = |value: &str| {
        json!({"application/json": {"schema": {"type": "object", "required": ["status"],
            "properties": {"status": {"const": value}}}}})
    };
    let stored = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Stored"}}});
    for (pointer, content) in [
        ("/paths/~1healthz/get/responses/200", status("ok")),
        ("/paths/~1readyz/get/responses/200", status("ready")),
        ("/paths/~1webhooks~1esp/get/responses/200", status("ok")),
        ("/paths/~1webhooks~1esp/post/responses/200", stored.clone()),
        (
            "/paths/~1webhooks~1referralloop/post/responses/200",
            stored.clone(),
        ),
        ("/paths/~1webhooks~1loyaltysurf/post/responses/200", stored),
        (
            "/paths/~1metrics/get/responses/200",
            json!({"application/openmetrics-text": {"schema": {"type": "string"}}}),
        ),
    ] {
        if let Some(response) = doc.pointer_mut(pointer) {
            response["content"] = content;
        }
    }
}

/// A time parameter in a query string: RFC 3339 with its offset, or unix milliseconds.
fn query_time() -> Value {
    json!({"anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "integer", "format": "int64"},
    ]})
}

/// A time in a JSON body: RFC 3339 with its offset, or unix milliseconds as a string of digits.
fn body_time() -> Value {
    json!({"anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": "^-?[0-9]{1,18}$"},
        {"type": "null"},
    ]})
}

/// The shared schemas: the error bodies, the webhook answer, the custom ESP's events, and the
/// security schemes.
fn add_components(doc: &mut Value, esp_credentials: &[WebhookCredential]) {
    let components = doc["components"].as_object_mut().expect("components");
    let schemas = components
        .entry("schemas")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("schemas");
    schemas.insert(
        "Problem".into(),
        json!({
            "type": "object",
            "description": "An admin API error (RFC 9457), with the `error` member every error of the bridge has.",
            "required": ["type", "title", "status", "detail", "error"],
            "properties": {
                "type": {"type": "string", "description": "`about:blank`"},
                "title": {"type": "string", "description": "the status's reason phrase"},
                "status": {"type": "integer", "description": "the HTTP status"},
                "detail": {"type": "string", "description": "what is wrong, for a person"},
                "error": {"type": "string", "description": "the same as `detail`"},
            },
        }),
    );
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "description": "An error of the webhooks and operations endpoints.",
            "required": ["error"],
            "properties": {"error": {"type": "string", "description": "what is wrong, for a person"}},
        }),
    );
    schemas.insert(
        "Stored".into(),
        json!({
            "type": "object",
            "description": "A webhook taken: stored, recognised as a duplicate, ignored (an event type that forwards nothing), or unchanged (nothing the platform is told of changed).",
            "required": ["status"],
            "properties": {"status": {"type": "string", "enum": ["stored", "duplicate", "ignored", "unchanged"]}},
        }),
    );
    schemas.insert("CustomEspEvent".into(), custom_esp_event());
    schemas.insert("SparkLoopCallback".into(), sparkloop_callback());
    // The ESP's id in the JSON type it was sent in (DESIGN 3.7): a string, or an integer of any
    // length of digits.
    if let Some(esp_id) = schemas
        .get_mut("SubscriberView")
        .and_then(|view| view.pointer_mut("/properties/esp_id"))
    {
        *esp_id = json!({"type": ["string", "integer", "null"],
            "description": "the ESP's id, in the JSON type the ESP sent it in"});
    }

    let mut schemes = Map::new();
    schemes.insert(
        "admin_token".into(),
        json!({"type": "http", "scheme": "bearer", "description": "BRIDGE_ADMIN_TOKEN"}),
    );
    for credential in esp_credentials {
        let (name, scheme) = esp_scheme(credential);
        schemes.insert(name, scheme);
    }
    schemes.insert(
        "sparkloop_token".into(),
        json!({"type": "apiKey", "in": "header", "name": "SparkLoop-Token",
            "description": "SPARKLOOP_WEBHOOK_TOKEN, as set in SparkLoop's webhook settings"}),
    );
    schemes.insert(
        "referralloop_signature".into(),
        json!({"type": "apiKey", "in": "header", "name": "X-Webhook-Signature",
            "description": "`sha256=<hex HMAC-SHA256 of the body with REFERRALLOOP_WEBHOOK_SECRET>`"}),
    );
    schemes.insert(
        "loyaltysurf_signature".into(),
        json!({"type": "apiKey", "in": "header", "name": "LoyaltySurf-Signature",
            "description": "`ts=<unix ms>,v=<hex HMAC-SHA256 of \"ts.body\" with LOYALTYSURF_WEBHOOK_SECRET>`, ts within LOYALTYSURF_SIGNATURE_TOLERANCE"}),
    );
    components.insert("securitySchemes".into(), Value::Object(schemes));
}

/// The security scheme's name and declaration for one way an ESP webhook carries its secret.
fn esp_scheme(credential: &WebhookCredential) -> (String, Value) {
    match credential {
        WebhookCredential::Bearer => (
            "esp_bearer".into(),
            json!({"type": "http", "scheme": "bearer", "description": "ESP_WEBHOOK_SECRET"}),
        ),
        WebhookCredential::QueryToken => (
            "esp_query_token".into(),
            json!({"type": "apiKey", "in": "query", "name": "token",
                "description": "ESP_WEBHOOK_SECRET, in the webhook URL set at the ESP"}),
        ),
        WebhookCredential::SignatureHeader(header) => (
            "esp_signature".into(),
            json!({"type": "apiKey", "in": "header", "name": header,
                "description": "the ESP's signature of the body, made with ESP_WEBHOOK_SECRET"}),
        ),
    }
}

/// White space as Rust's `trim` sees it (the `White_Space` property), as a regex class.
const WHITE: &str = r"\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// An address as `Email::parse` takes it (RFC 5321: at most 254 characters).
fn email() -> Value {
    json!({"type": "string", "format": "email", "maxLength": 254})
}

/// A person's name, at most [`MAX_NAME_CHARS`] characters.
fn name(types: Value) -> Value {
    json!({"type": types, "maxLength": MAX_NAME_CHARS})
}

/// A unix timestamp in seconds: an integer, or a string of digits.
fn unix_seconds(description: &str) -> Value {
    json!({"description": description, "anyOf": [
        {"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX},
        {"type": "string", "pattern": "^[+-]?[0-9]{1,18}$"},
        {"type": "null"},
    ]})
}

/// An event of one of `kinds` (any other type of event is stored and ignored).
fn other_event(kinds: &[&str]) -> Value {
    json!({
        "type": "object",
        "description": "another event type: stored and answered `ignored`",
        "required": ["type"],
        "properties": {"type": {"type": "string", "pattern": format!("[^{WHITE}]"), "not": {"enum": kinds}}},
    })
}

/// The custom ESP's events (DESIGN 3.4: the shapes of SparkLoop's custom integration), as
/// `custom::parse_event` reads them.
fn custom_esp_event() -> Value {
    let subscriber = |extra: Value| {
        let mut properties = json!({
            "email": email(),
            "id": {"type": ["string", "number", "null"], "description": "the ESP's id of the subscriber, kept in its JSON type"},
            "first_name": name(json!(["string", "null"])),
            "name": name(json!(["string", "null"])),
        });
        for (key, value) in extra.as_object().into_iter().flatten() {
            properties[key] = value.clone();
        }
        json!({"type": "object", "required": ["email"], "properties": properties})
    };
    let event = |kind: &str, subscriber: Value| {
        json!({
            "type": "object",
            "required": ["type", "subscriber"],
            "properties": {"type": {"const": kind}, "subscriber": subscriber},
        })
    };
    json!({
        "description": "An event of the custom ESP (ESP_ADAPTER=custom).",
        "oneOf": [
            event("subscribe", subscriber({
                let mut extra = json!({"created_at": unix_seconds("when they subscribed")});
                for key in referral_bridge_adapters::ATTRIBUTION_KEYS {
                    extra[key] = json!({"description": "attribution, sent to SparkLoop's API with the signup (text; any other value is ignored)"});
                }
                extra
            })),
            event("update", subscriber(json!({
                "previous_email": {"description": "the address before the change", "anyOf": [
                    email(), {"type": "string", "pattern": format!("^[{WHITE}]*$")}, {"type": "null"}]},
                "updated_at": unix_seconds("when it changed"),
            }))),
            event("unsubscribe", json!({"type": "object", "required": ["email"], "properties": {"email": email()}})),
            other_event(&["subscribe", "update", "unsubscribe"]),
        ],
    })
}

/// SparkLoop's callbacks, as `sparkloop::parse_callback` reads them: the documented types need
/// their `subscriber` (and `new_referral` a valid `referrer`, when it has one).
fn sparkloop_callback() -> Value {
    use referral_bridge_adapters::sparkloop::EVENT_TYPES;
    let person = json!({
        "type": "object",
        "required": ["email"],
        "properties": {
            "email": email(),
            "first_name": {"maxLength": MAX_NAME_CHARS},
            "name": {"maxLength": MAX_NAME_CHARS},
        },
    });
    let others: Vec<&str> = EVENT_TYPES
        .iter()
        .copied()
        .filter(|t| *t != "new_referral")
        .collect();
    json!({
        "description": "A SparkLoop callback (seeds/sparkloop-webhooks.txt).",
        "oneOf": [
            {
                "type": "object",
                "required": ["type", "subscriber"],
                "properties": {"type": {"enum": others}, "subscriber": person},
            },
            {
                "type": "object",
                "required": ["type", "subscriber"],
                "properties": {
                    "type": {"const": "new_referral"},
                    "subscriber": person,
                    "referrer": {"anyOf": [person, {"type": "null"}]},
                },
            },
            other_event(EVENT_TYPES),
        ],
    })
}

/// The parameters' allowed values, formats and bounds, from the constants the handlers check.
fn constrain_parameters(doc: &mut Value) {
    let Some(parameters) = doc
        .pointer_mut("/paths/~1admin~1api~1deliveries/get/parameters")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for parameter in parameters {
        let schema = match parameter["name"].as_str() {
            Some("status") => json!({"type": "string", "enum": STATUSES}),
            Some("destination") => json!({"type": "string", "enum": DESTINATIONS}),
            Some("since") | Some("until") => query_time(),
            Some("limit") => json!({"type": "integer", "format": "int64", "minimum": 1,
                "maximum": MAX_LIMIT, "default": 50}),
            _ => continue,
        };
        parameter["schema"] = schema;
    }
}

/// The request bodies: optional JSON objects on the admin actions, the documented events on
/// the webhooks.
fn declare_bodies(doc: &mut Value, custom_esp: bool) {
    let retry_dead = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "destination": {"type": ["string", "null"], "enum": [DESTINATIONS[0], DESTINATIONS[1], DESTINATIONS[2], DESTINATIONS[3], null],
                "description": "only those for this destination"},
            "since": body_time(),
            "until": body_time(),
        },
    });
    let retry = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {"force": {"type": "boolean", "description": "retry even though earlier deliveries of the same subscriber and destination are dead"}},
    });
    for (path, schema, description) in [
        ("/paths/~1admin~1api~1deliveries~1retry-dead/post/requestBody", retry_dead,
            "filters, each optional; no body retries every dead delivery"),
        ("/paths/~1admin~1api~1subscribers~1{email}/delete/requestBody", json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {"platform": {"type": "boolean", "description": "delete them at the platform first"}},
        }), "optional; `{\"platform\": true}` deletes them at the platform first"),
        ("/paths/~1admin~1api~1deliveries~1{id}~1retry/post/requestBody", retry,
            "optional; `{\"force\": true}` retries even with earlier dead deliveries in the subscriber's line"),
    ] {
        if let Some(body) = doc.pointer_mut(path) {
            *body = json!({"required": false, "description": description,
                "content": {"application/json": {"schema": schema}}});
        }
    }
    if let Some(body) = doc.pointer_mut("/paths/~1webhooks~1esp/post/requestBody") {
        let schema = if custom_esp {
            json!({"$ref": "#/components/schemas/CustomEspEvent"})
        } else {
            json!({"type": "object", "description": "the ESP's own webhook body (adapters/README.md)"})
        };
        *body = json!({
            "required": true,
            "description": "the ESP's webhook as it sends it",
            "content": {"application/json": {"schema": schema}},
        });
    }
    if let Some(body) = doc.pointer_mut("/paths/~1webhooks~1sparkloop/post/requestBody") {
        *body = json!({
            "required": true,
            "description": "SparkLoop's callback",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SparkLoopCallback"}}},
        });
    }
}

/// Which security each webhook declares: what its verifier reads.
fn declare_webhook_security(doc: &mut Value, esp_credentials: &[WebhookCredential]) {
    let esp: Vec<Value> = esp_credentials
        .iter()
        .map(|credential| json!({ esp_scheme(credential).0: [] }))
        .collect();
    for (path, security) in [
        ("/paths/~1webhooks~1esp/post", Value::Array(esp)),
        (
            "/paths/~1webhooks~1sparkloop/post",
            json!([{"sparkloop_token": []}]),
        ),
        (
            "/paths/~1webhooks~1referralloop/post",
            json!([{"referralloop_signature": []}]),
        ),
        (
            "/paths/~1webhooks~1loyaltysurf/post",
            json!([{"loyaltysurf_signature": []}]),
        ),
    ] {
        if let Some(operation) = doc.pointer_mut(path) {
            operation["security"] = security;
        }
    }
}

/// Every error answer declared, described and given its body: problem documents under
/// `/admin/api`, `{"error"}` elsewhere; with the answers any endpoint of its kind can give (an
/// unavailable database, a rate limit, a body timeout) added where they apply.
fn declare_errors(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let admin = path.starts_with("/admin/api");
        let webhook = path.starts_with("/webhooks/");
        for (method, operation) in item.as_object_mut().into_iter().flatten() {
            let Some(responses) = operation["responses"].as_object_mut() else {
                continue;
            };
            let mut implied: Vec<&str> = Vec::new();
            if admin {
                implied.extend(["401", "404", "503"]);
            }
            if webhook && method == "post" {
                implied.extend(["400", "401", "408", "413", "429", "503"]);
            }
            for status in implied {
                responses.entry(status).or_insert_with(|| json!({}));
            }
            for (status, response) in responses.iter_mut() {
                let code: u16 = status.parse().unwrap_or(0);
                if code < 400 {
                    continue;
                }
                let described = response["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty());
                if !described {
                    response["description"] = json!(error_description(code, admin));
                }
                if response.get("content").is_none() {
                    response["content"] = if admin {
                        json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}})
                    } else {
                        json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}})
                    };
                }
            }
        }
    }
}

/// What an error status means, where the handler's declaration does not say more.
fn error_description(status: u16, admin: bool) -> &'static str {
    match (status, admin) {
        (400, true) => "a parameter or the body is not valid; `error` says which and why",
        (400, false) => "not an event this endpoint can read; `error` says why",
        (401, true) => {
            "missing or wrong admin token (`Authorization: Bearer <BRIDGE_ADMIN_TOKEN>`)"
        }
        (401, false) => "missing or wrong credentials, or none configured for this endpoint",
        (404, true) => {
            "nothing by that id or address, or the admin API is off (BRIDGE_ADMIN_TOKEN unset)"
        }
        (408, _) => "the body did not arrive within BRIDGE_BODY_TIMEOUT",
        (413, _) => "the body is over BRIDGE_MAX_BODY",
        (429, _) => {
            "over BRIDGE_INBOUND_RATE_LIMIT for this address; retry after `Retry-After` seconds"
        }
        (503, true) => "the database is busy or unreachable; retry after `Retry-After` seconds",
        (503, false) => "not stored; retry after `Retry-After` seconds (nothing is lost)",
        _ => "an error; `error` says what is wrong",
    }
}
