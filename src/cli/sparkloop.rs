//! `referral-bridge sparkloop webhooks ...`: the campaign's webhooks at SparkLoop, through the
//! calls its adapter describes ([`referral_bridge_adapters::sparkloop::webhooks`]).

use std::process::ExitCode;

use clap::Subcommand;
use referral_bridge_adapters::sparkloop::webhooks::{
    parse_events, EnsurePlan, RegistrationError, Webhook, WebhookApi,
};
use serde_json::Value;

use crate::config::Settings;
use crate::send::{http_request, Answer};

#[derive(Debug, Subcommand)]
pub enum SparkLoopCommand {
    /// Manage the campaign's webhooks (SPARKLOOP_CAMPAIGN_ID) through SparkLoop's API
    /// (SPARKLOOP_API_URL, with SPARKLOOP_API_KEY as X-Api-Key).
    Webhooks {
        #[command(subcommand)]
        action: WebhooksCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List the campaign's webhooks: id, URL and the events each sends.
    List,
    /// Create a webhook.
    Create {
        /// Where SparkLoop posts: the bridge's public https address of /webhooks/sparkloop.
        #[arg(long)]
        url: String,
        /// The events it sends, comma-separated: new_referral, reward_unlocked.
        #[arg(long, default_value = "new_referral,reward_unlocked")]
        events: String,
    },
    /// Change a webhook's URL or events; what is not given stays as it is.
    #[command(group = clap::ArgGroup::new("change").required(true).multiple(true))]
    Update {
        /// The webhook's id, as `list` shows it (webhook_...).
        uuid: String,
        /// A new URL (https).
        #[arg(long, group = "change")]
        url: Option<String>,
        /// The events it sends from now on, comma-separated: new_referral, reward_unlocked.
        #[arg(long, group = "change")]
        events: Option<String>,
    },
    /// Delete a webhook.
    Delete {
        /// The webhook's id, as `list` shows it (webhook_...).
        uuid: String,
    },
    /// Register URL once: a webhook already posting to URL is given the events (if it has
    /// others) instead of a second one being created. Safe to run at every deploy.
    Ensure {
        /// The bridge's public https address of /webhooks/sparkloop.
        #[arg(long)]
        url: String,
        /// The events it must send, comma-separated: new_referral, reward_unlocked.
        #[arg(long, default_value = "new_referral,reward_unlocked")]
        events: String,
    },
}

/// The campaign's webhooks, called over the network.
struct Client {
    api: WebhookApi,
    http: reqwest::Client,
}

impl Client {
    /// The webhooks as the settings name them (`SPARKLOOP_API_URL`, `SPARKLOOP_API_KEY`,
    /// `SPARKLOOP_CAMPAIGN_ID`).
    fn new(settings: &Settings) -> Result<Self, RegistrationError> {
        let sparkloop = &settings.sparkloop;
        let api_key = sparkloop
            .api_key
            .as_ref()
            .ok_or(RegistrationError::NotConfigured("SPARKLOOP_API_KEY"))?;
        let campaign = sparkloop
            .campaign_id
            .as_deref()
            .ok_or(RegistrationError::NotConfigured("SPARKLOOP_CAMPAIGN_ID"))?;
        let http = crate::send::client(settings.worker.request_timeout)
            .map_err(|e| RegistrationError::Transport(e.to_string()))?;
        Ok(Client {
            api: WebhookApi::new(&sparkloop.api_url, api_key.clone(), campaign),
            http,
        })
    }

    /// Sends one call and reads SparkLoop's answer, its `error` text when it refuses.
    async fn call(
        &self,
        request: referral_bridge_adapters::outbound::OutboundRequest,
    ) -> Result<Value, RegistrationError> {
        let transport = |e: reqwest::Error| RegistrationError::Transport(crate::send::describe(&e));
        let response = http_request(&self.http, request)
            .map_err(|e| RegistrationError::Transport(e.to_string()))?
            .send()
            .await
            .map_err(transport)?;
        let answer = Answer::read(response, 1 << 20, |_| None).await;
        WebhookApi::read(&answer.as_adapter())
    }

    async fn list(&self) -> Result<Vec<Webhook>, RegistrationError> {
        WebhookApi::read_list(self.call(self.api.list()).await?)
    }
}

/// `sparkloop webhooks ...`: one call (two for `ensure`), its outcome printed.
pub async fn webhooks(settings: &Settings, action: WebhooksCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(settings)?;
    let api = &client.api;
    match action {
        WebhooksCommand::List => {
            let webhooks = client.list().await?;
            if webhooks.is_empty() {
                println!("the campaign has no webhooks");
            }
            for webhook in webhooks {
                println!("{webhook}");
            }
        }
        WebhooksCommand::Create { url, events } => {
            let request = api.create(&url, &parse_events(&events)?)?;
            let webhook = WebhookApi::read_webhook(client.call(request).await?)?;
            println!("created {webhook}");
        }
        WebhooksCommand::Update { uuid, url, events } => {
            let events = events.as_deref().map(parse_events).transpose()?;
            let request = api.update(&uuid, url.as_deref(), events.as_deref())?;
            let webhook = WebhookApi::read_webhook(client.call(request).await?)?;
            println!("updated {webhook}");
        }
        WebhooksCommand::Delete { uuid } => {
            let answer = client.call(api.delete(&uuid)).await?;
            println!("{}", WebhookApi::read_deleted(&answer, &uuid));
        }
        WebhooksCommand::Ensure { url, events } => {
            let events = parse_events(&events)?;
            // The URL is checked before anything is sent.
            referral_bridge_adapters::sparkloop::webhooks::check_url(&url)?;
            match WebhookApi::plan_ensure(client.list().await?, &url, &events)? {
                EnsurePlan::Keep(webhook) => println!("already registered: {webhook}"),
                EnsurePlan::Update(uuid) => {
                    let request = api.update(&uuid, None, Some(&events))?;
                    let webhook = WebhookApi::read_webhook(client.call(request).await?)?;
                    println!("updated the events of {webhook}");
                }
                EnsurePlan::Create => {
                    let request = api.create(&url, &events)?;
                    let webhook = WebhookApi::read_webhook(client.call(request).await?)?;
                    println!("created {webhook}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
