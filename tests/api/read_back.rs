//! `reconcile --esp` end to end (issue 17): the referral fields a Mailchimp audience holds, read
//! back a page of members at a time from a stand-in that keeps them, compared with what the
//! bridge would write, and rewritten with `--fix`. The listings of Brevo, Kit and Mailchimp are
//! checked against the vendors' own specs in `prism.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::matchers::path_regex;
use wiremock::{Mock, Request, ResponseTemplate};

use crate::helpers::{base_vars, run_command, TestApp};

/// A stand-in Mailchimp audience that keeps its members' merge fields: listed in pages of the
/// documented shape (`members`, `total_items`), changed by the bridge's `PATCH`.
#[derive(Clone, Default)]
struct Audience(Arc<Mutex<Vec<referral_bridge_adapters::outbound::Contact>>>);

const AUDIENCE: &str = "/mc/3.0/lists/a6b5da1054";

impl wiremock::Respond for Audience {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut members = self.0.lock().unwrap();
        let path = request.url.path();
        if request.method.as_str() == "GET" && path == format!("{AUDIENCE}/members") {
            let query: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
            let (count, offset): (usize, usize) = (
                query["count"].parse().unwrap(),
                query["offset"].parse().unwrap(),
            );
            assert_eq!(
                query["fields"],
                "members.email_address,members.merge_fields,total_items"
            );
            let page: Vec<Value> = members
                .iter()
                .skip(offset)
                .take(count)
                .map(|(email, fields)| json!({"email_address": email, "merge_fields": fields}))
                .collect();
            return ResponseTemplate::new(200)
                .set_body_json(json!({"members": page, "total_items": members.len()}));
        }
        if request.method.as_str() == "PATCH" {
            let hash = path.rsplit('/').next().unwrap();
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            let member = members.iter_mut().find(|(email, _)| {
                referral_bridge_adapters::mailchimp::subscriber_hash(email) == hash
            });
            return match member {
                Some((email, fields)) => {
                    for (k, v) in body["merge_fields"].as_object().unwrap() {
                        fields.insert(k.clone(), v.clone());
                    }
                    ResponseTemplate::new(200).set_body_json(json!({"email_address": email}))
                }
                None => {
                    ResponseTemplate::new(404).set_body_json(json!({"title": "Resource Not Found"}))
                }
            };
        }
        ResponseTemplate::new(404)
    }
}

#[tokio::test]
async fn the_esp_read_back_finds_fields_changed_in_mailchimp_and_rewrites_them() {
    let app = TestApp::spawn_with(
        &[
            ("ESP_ADAPTER", "mailchimp"),
            ("ESP_API_URL", "{stand-in}/mc/3.0"),
            ("ESP_API_KEY", "0123abcd-us6"),
            ("ESP_LIST_ID", "a6b5da1054"),
            ("ESP_WRITE_DELAY", "10ms"),
        ],
        None,
    )
    .await;
    let audience = Audience::default();
    {
        let mut members = audience.0.lock().unwrap();
        members.push(("ann@example.com".into(), serde_json::Map::new()));
        // More than a page of contacts the bridge does not know (the ESP's other readers).
        for i in 0..1000 {
            members.push((format!("other{i}@example.com"), serde_json::Map::new()));
        }
    }
    app.sparkloop
        .register(Mock::given(path_regex("^/mc/")).respond_with(audience.clone()))
        .await;
    let callback = json!({"type": "sync_subscriber", "subscriber": {"id": "sub_1",
        "email": "ann@example.com", "referral_code": "ada90f39", "referred": true,
        "tot_referrals": 4}});
    assert_eq!(
        app.post_sparkloop(&callback.to_string()).await.status(),
        200
    );
    app.drain().await;
    let held = || audience.0.lock().unwrap()[0].1.clone();
    assert_eq!(held()["RH_CODE"], "ada90f39");
    // Someone edits her code in Mailchimp.
    audience.0.lock().unwrap()[0]
        .1
        .insert("RH_CODE".into(), json!("edited"));

    let mut vars = base_vars(&app.db, &app.sparkloop);
    for (k, v) in [
        ("ESP_ADAPTER", "mailchimp".to_string()),
        ("ESP_API_URL", format!("{}/mc/3.0", app.sparkloop.uri())),
        ("ESP_API_KEY", "0123abcd-us6".into()),
        ("ESP_LIST_ID", "a6b5da1054".into()),
    ] {
        vars.insert(k.into(), v);
    }
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("esp.csv");
    let report_arg = report.to_str().unwrap().to_string();
    let run = |args: Vec<String>| {
        let vars = vars.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_command(&args, &vars)
        })
    };
    let (ok, stdout, stderr) = run(vec![
        "reconcile".into(),
        "--esp".into(),
        "--report".into(),
        report_arg,
    ])
    .await
    .unwrap();
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("esp_fields_differ: 1 (1 subscribers)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("read back: 1001 ESP contacts, 1 subscribed here, 1 differences"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(&report).unwrap(),
        "email,kind,field,here,platform\nann@example.com,esp_fields_differ,RH_CODE,ada90f39,edited\n"
    );
    assert_eq!(
        held()["RH_CODE"],
        "edited",
        "without --fix nothing is written"
    );

    // The same body as the bridge's last write is sent again: the ESP no longer holds it.
    let (ok, stdout, stderr) = run(vec!["reconcile".into(), "--esp".into(), "--fix".into()])
        .await
        .unwrap();
    assert!(ok, "{stdout}{stderr}");
    assert!(stderr.contains("queued 1 field writes"), "{stderr}");
    app.drain().await;
    assert_eq!(held()["RH_CODE"], "ada90f39");
    let (ok, stdout, stderr) = run(vec!["reconcile".into(), "--esp".into()]).await.unwrap();
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("esp_fields_differ: 0 (0 subscribers)"),
        "{stdout}"
    );
    app.stop().await;
}
