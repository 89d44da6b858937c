//! Reading one page of the campaign's subscribers from SparkLoop: at the configured pace, a 429
//! waited out (its `Retry-After`, or a whole window without one) and the page asked for again,
//! a network failure or a 5xx tried again a few times before the run stops.

use std::time::{Duration, SystemTime};

use referral_bridge_adapters::outbound::error_text;
use referral_bridge_adapters::sparkloop::subscribers::{Page, SubscriberList};

use super::{Observer, Reconciler};
use crate::send::{describe, http_request, Answer};

/// The most of a page's answer that is read: 200 subscriber objects are about 100 KB.
const PAGE_BYTES: usize = 16 << 20;

/// Tries of a page that fails (network, 5xx) before the run stops.
const TRIES: u32 = 4;

/// Why a page could not be read; the run stops, and pages before it stay compared.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    /// SparkLoop refused the call (a wrong key, an unknown campaign).
    #[error(
        "SparkLoop answered HTTP {status} to page {page} of the campaign's subscribers: {said}"
    )]
    Refused {
        /// The page.
        page: u32,
        /// The status.
        status: u16,
        /// Its reason, as it gave it.
        said: String,
    },
    /// No answer that could be read, after every try.
    #[error(
        "page {page} of the campaign's subscribers could not be read after {TRIES} tries: {reason}"
    )]
    Unreadable {
        /// The page.
        page: u32,
        /// The last failure.
        reason: String,
    },
}

/// Page `page` of the campaign's subscribers.
pub(super) async fn fetch(
    reconciler: &Reconciler,
    page: u32,
    observer: &mut dyn Observer,
) -> Result<Page, ListingError> {
    let mut failures = 0;
    loop {
        reconciler.pace.acquire().await;
        let reason = match call(reconciler, page).await {
            Ok(answer) if answer.status == 429 => {
                let delay = answer.retry_after.unwrap_or(reconciler.rate.per);
                observer.paused(delay);
                reconciler.pace.pause(Some(delay));
                continue;
            }
            Ok(answer) if (200..300).contains(&answer.status) => {
                match SubscriberList::read_page(&answer.body) {
                    Ok(page) => return Ok(page),
                    Err(e) => format!("the answer is not a page of subscribers: {e}"),
                }
            }
            Ok(answer) if answer.status == 408 || answer.status >= 500 => {
                format!("HTTP {}", answer.status)
            }
            Ok(answer) => {
                return Err(ListingError::Refused {
                    page,
                    status: answer.status,
                    said: error_text(&answer.body).trim().to_string(),
                })
            }
            Err(reason) => reason,
        };
        failures += 1;
        if failures >= TRIES {
            return Err(ListingError::Unreadable { page, reason });
        }
        log::warn!("page {page} of SparkLoop's subscribers: {reason}; trying again");
        tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(failures)).await;
    }
}

/// One call for the page, its answer read.
async fn call(reconciler: &Reconciler, page: u32) -> Result<Answer, String> {
    let request = reconciler.list.page(page).map_err(|e| e.to_string())?;
    let request = http_request(&reconciler.http, request).map_err(|e| e.to_string())?;
    let response = request.send().await.map_err(|e| describe(&e))?;
    Ok(Answer::read(response, PAGE_BYTES, |headers| {
        headers.retry_after(SystemTime::now())
    })
    .await)
}
