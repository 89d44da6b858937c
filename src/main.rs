use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = referral_bridge::cli::Cli::parse();
    cli.end_quietly_on_closed_pipe();
    // Before the configuration and the logger, so that both may come from .env.
    if let Err(e) = referral_bridge::config::load_env_file() {
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
