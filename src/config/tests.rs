//! The configuration's documented defaults and errors.

use super::*;

fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::from_vars(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn defaults_need_nothing() {
    let s = settings(&[]).unwrap();
    assert_eq!(
        s.database_url,
        DatabaseUrl::Sqlite("referral-bridge.db".into())
    );
    assert_eq!(s.listen, "127.0.0.1:8080");
    assert_eq!(s.max_body, 2 * 1024 * 1024);
    assert_eq!(s.retry.base_delay, Duration::from_secs(10));
    assert_eq!(s.retry.max_delay, Duration::from_secs(6 * 3600));
    assert_eq!(s.retry.max_age, Duration::from_secs(30 * 86400));
    assert_eq!(s.dedupe_window, Duration::from_secs(3600));
    assert_eq!(s.sparkloop.upstream, Upstream::Api);
}

#[test]
fn webhook_url_selects_webhook_mode() {
    let s = settings(&[("SPARKLOOP_INCOMING_WEBHOOK_URL", "http://127.0.0.1:9/hook")]).unwrap();
    assert_eq!(
        s.sparkloop.upstream,
        Upstream::Webhook {
            url: "http://127.0.0.1:9/hook".into()
        }
    );
}

#[test]
fn errors_name_the_variable() {
    for (pairs, variable) in [
        (vec![("RETRY_BASE_DELAY", "soon")], "RETRY_BASE_DELAY"),
        // Far beyond what unix milliseconds plus a duration can hold.
        (vec![("RETRY_MAX_AGE", "300000000000y")], "RETRY_MAX_AGE"),
        (vec![("BRIDGE_LEASE", "200y")], "BRIDGE_LEASE"),
        (
            vec![("BRIDGE_ADMIN_TOKEN", "short-token")],
            "BRIDGE_ADMIN_TOKEN",
        ),
        (
            vec![("BRIDGE_ADMIN_SESSION_TTL", "a while")],
            "BRIDGE_ADMIN_SESSION_TTL",
        ),
        (vec![("BRIDGE_MAX_BODY", "lots")], "BRIDGE_MAX_BODY"),
        (vec![("ESP_ADAPTER", "nope")], "ESP_ADAPTER"),
        (
            vec![("SPARKLOOP_UPSTREAM", "webhook")],
            "SPARKLOOP_INCOMING_WEBHOOK_URL",
        ),
        (
            vec![("SPARKLOOP_INCOMING_WEBHOOK_URL", "ftp://x")],
            "SPARKLOOP_INCOMING_WEBHOOK_URL",
        ),
        (vec![("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
        (vec![("BRIDGE_LISTEN", "localhost")], "BRIDGE_LISTEN"),
        (vec![("BRIDGE_WORKERS", "0")], "BRIDGE_WORKERS"),
        (vec![("BRIDGE_PLATFORM", "viral_loops")], "BRIDGE_PLATFORM"),
        (vec![("ESP_WRITE_TO", "note,tags")], "ESP_WRITE_TO"),
        (
            vec![("BRIDGE_PLATFORM", "loyaltysurf")],
            "LOYALTYSURF_CAMPAIGN_ID",
        ),
        (
            vec![
                ("BRIDGE_PLATFORM", "loyaltysurf"),
                ("LOYALTYSURF_CAMPAIGN_ID", "c"),
                ("LOYALTYSURF_RATE_LIMIT", "30/5s,lots"),
            ],
            "LOYALTYSURF_RATE_LIMIT",
        ),
        (
            vec![
                ("BRIDGE_PLATFORM", "loyaltysurf"),
                ("LOYALTYSURF_CAMPAIGN_ID", "c"),
                ("LOYALTYSURF_UNSUBSCRIBE", "archive"),
            ],
            "LOYALTYSURF_UNSUBSCRIBE",
        ),
        (
            vec![("BRIDGE_PLATFORM", "referralloop")],
            "REFERRALLOOP_WAITLIST_ID",
        ),
        (
            vec![("LOYALTYSURF_SIGNATURE_TOLERANCE", "a while")],
            "LOYALTYSURF_SIGNATURE_TOLERANCE",
        ),
        (
            vec![("BRIDGE_CONFIG", "/nonexistent/bridge.toml")],
            "BRIDGE_CONFIG",
        ),
        (
            vec![(
                "SPARKLOOP_REFLINK_TEMPLATE",
                "https://news.example.com/?ref=",
            )],
            "SPARKLOOP_REFLINK_TEMPLATE",
        ),
        (
            vec![("SPARKLOOP_REFLINK_TEMPLATE", "news.example.com/{code}")],
            "SPARKLOOP_REFLINK_TEMPLATE",
        ),
        (
            vec![("BRIDGE_ERASE_ON_DELETE", "yes please")],
            "BRIDGE_ERASE_ON_DELETE",
        ),
        (vec![("BRIDGE_RETENTION", "forever")], "BRIDGE_RETENTION"),
        (
            vec![("BRIDGE_RECONCILE_EVERY", "daily")],
            "BRIDGE_RECONCILE_EVERY",
        ),
        (
            vec![("BRIDGE_RECONCILE_EVERY", "10ms")],
            "BRIDGE_RECONCILE_EVERY",
        ),
    ] {
        let message = settings(&pairs).unwrap_err().to_string();
        assert!(message.starts_with(variable), "{pairs:?}: {message}");
    }
}

#[test]
fn esp_adapter_error_lists_known_adapters() {
    let message = settings(&[("ESP_ADAPTER", "nope")])
        .unwrap_err()
        .to_string();
    assert!(message.contains("custom"), "{message}");
}

#[test]
fn the_environment_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridge.toml");
    std::fs::write(
        &file,
        "retry_base_delay = \"1m\"\nbridge_workers = 3\ndedupe_window = \"5m\"\n",
    )
    .unwrap();
    let s = settings(&[
        ("BRIDGE_CONFIG", file.to_str().unwrap()),
        ("DEDUPE_WINDOW", "2h"),
    ])
    .unwrap();
    assert_eq!(s.retry.base_delay, Duration::from_secs(60));
    assert_eq!(s.worker.concurrency, 3);
    assert_eq!(s.dedupe_window, Duration::from_secs(7200));
}

#[test]
fn durations_and_urls() {
    assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
    assert_eq!(
        parse_duration("30d").unwrap(),
        Duration::from_secs(30 * 86400)
    );
    assert_eq!(
        DatabaseUrl::parse("sqlite://data/x.db").unwrap(),
        DatabaseUrl::Sqlite("data/x.db".into())
    );
    assert_eq!(
        DatabaseUrl::parse("postgres://u:pw@h/db")
            .unwrap()
            .redacted(),
        "postgres://u:***@h/db"
    );
}

#[test]
fn secrets_are_not_printed() {
    let s = settings(&[
        ("ESP_WEBHOOK_SECRET", "hunter2"),
        ("ESP_API_KEY", "hunter3"),
        ("ESP_SIGNING_SECRET", "hunter4"),
        ("BRIDGE_PLATFORM", "loyaltysurf"),
        ("LOYALTYSURF_CAMPAIGN_ID", "c"),
        ("LOYALTYSURF_API_KEY", "hunter5"),
    ])
    .unwrap();
    let printed = format!("{s:?} {:?}", s.esp.adapter_config());
    for secret in ["hunter2", "hunter3", "hunter4", "hunter5"] {
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
    assert_eq!(s.esp.adapter_config().key(), "hunter3");
}

#[test]
fn rates_are_read_in_their_usual_forms() {
    let rate = |text| RateLimit::parse(text);
    assert_eq!(
        rate("120/60s"),
        Ok(RateLimit {
            requests: 120,
            per: Duration::from_secs(60)
        })
    );
    assert_eq!(rate("5/s").unwrap().per, Duration::from_secs(1));
    assert_eq!(rate(" 10 / 1m ").unwrap().per, Duration::from_secs(60));
    for bad in ["", "10", "0/1s", "x/1s", "10/0s", "10/soon"] {
        assert!(rate(bad).is_err(), "{bad}");
    }
}

#[test]
fn env_example_lists_every_variable_the_config_reads() {
    let example = include_str!("../../.env.example");
    let listed = |name: &str| {
        example.lines().any(|line| {
            let line = line.trim_start_matches('#').trim_start();
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('='))
        })
    };
    let names = super::raw::Raw::keys();
    assert!(names.len() > 40, "{names:?}");
    let missing: Vec<String> = names
        .iter()
        .map(|n| n.to_uppercase())
        .chain(["BRIDGE_CONFIG".to_string()])
        .chain(
            super::fields::FIELDS
                .iter()
                .map(|(_, variable, _)| variable.to_string()),
        )
        .filter(|n| !listed(n))
        .collect();
    assert!(missing.is_empty(), ".env.example lacks {missing:?}");
}

#[test]
fn unknown_keys_and_tables_in_the_file_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridge.toml");
    let path = file.to_str().unwrap();
    for (text, key) in [
        ("sparkloop_api_kye = \"x\"\n", "sparkloop_api_kye"),
        ("[database]\nurl = \"sqlite://x.db\"\n", "database"),
    ] {
        std::fs::write(&file, text).unwrap();
        let message = settings(&[("BRIDGE_CONFIG", path)])
            .unwrap_err()
            .to_string();
        assert!(message.contains(&format!("`{key}`")), "{message}");
        assert!(message.contains("BRIDGE_CONFIG"), "{message}");
    }
    // Field names are known keys in the file too; the environment's other variables are not
    // the bridge's to judge.
    std::fs::write(&file, "esp_field_code = \"MY_CODE\"\nbridge_workers = 2\n").unwrap();
    let s = settings(&[("BRIDGE_CONFIG", path), ("SOME_OTHER_TOOL", "1")]).unwrap();
    assert!(s
        .esp
        .fields
        .0
        .iter()
        .any(|(field, name)| *field == fields::Field::Code && name == "MY_CODE"));
}

#[test]
fn an_empty_field_variable_is_an_error_naming_it() {
    let message = settings(&[("ESP_FIELD_CODE", " ")])
        .unwrap_err()
        .to_string();
    assert!(message.contains("ESP_FIELD_CODE"), "{message}");
    assert!(message.contains("`off`"), "{message}");
}
