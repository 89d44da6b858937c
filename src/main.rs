use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // Before the logger, so that RUST_LOG may come from .env too.
    let _ = dotenvy::dotenv();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = referral_bridge::cli::Cli::parse();
    match referral_bridge::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("referral-bridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
