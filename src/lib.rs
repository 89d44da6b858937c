//! referral-bridge: integration middleware between email service providers and newsletter
//! referral platforms. See `README.md` for what it does and how to run it.

pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod fields;
pub mod http;
pub mod import;
pub mod inbound;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod peers;
pub mod provision;
pub mod reconcile;
pub mod send;
pub mod startup;
pub mod state;
pub mod worker;
