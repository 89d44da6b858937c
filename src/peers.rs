//! The outside systems this configuration talks to, built once from the settings: the ESP's
//! adapter and the referral platform's outgoing half, each with the pace its calls keep to.
//! Routing decisions (which queue ESP events go to, which of them are forwarded, how long a
//! backlog takes) are made here, by the code that routes, not on the settings.

use referral_bridge_adapters::platform::DELETE;
use std::sync::Arc;

use anyhow::Context;
use referral_bridge_adapters::platform::OutboundPlatform;
use referral_bridge_adapters::sparkloop::SparkLoopOutbound;
use referral_bridge_adapters::EspAdapter;

use crate::config::{Platform, RateLimit, Settings, Upstream};

/// The configured ESP and platform, and their paces.
#[derive(Clone)]
pub struct Peers {
    /// The ESP's adapter: webhooks in, field writes out.
    pub esp: Arc<dyn EspAdapter>,
    /// The platform ESP events go to.
    pub platform: Arc<dyn OutboundPlatform>,
    /// `ESP_RATE_LIMIT`: every window holds.
    pub esp_limits: Vec<RateLimit>,
    /// The platform's rate limits, all at once; none when its calls are not paced.
    pub platform_limits: Vec<RateLimit>,
    /// `BRIDGE_ERASE_ON_DELETE`, checked against what the platform can delete.
    pub erase_on_delete: bool,
}

/// Which ESP events are queued for the platform, and under which destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarding {
    /// `jobs.destination`.
    pub destination: &'static str,
    subscribe: bool,
    update: bool,
    unsubscribe: bool,
    /// An ESP's deletion of a contact also queues the platform's deletion (`BRIDGE_ERASE_ON_DELETE`).
    erase_on_delete: bool,
}

impl Forwarding {
    /// What `platform` is sent: the kinds it [`OutboundPlatform::forwards`].
    pub fn of(platform: &dyn OutboundPlatform) -> Forwarding {
        Forwarding {
            destination: platform.destination(),
            subscribe: platform.forwards("subscribe"),
            update: platform.forwards("update"),
            unsubscribe: platform.forwards("unsubscribe"),
            erase_on_delete: false,
        }
    }

    /// SparkLoop's forwarding: all three kinds, to the `sparkloop` queue.
    pub fn sparkloop() -> Forwarding {
        Forwarding::of(&SparkLoopOutbound::Webhook { url: String::new() })
    }

    /// Whether a job of `kind` is queued.
    pub fn forwards(&self, kind: &str) -> bool {
        match kind {
            "subscribe" => self.subscribe,
            "update" => self.update,
            "unsubscribe" => self.unsubscribe,
            DELETE => self.erase_on_delete,
            _ => false,
        }
    }
}

impl Peers {
    /// The ESP adapter and platform `settings` name.
    pub fn new(settings: &Settings) -> anyhow::Result<Peers> {
        let esp: Arc<dyn EspAdapter> = referral_bridge_adapters::esp_adapter(
            &settings.esp.adapter,
            settings.esp.adapter_config(),
        )
        .context("ESP_ADAPTER names no known adapter")?
        .into();
        let (platform, platform_limits): (Arc<dyn OutboundPlatform>, _) = match &settings.platform {
            Platform::SparkLoop => {
                let sparkloop = &settings.sparkloop;
                match &sparkloop.upstream {
                    Upstream::Webhook { url } => (
                        Arc::new(SparkLoopOutbound::Webhook { url: url.clone() }),
                        Vec::new(),
                    ),
                    Upstream::Api => (
                        Arc::new(SparkLoopOutbound::Api {
                            api_url: sparkloop.api_url.clone(),
                            api_key: sparkloop.api_key.clone(),
                        }),
                        vec![sparkloop.rate_limit],
                    ),
                }
            }
            Platform::LoyaltySurf { api, rate_limits } => {
                (Arc::new(api.clone()), rate_limits.clone())
            }
            Platform::ReferralLoop { api, rate_limit } => {
                (Arc::new(api.clone()), vec![*rate_limit])
            }
        };
        if settings.erase_on_delete {
            if let Err(why) = platform.deletes() {
                anyhow::bail!("BRIDGE_ERASE_ON_DELETE is true, but {why}");
            }
        }
        Ok(Peers {
            erase_on_delete: settings.erase_on_delete,
            esp,
            platform,
            esp_limits: settings.esp.rate_limits.clone(),
            platform_limits,
        })
    }

    /// How ESP events are queued for the platform.
    pub fn forwarding(&self) -> Forwarding {
        Forwarding {
            erase_on_delete: self.erase_on_delete,
            ..Forwarding::of(self.platform.as_ref())
        }
    }

    /// The rate limit jobs for `destination` are sent at, if they are paced (of several, the
    /// one that binds over a long backlog).
    pub fn pace_of(&self, destination: &str) -> Option<RateLimit> {
        if destination == crate::fields::DESTINATION {
            return RateLimit::slowest(&self.esp_limits);
        }
        if destination == self.platform.destination() {
            return RateLimit::slowest(&self.platform_limits);
        }
        None
    }

    /// How long `open` jobs for `destination` take at its rate limit, if it is paced.
    pub fn drain_seconds(&self, destination: &str, open: i64) -> Option<f64> {
        self.pace_of(destination)
            .map(|limit| limit.time_for(open.max(0) as u64).as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(pairs: &[(&str, &str)]) -> Peers {
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Peers::new(&Settings::from_vars(vars).unwrap()).unwrap()
    }

    #[test]
    fn platforms_have_their_documented_defaults() {
        let p = peers(&[
            ("BRIDGE_PLATFORM", "loyaltysurf"),
            ("LOYALTYSURF_CAMPAIGN_ID", "ct8f71"),
        ]);
        assert_eq!(p.platform.destination(), "loyaltysurf");
        assert_eq!(
            p.platform_limits,
            vec![
                RateLimit::parse("30/5s").unwrap(),
                RateLimit::parse("200/60s").unwrap()
            ]
        );
        assert_eq!(p.platform.max_connections(), Some(3));
        // 200 a minute binds a long backlog, not 30 per 5 s (360 a minute).
        assert_eq!(p.pace_of("loyaltysurf"), RateLimit::parse("200/60s").ok());
        assert_eq!(p.pace_of("sparkloop"), None);
        assert!(!p.forwarding().forwards("unsubscribe"));
        let p = peers(&[
            ("BRIDGE_PLATFORM", "referralloop"),
            ("REFERRALLOOP_WAITLIST_ID", "w"),
        ]);
        assert_eq!(p.pace_of("referralloop"), RateLimit::parse("1000/1h").ok());
        assert!(!p.forwarding().forwards("unsubscribe"));
        let p = peers(&[("SPARKLOOP_INCOMING_WEBHOOK_URL", "http://127.0.0.1:9/hook")]);
        assert_eq!(p.pace_of("sparkloop"), None);
        assert_eq!(p.forwarding(), Forwarding::sparkloop());
        assert!(p.forwarding().forwards("unsubscribe"));
        let p = peers(&[("ESP_ADAPTER", "klaviyo")]);
        assert_eq!(p.pace_of("sparkloop"), RateLimit::parse("120/60s").ok());
        assert_eq!(p.pace_of("esp"), RateLimit::parse("750/60s").ok());
    }
}
