//! The process's logger: `env_logger`, filtered by `RUST_LOG` (default `info`), which must parse
//! (DESIGN 3.11); one that silences the bridge's own lines is warned about. `BRIDGE_LOG_FORMAT`
//! chooses env_logger's own text lines or one JSON object a line (DESIGN 3.12).

use std::io::Write;

use log::{Level, LevelFilter, Metadata};
use serde_json::{Map, Value};

pub use crate::config::LogFormat;

/// A `RUST_LOG` that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("RUST_LOG does not parse (it is, for example, `info` or `info,referral_bridge=debug`)")]
pub struct LogSpecError(#[from] env_filter::ParseError);

/// The crates whose lines are the bridge's own.
const OWN_TARGETS: [&str; 2] = ["referral_bridge", "referral_bridge_adapters"];

/// Starts the logger in `format`, after checking `RUST_LOG` (as the environment has it now,
/// `.env` read).
pub fn init(format: LogFormat) -> Result<(), LogSpecError> {
    let spec = std::env::var("RUST_LOG").ok();
    if let Some(spec) = spec.as_deref() {
        if let Some(warning) = check(spec)? {
            if format == LogFormat::Json {
                eprintln!(
                    "{}",
                    json_line("WARN", "referral_bridge::logging", &warning, Map::new())
                );
            } else {
                eprintln!("referral-bridge: warning: {warning}");
            }
        }
    }
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == LogFormat::Json {
        builder.format(|out, record| {
            let mut fields = FieldsOf(Map::new());
            let _ = record.key_values().visit(&mut fields);
            let line = json_line(
                record.level().as_str(),
                record.target(),
                &record.args().to_string(),
                fields.0,
            );
            writeln!(out, "{line}")
        });
    }
    builder.init();
    Ok(())
}

/// One JSON log line: the time (RFC 3339, UTC, milliseconds), level, target, message, then the
/// line's own fields.
fn json_line(level: &str, target: &str, msg: &str, fields: Map<String, Value>) -> Value {
    let mut line = Map::new();
    let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    line.insert("ts".into(), ts.to_string().into());
    line.insert("level".into(), level.into());
    line.insert("target".into(), target.into());
    line.insert("msg".into(), msg.into());
    for (key, value) in fields {
        line.entry(key).or_insert(value);
    }
    Value::Object(line)
}

/// A line's structured fields, as JSON values.
struct FieldsOf(Map<String, Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for FieldsOf {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let json = if let Some(n) = value.to_u64() {
            n.into()
        } else if let Some(n) = value.to_i64() {
            n.into()
        } else if let Some(x) = value.to_f64() {
            serde_json::Number::from_f64((x * 1000.0).round() / 1000.0)
                .map_or(Value::Null, Value::Number)
        } else if let Some(b) = value.to_bool() {
            b.into()
        } else {
            value.to_string().into()
        };
        self.0.insert(key.as_str().to_string(), json);
        Ok(())
    }
}

/// Parses `spec`; a warning when it parses but lets none of the bridge's own lines through.
pub fn check(spec: &str) -> Result<Option<String>, LogSpecError> {
    let filter = env_filter::Builder::new().try_parse(spec)?.build();
    let heard = OWN_TARGETS.iter().any(|target| {
        filter.enabled(
            &Metadata::builder()
                .target(target)
                .level(Level::Error)
                .build(),
        )
    });
    Ok((!heard && filter.filter() != LevelFilter::Off).then(|| {
        format!(
            "RUST_LOG=`{}` names no module of the bridge, so it silences every line the bridge \
             writes; use a level (`info`) or `referral_bridge=<level>`",
            referral_bridge_adapters::excerpt(spec)
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_must_parse_and_should_reach_the_bridge() {
        assert!(check("info,referral_bridge=loud").is_err());
        assert!(check("info").unwrap().is_none());
        assert!(check("warn,referral_bridge::worker=debug")
            .unwrap()
            .is_none());
        assert!(check("referral_bridge_adapters=debug").unwrap().is_none());
        let warning = check("verbose").unwrap().unwrap();
        assert!(warning.contains("RUST_LOG"), "{warning}");
        assert!(check("actix_web=debug").unwrap().is_some());
        // Switching logging off is a choice, not a mistake.
        assert!(check("off").unwrap().is_none());
    }
}
