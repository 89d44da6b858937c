//! Polling an ESP that posts no webhooks (listmonk): every `ESP_POLL_INTERVAL`, the subscribers
//! changed since the stored checkpoint are read a page at a time, each becomes an event (against
//! what the bridge knew of them) stored through the same ingest as a webhook, and the checkpoint
//! moves on only once the page is stored: a crash re-reads a page, and the repeats are
//! recognised as duplicates or as changing nothing.

use std::sync::Arc;
use std::time::Duration;

use referral_bridge_adapters::poll::{event_for, Polled};
use referral_bridge_adapters::EspAdapter;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::batch::BatchError;
use crate::db::{now_ms, poll as store, subscribers, Db, StoreError};
use crate::inbound::ingest::{self, Delivery, IngestQueue};
use crate::send::{http_request, SendError};

/// The inbox `source` of polled events, as of webhooks: the ESP's.
const SOURCE: &str = "esp";

/// Why a poll read or stored nothing; it is tried again an interval later.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The database could not be read or written (the checkpoint, a known subscriber).
    #[error("the database: {0}")]
    Store(#[from] StoreError),
    /// The ESP could not be reached, or its answer not read.
    #[error("cannot reach the ESP: {0}")]
    Send(#[from] SendError),
    /// The ESP refused: its status and its own message.
    #[error("HTTP {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The ESP's reason.
        message: String,
    },
    /// The ESP's answer is not the page the adapter expects.
    #[error("{0}")]
    Unreadable(String),
    /// A polled subscriber could not be stored through the ingest.
    #[error("cannot store a polled subscriber: {0}")]
    Ingest(#[from] BatchError),
}

/// Reads a polled ESP's changes into the ingest.
pub struct Poller {
    db: Db,
    esp: Arc<dyn EspAdapter>,
    ingest: IngestQueue,
    wake: Arc<Notify>,
    client: reqwest::Client,
    interval: Duration,
}

impl Poller {
    /// A poller for `esp` every `interval`.
    pub fn new(
        db: Db,
        esp: Arc<dyn EspAdapter>,
        ingest: IngestQueue,
        wake: Arc<Notify>,
        interval: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Poller {
            db,
            esp,
            ingest,
            wake,
            client: crate::send::client(timeout)?,
            interval,
        })
    }

    /// Polls until `shutdown`: a full page is followed at once by the next, otherwise the next
    /// poll waits an interval. A failed poll is logged and tried again an interval later.
    pub async fn run(self, shutdown: CancellationToken) {
        log::info!(
            "polling {} every {}",
            self.esp.name(),
            humantime::format_duration(self.interval)
        );
        loop {
            let wait = match self.poll_once().await {
                Ok(read) if read >= self.esp.poll_page_size() => Duration::ZERO,
                Ok(_) => self.interval,
                Err(e) => {
                    log::warn!("polling {}: {e}", self.esp.name());
                    self.interval
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Reads one page of changes, stores them, moves the checkpoint; returns how many were read.
    pub async fn poll_once(&self) -> Result<usize, PollError> {
        let source = self.esp.name();
        let checkpoint = self
            .db
            .read_async(move |conn| store::checkpoint(conn, source))
            .await?;
        let since = checkpoint.as_ref().map(|(at, id)| (at.as_str(), *id));
        let Some(request) = self.esp.poll_request(since) else {
            return Ok(0);
        };
        let response = http_request(&self.client, request)?
            .send()
            .await
            .map_err(SendError::from)?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(SendError::from)?;
        if !(200..300).contains(&status) {
            return Err(PollError::Refused {
                status,
                message: referral_bridge_adapters::outbound::error_text(&body),
            });
        }
        let page = self.esp.read_poll(&body).map_err(PollError::Unreadable)?;
        let Some(last) = page.last() else {
            return Ok(0);
        };
        let mut stored = 0;
        for polled in &page {
            if self.store(polled).await? == ingest::Accepted::Stored {
                stored += 1;
            }
        }
        // The last id at the last timestamp: the next page starts after it.
        let position = last.updated_at.clone();
        let last_id = page
            .iter()
            .filter(|p| p.updated_at == position)
            .map(|p| p.id)
            .max()
            .unwrap_or(last.id);
        let now = now_ms();
        self.db
            .write_async(move |conn| store::save_checkpoint(conn, source, &position, last_id, now))
            .await?;
        if stored > 0 {
            self.wake.notify_one();
        }
        log::info!(
            "polled {source}: {} subscribers changed, {stored} stored",
            page.len()
        );
        Ok(page.len())
    }

    /// Stores one polled subscriber as the event it means.
    async fn store(&self, polled: &Polled) -> Result<ingest::Accepted, PollError> {
        let literal = serde_json::json!(polled.id).to_string();
        let known = self
            .db
            .read_async(move |conn| store::known_by_esp_id(conn, &literal))
            .await?;
        let event = event_for(
            polled,
            known.as_ref().map(|(email, _)| email.as_str()),
            known
                .as_ref()
                .is_some_and(|(_, status)| status == subscribers::SUBSCRIBED),
        );
        let body = polled.raw.to_string();
        log::debug!("{SOURCE} poll: {event:?}");
        Ok(self
            .ingest
            .write(Delivery {
                events: vec![event],
                hash: ingest::body_hash(body.as_bytes()),
                body,
                now: now_ms(),
            })
            .await?)
    }
}
