//! Black-box tests: the bridge runs on port 0 with a real database (a SQLite file per test, or a
//! fresh Postgres database per test when TEST_DATABASE_URL is set), SparkLoop is a wiremock
//! server, and the ESP's requests carry the seed's payloads.

mod activecampaign;
mod admin;
mod attribution;
mod beehiiv;
mod brevo;
mod callbacks;
mod configuration;
mod container;
mod dashboard;
mod delivery;
mod document;
mod esp_webhooks;
mod ghost;
mod hardening;
mod helpers;
mod import;
mod kit;
mod klaviyo;
mod lifecycle;
mod listmonk;
mod loyaltysurf;
mod mailchimp;
mod mailerlite;
mod operations;
mod outage;
mod pacing;
mod prism;
mod processes;
mod provision;
mod read_back;
mod reconcile;
mod referralloop;
mod registration;
mod schemathesis;
mod upstream;
