//! The OpenAPI document and the answers agree (issue: the document tells the whole truth):
//! methods a path does not serve, authentication before anything else under `/admin/api`,
//! constraints enforced as declared, every error answer declared with its body.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::TestApp;

const TOKEN: &str = "admin-token-for-document-tests-of-32-chars";

async fn spawn(vars: &[(&str, &str)]) -> TestApp {
    let mut all = vec![("BRIDGE_ADMIN_TOKEN", TOKEN)];
    all.extend_from_slice(vars);
    TestApp::spawn_with(&all, None).await
}

async fn call(app: &TestApp, method: Method, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.request(method, format!("{}{path}", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn document(app: &TestApp) -> Value {
    let response = call(app, Method::GET, "/admin/api/openapi.json", Some(TOKEN)).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn other_methods_are_405_with_allow_and_head_is_get_without_a_body() {
    let app = spawn(&[]).await;
    for (method, path, allow, content_type) in [
        (Method::DELETE, "/healthz", "GET, HEAD", "application/json"),
        (
            Method::PUT,
            "/webhooks/esp",
            "GET, HEAD, POST",
            "application/json",
        ),
        (
            Method::GET,
            "/webhooks/sparkloop",
            "POST",
            "application/json",
        ),
        (Method::PATCH, "/metrics", "GET, HEAD", "application/json"),
        (
            Method::DELETE,
            "/admin/api/stats",
            "GET, HEAD",
            "application/problem+json",
        ),
        (
            Method::GET,
            "/admin/api/deliveries/retry-dead",
            "POST",
            "application/problem+json",
        ),
        (
            Method::from_bytes(b"TRACE").unwrap(),
            "/admin/api/deliveries/7",
            "GET, HEAD",
            "application/problem+json",
        ),
    ] {
        let response = call(&app, method.clone(), path, Some(TOKEN)).await;
        let what = format!("{method} {path}");
        assert_eq!(
            (what.as_str(), response.status()),
            (what.as_str(), StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(response.headers()["allow"], allow, "{what}");
        assert_eq!(response.headers()["content-type"], content_type, "{what}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains(allow),
            "{what}: {body}"
        );
    }

    let head = call(&app, Method::HEAD, "/healthz", None).await;
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "application/json");
    assert_eq!(head.bytes().await.unwrap().len(), 0);

    // A path that names nothing: 404 with an `error` too.
    let response = call(&app, Method::GET, "/no-such-path", None).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("/no-such-path"));
    app.stop().await;
}

#[tokio::test]
async fn under_admin_api_authentication_comes_before_paths_methods_and_parameters() {
    let app = spawn(&[]).await;
    for (method, path) in [
        (Method::GET, "/admin/api/deliveries/9223372036854775808"),
        (Method::GET, "/admin/api/deliveries?limit=null"),
        (Method::GET, "/admin/api/deliveries?unknown=1"),
        (Method::DELETE, "/admin/api/stats"),
        (Method::GET, "/admin/api/no-such-thing"),
        (Method::GET, "/admin/api"),
        (Method::POST, "/admin/api/deliveries/retry-dead"),
    ] {
        let response = call(&app, method.clone(), path, None).await;
        let what = format!("{method} {path}");
        assert_eq!(
            (what.as_str(), response.status()),
            (what.as_str(), StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{what}");
        // The scheme is matched without regard to case (RFC 9110).
        let lower = app
            .client
            .request(method.clone(), format!("{}{path}", app.address))
            .header("Authorization", format!("bearer {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_ne!(lower.status(), StatusCode::UNAUTHORIZED, "{what}");
    }
    app.stop().await;
}

#[tokio::test]
async fn parameters_and_bodies_are_taken_exactly_as_declared() {
    let app = spawn(&[]).await;
    for (path, code) in [
        (
            "/admin/api/deliveries?since=2026-11-26T10:00:00%2B01:00",
            200,
        ),
        (
            "/admin/api/deliveries?since=2026-11-26T10:00:00.123456Z",
            200,
        ),
        ("/admin/api/deliveries?since=-5&until=1764151200000", 200),
        (
            "/admin/api/deliveries?status=open&destination=esp&limit=500",
            200,
        ),
        // No offset: not RFC 3339 (the old lenient reading took it as UTC).
        ("/admin/api/deliveries?since=2026-11-26T10:00:00", 400),
        ("/admin/api/deliveries?since=", 400),
        ("/admin/api/deliveries?destination=mailchimp", 400),
        ("/admin/api/deliveries?status=", 400),
        ("/admin/api/deliveries?limit=501", 400),
        ("/admin/api/deliveries?limit=0", 400),
        ("/admin/api/deliveries?unknown=1", 400),
        ("/admin/api/deliveries?=0.0", 400),
        ("/admin/api/subscribers/0", 404),
    ] {
        let response = call(&app, Method::GET, path, Some(TOKEN)).await;
        assert_eq!((path, response.status().as_u16()), (path, code));
    }
    for (body, code) in [
        ("", 200),
        ("{}", 200),
        (r#"{"destination": null, "since": null}"#, 200),
        (
            r#"{"since": "1764151200000", "until": "2100-01-01T00:00:00Z"}"#,
            200,
        ),
        ("[null, null, null]", 400),
        ("null", 400),
        // Whitespace alone is not JSON; only no body at all is the default.
        ("\t", 400),
        (" \n", 400),
        (r#"{"until": "C"}"#, 400),
        (r#"{"since": 5}"#, 400),
        (r#"{"destination": "elsewhere"}"#, 400),
        (r#"{"force": true}"#, 400),
    ] {
        let response = app
            .client
            .post(format!("{}/admin/api/deliveries/retry-dead", app.address))
            .bearer_auth(TOKEN)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!((body, response.status().as_u16()), (body, code));
    }
    app.stop().await;
}

#[tokio::test]
async fn the_document_declares_every_error_with_its_body_and_the_webhooks_credentials() {
    let app = spawn(&[]).await;
    let doc = document(&app).await;
    let mut errors = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let what = format!("{method} {path} {status}");
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{what} has no description"
                );
                if status.as_str() >= "400" {
                    errors += 1;
                    let content = response["content"].as_object().expect(&what);
                    let (media, schema) = content.iter().next().unwrap();
                    let expected = if path.starts_with("/admin/api") {
                        ("application/problem+json", "#/components/schemas/Problem")
                    } else {
                        ("application/json", "#/components/schemas/Error")
                    };
                    assert_eq!(
                        (media.as_str(), schema["schema"]["$ref"].as_str().unwrap()),
                        expected,
                        "{what}"
                    );
                }
            }
            if path.starts_with("/admin/api") {
                assert_eq!(
                    operation["security"],
                    json!([{"admin_token": []}]),
                    "{method} {path}"
                );
            }
        }
    }
    assert!(errors > 40, "only {errors} error answers declared");
    let paths = &doc["paths"];
    assert_eq!(
        paths["/webhooks/esp"]["post"]["security"],
        json!([{"esp_bearer": []}, {"esp_query_token": []}])
    );
    assert_eq!(
        paths["/webhooks/sparkloop"]["post"]["security"],
        json!([{"sparkloop_token": []}])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["sparkloop_token"]["name"],
        "SparkLoop-Token"
    );
    assert_eq!(
        paths["/webhooks/esp"]["post"]["requestBody"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/CustomEspEvent"
    );
    assert_eq!(
        doc["components"]["schemas"]["SubscriberView"]["properties"]["esp_id"]["type"],
        json!(["string", "integer", "null"])
    );
    assert!(paths["/metrics"]["get"]["responses"]["200"]["content"]
        .get("application/openmetrics-text")
        .is_some());
    let limit = paths["/admin/api/deliveries"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(
        (
            limit["schema"]["minimum"].clone(),
            limit["schema"]["maximum"].clone()
        ),
        (json!(1), json!(500))
    );
    assert_eq!(
        paths["/admin/api/deliveries/retry-dead"]["post"]["requestBody"]["required"],
        false
    );
    app.stop().await;

    // Another adapter: its own way of carrying the secret.
    let app = spawn(&[("ESP_ADAPTER", "kit"), ("ESP_API_KEY", "kit-key")]).await;
    let doc = document(&app).await;
    assert_eq!(
        doc["paths"]["/webhooks/esp"]["post"]["security"],
        json!([{"esp_signature": []}])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["esp_signature"]["name"],
        "X-Kit-Signature"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_nul_character_is_a_400_on_every_database() {
    let app = spawn(&[]).await;
    for body in [
        r#"{"type": "bou\u0000nce"}"#,
        r#"{"type": "subscribe", "subscriber": {"email": "nul@example.com", "name": "A\u0000"}}"#,
        r#"{"type": "subscribe", "subscriber": {"email": "nul@example.com"}, "x\u0000": 1}"#,
    ] {
        let response = app.post_esp(body).await;
        assert_eq!((body, response.status().as_u16()), (body, 400));
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].as_str().unwrap().contains("NUL"), "{error}");
    }
    // Escaped, the backslash is text like any other.
    let escaped =
        r#"{"type": "subscribe", "subscriber": {"email": "esc@example.com", "name": "A\\u0000"}}"#;
    assert_eq!(app.post_esp(escaped).await.status(), 200);
    let callback = r#"{"type": "sync_subscriber", "subscriber": {"email": "nul@example.com", "referral_code": "c\u0000"}}"#;
    assert_eq!(app.post_sparkloop(callback).await.status(), 400);
    let response = call(
        &app,
        Method::GET,
        "/admin/api/deliveries?email=a%00b",
        Some(TOKEN),
    )
    .await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) AS n FROM subscribers WHERE email = 'nul@example.com'"),
        0
    );
    app.stop().await;
}
