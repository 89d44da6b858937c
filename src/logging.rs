//! The process's logger: `env_logger`, filtered by `RUST_LOG` (default `info`), which must parse
//! (DESIGN 3.11); one that silences the bridge's own lines is warned about.

use log::{Level, LevelFilter, Metadata};

/// A `RUST_LOG` that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("RUST_LOG does not parse (it is, for example, `info` or `info,referral_bridge=debug`)")]
pub struct LogSpecError(#[from] env_filter::ParseError);

/// The crates whose lines are the bridge's own.
const OWN_TARGETS: [&str; 2] = ["referral_bridge", "referral_bridge_adapters"];

/// Starts the logger, after checking `RUST_LOG` (as the environment has it now, `.env` read).
pub fn init() -> Result<(), LogSpecError> {
    let spec = std::env::var("RUST_LOG").ok();
    if let Some(spec) = spec.as_deref() {
        if let Some(warning) = check(spec)? {
            eprintln!("referral-bridge: warning: {warning}");
        }
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    Ok(())
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
