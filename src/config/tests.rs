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

/// The names of [`Raw`]'s fields, as serde sees them: every variable the configuration reads.
fn variables_read() -> &'static [&'static str] {
    use serde::de::{self, Deserialize, Visitor};

    struct Names(&'static [&'static str]);

    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Stop
        }
    }

    impl<'de> de::Deserializer<'de> for &mut Names {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut names = Names(&[]);
    let _ = super::raw::Raw::deserialize(&mut names);
    names.0
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
    let names = variables_read();
    assert!(names.len() > 50, "{names:?}");
    let missing: Vec<String> = names
        .iter()
        .map(|n| n.to_uppercase())
        .chain(["BRIDGE_CONFIG".to_string()])
        .filter(|n| !listed(n))
        .collect();
    assert!(missing.is_empty(), ".env.example lacks {missing:?}");
}
