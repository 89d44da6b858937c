use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = referral_bridge::cli::Cli::parse();
    cli.end_quietly_on_closed_pipe();
    // Before the logger, so that RUST_LOG may come from .env too.
    let started = referral_bridge::config::load_env_file()
        .map(drop)
        .map_err(anyhow::Error::from)
        .and_then(|()| referral_bridge::logging::init().map_err(anyhow::Error::from));
    if let Err(e) = started {
        eprintln!("referral-bridge: {e:#}");
        return ExitCode::FAILURE;
    }
    match referral_bridge::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("referral-bridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
