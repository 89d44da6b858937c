//! `referral-bridge sparkloop webhooks ...` against a stand-in of SparkLoop's webhook API that
//! keeps the webhooks it is given and answers as the API documents (shapes and error texts from
//! `seeds/sparkloop-webhooks-api.md`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::matchers::{header, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::run_command;

const CAMPAIGN: &str = "MF1c2d3e4f5a";
const API_KEY: &str = "sl-api-key";
const URL: &str = "https://bridge.example.com/webhooks/sparkloop";

/// SparkLoop's webhooks of one campaign, in memory.
#[derive(Clone, Default)]
struct WebhookApi {
    webhooks: Arc<Mutex<Vec<Value>>>,
}

fn error(status: u16, text: String) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({ "error": text }))
}

impl Respond for WebhookApi {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let parts: Vec<&str> = request.url.path().split('/').collect();
        // ["", "v1", "campaigns", campaign, "webhooks", uuid?]
        if parts[3] != CAMPAIGN {
            return error(404, format!("Campaign {} not found!", parts[3]));
        }
        let mut webhooks = self.webhooks.lock().unwrap();
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let events = |body: &Value, old: Option<&Value>| {
            let mut events = old
                .cloned()
                .unwrap_or(json!({"new_referral": null, "reward_unlocked": null}));
            for event in ["new_referral", "reward_unlocked"] {
                if let Some(on) = body.get(event) {
                    assert!(on.is_boolean(), "{event} must be a boolean: {body}");
                    events[event] = on.clone();
                }
            }
            events
        };
        let valid_url = |url: &Value| url.as_str().is_some_and(|u| u.starts_with("https://"));
        match (request.method.as_str(), parts.get(5)) {
            ("GET", None) => {
                let newest_first: Vec<Value> = webhooks.iter().rev().cloned().collect();
                ResponseTemplate::new(200).set_body_json(json!({ "webhooks": newest_first }))
            }
            ("POST", None) => {
                if !valid_url(&body["url"]) {
                    return error(400, "Url must start with https://".into());
                }
                let webhook = json!({"uuid": format!("webhook_{:010x}", webhooks.len() + 1),
                    "url": body["url"], "events": events(&body, None)});
                webhooks.push(webhook.clone());
                ResponseTemplate::new(201).set_body_json(json!({ "webhook": webhook }))
            }
            (method, Some(uuid)) => {
                let Some(at) = webhooks.iter().position(|w| w["uuid"] == *uuid) else {
                    return error(404, format!("Webhook {uuid} not found!"));
                };
                match method {
                    "PUT" => {
                        if body.get("url").is_some() && !valid_url(&body["url"]) {
                            return error(400, "Url must start with https://".into());
                        }
                        let updated = events(&body, Some(&webhooks[at]["events"]));
                        webhooks[at]["events"] = updated;
                        if let Some(url) = body.get("url") {
                            webhooks[at]["url"] = url.clone();
                        }
                        ResponseTemplate::new(200).set_body_json(json!({ "webhook": webhooks[at] }))
                    }
                    "DELETE" => {
                        webhooks.remove(at);
                        ResponseTemplate::new(200).set_body_json(
                            json!({ "message": format!("Successfully deleted webhook {uuid}") }),
                        )
                    }
                    _ => ResponseTemplate::new(405),
                }
            }
            _ => ResponseTemplate::new(405),
        }
    }
}

async fn stand_in() -> (MockServer, WebhookApi) {
    let server = MockServer::start().await;
    let api = WebhookApi::default();
    Mock::given(path_regex("^/v1/campaigns/[^/]+/webhooks"))
        .and(header("X-Api-Key", API_KEY))
        .respond_with(api.clone())
        .mount(&server)
        .await;
    (server, api)
}

fn vars(server: &MockServer, campaign: &str) -> HashMap<String, String> {
    [
        ("SPARKLOOP_API_URL", server.uri()),
        ("SPARKLOOP_API_KEY", API_KEY.into()),
        ("SPARKLOOP_CAMPAIGN_ID", campaign.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

async fn run(args: &[&str], vars: &HashMap<String, String>) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let vars = vars.clone();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_command(&args, &vars)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn ensure_twice_registers_one_webhook_and_fixes_its_events() {
    let (server, api) = stand_in().await;
    let vars = vars(&server, CAMPAIGN);
    let ensure = ["sparkloop", "webhooks", "ensure", "--url", URL];

    let (ok, stdout, stderr) = run(&ensure, &vars).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.starts_with("created webhook_"), "{stdout}");
    let (ok, stdout, _) = run(&ensure, &vars).await;
    assert!(ok);
    assert!(stdout.starts_with("already registered"), "{stdout}");
    {
        let webhooks = api.webhooks.lock().unwrap();
        assert_eq!(webhooks.len(), 1, "{webhooks:?}");
        assert_eq!(webhooks[0]["url"], URL);
        assert_eq!(
            webhooks[0]["events"],
            json!({"new_referral": true, "reward_unlocked": true})
        );
    }

    // Someone switched an event off in SparkLoop: ensure switches it back on the same webhook.
    let uuid = api.webhooks.lock().unwrap()[0]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let update = [
        "sparkloop",
        "webhooks",
        "update",
        &uuid,
        "--events",
        "new_referral",
    ];
    let (ok, stdout, stderr) = run(&update, &vars).await;
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("updated {uuid}  {URL}  new_referral")
    );
    // An update of the URL alone leaves the events as they are.
    let moved = "https://moved.example.com/hook";
    let (ok, stdout, stderr) = run(
        &["sparkloop", "webhooks", "update", &uuid, "--url", moved],
        &vars,
    )
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("updated {uuid}  {moved}  new_referral")
    );
    let (ok, _, stderr) = run(&["sparkloop", "webhooks", "update", &uuid], &vars).await;
    assert!(
        !ok && stderr.contains("--url"),
        "nothing to change: {stderr}"
    );
    assert!(
        run(
            &["sparkloop", "webhooks", "update", &uuid, "--url", URL],
            &vars
        )
        .await
        .0
    );
    let (ok, stdout, _) = run(&ensure, &vars).await;
    assert!(ok);
    assert!(stdout.starts_with("updated the events of"), "{stdout}");
    assert_eq!(api.webhooks.lock().unwrap().len(), 1);

    // Another webhook of the campaign is listed, and left alone.
    let other = "https://other.example.com/hook";
    let create = [
        "sparkloop",
        "webhooks",
        "create",
        "--url",
        other,
        "--events",
        "reward_unlocked",
    ];
    assert!(run(&create, &vars).await.0);
    let (ok, stdout, _) = run(&["sparkloop", "webhooks", "list"], &vars).await;
    assert!(ok);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].ends_with(&format!("{other}  reward_unlocked")),
        "{stdout}"
    );
    assert!(
        lines[1].ends_with(&format!("{URL}  new_referral,reward_unlocked")),
        "{stdout}"
    );

    let (ok, stdout, _) = run(&["sparkloop", "webhooks", "delete", &uuid], &vars).await;
    assert!(ok);
    assert_eq!(
        stdout.trim(),
        format!("Successfully deleted webhook {uuid}")
    );
    assert_eq!(api.webhooks.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn sparkloop_errors_are_shown_and_http_urls_refused_before_any_call() {
    let (server, _) = stand_in().await;
    let (ok, _, stderr) = run(
        &[
            "sparkloop",
            "webhooks",
            "ensure",
            "--url",
            "http://bridge.example.com/x",
        ],
        &vars(&server, CAMPAIGN),
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("https://"), "{stderr}");
    assert!(server.received_requests().await.unwrap().is_empty());

    let (ok, _, stderr) = run(
        &["sparkloop", "webhooks", "list"],
        &vars(&server, "MF9a7d8983d1c"),
    )
    .await;
    assert!(!ok);
    assert!(
        stderr.contains("HTTP 404: Campaign MF9a7d8983d1c not found!"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(
        &["sparkloop", "webhooks", "delete", "webhook_ABC"],
        &vars(&server, CAMPAIGN),
    )
    .await;
    assert!(!ok);
    assert!(
        stderr.contains("Webhook webhook_ABC not found!"),
        "{stderr}"
    );
    assert!(!stderr.contains(API_KEY));

    let mut unset = vars(&server, CAMPAIGN);
    unset.remove("SPARKLOOP_CAMPAIGN_ID");
    let (ok, _, stderr) = run(&["sparkloop", "webhooks", "list"], &unset).await;
    assert!(!ok);
    assert!(
        stderr.contains("SPARKLOOP_CAMPAIGN_ID must be set"),
        "{stderr}"
    );
}
