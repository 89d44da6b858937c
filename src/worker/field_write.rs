//! Field writes: the subscriber's referral fields as they are when the job is sent, with the
//! calls some ESPs need first (the contact's id, the field ids, the contact to merge with).

use referral_bridge_adapters::outbound::{self, FieldUpdate, MessageId};
use sha2::{Digest, Sha256};

use super::deliver::{Prepared, Unsent, LOOKUP_BODY_BYTES};
use super::Worker;
use crate::db::jobs::{ClaimedJob, Written};
use crate::db::{now_ms, referral};
use crate::send::{http_request, Answer, SendError};

impl Worker {
    /// The request that writes the subscriber's referral fields as they are now (so that one
    /// job carries every change made since it was queued).
    pub(super) async fn prepare_field_write(&self, job: &ClaimedJob) -> Result<Prepared, Unsent> {
        let id = job.subscriber_id;
        let state = self
            .db
            .read_async(move |conn| referral::referral_state(conn, id))
            .await
            .map_err(|source| Unsent::Store {
                what: "cannot read the subscriber",
                source,
            })?
            .ok_or(Unsent::NoSubscriber(id))?;
        let values = crate::fields::values(
            &self.settings.esp.fields,
            &state,
            self.settings.sparkloop.reflink_template.as_deref(),
        );
        if self.esp.needs_field_ids() {
            self.learn_field_ids().await?;
        }
        if let Some(read) = self.esp.read_before_write(&state.email) {
            return self.merged_write(job, &state, &values, read).await;
        }
        let mut esp_id = referral::esp_id_value(state.esp_id.as_deref());
        if esp_id.is_none() {
            if let Some(lookup) = self.esp.id_lookup(&state.email) {
                esp_id = Some(self.look_up_id(job.subscriber_id, lookup).await?);
            }
        }
        let update = FieldUpdate {
            email: &state.email,
            esp_id: esp_id.as_ref(),
            fields: &values,
        };
        let message = message_id(job.id, &update);
        self.unless_unchanged(&state, self.esp.field_update(&update, &message))
    }

    /// The write, unless its body is byte for byte the one last written to this subscriber
    /// (DESIGN 3.7: a no-op write is not sent).
    fn unless_unchanged(
        &self,
        state: &referral::ReferralState,
        request: outbound::OutboundRequest,
    ) -> Result<Prepared, Unsent> {
        let written = Written {
            body: String::from_utf8_lossy(&request.body).into_owned(),
            sha256: hex::encode(Sha256::digest(&request.body)),
        };
        if state.esp_written_sha256.as_deref() == Some(written.sha256.as_str()) {
            return Ok(Prepared::Unchanged(written));
        }
        Ok(Prepared::Call(self.outbound(request)?, Some(written)))
    }

    /// An adapter's request, ready to send to the ESP.
    fn outbound(
        &self,
        request: outbound::OutboundRequest,
    ) -> Result<reqwest::RequestBuilder, SendError> {
        http_request(&self.esp_client, request)
    }

    /// Sends a call made before a write, paced like any call to the ESP, and reads its whole
    /// answer (a 429 pauses the pace).
    async fn call_before(
        &self,
        what: &'static str,
        request: outbound::OutboundRequest,
    ) -> Result<Answer, Unsent> {
        self.esp_pace.acquire().await;
        let response = self
            .outbound(request)?
            .send()
            .await
            .map_err(|e| Unsent::Before {
                what,
                source: e.into(),
            })?;
        let answer = self.read_esp_answer(response, LOOKUP_BODY_BYTES).await;
        if answer.status == 429 {
            self.esp_pace.pause(answer.retry_after);
        }
        Ok(answer)
    }

    /// Reads the contact (paced like any call), then makes the write that merges the fields
    /// into what it holds; no contact yet, or a failed read, leaves the job to be tried again.
    async fn merged_write(
        &self,
        job: &ClaimedJob,
        state: &referral::ReferralState,
        values: &[(String, serde_json::Value)],
        read: outbound::OutboundRequest,
    ) -> Result<Prepared, Unsent> {
        let answer = self.call_before("reading the contact", read).await?;
        let esp_id = referral::esp_id_value(state.esp_id.as_deref());
        let update = FieldUpdate {
            email: &state.email,
            esp_id: esp_id.as_ref(),
            fields: values,
        };
        let message = message_id(job.id, &update);
        match self
            .esp
            .merged_update(&update, &message, &answer.as_adapter())
        {
            Ok(request) => self.unless_unchanged(state, request),
            Err(outbound::MergeError::NotThereYet) => Err(Unsent::NotThereYet),
            Err(outbound::MergeError::Failed(reason)) => Err(Unsent::Refused(reason)),
        }
    }

    /// Reads the ESP's field ids (ActiveCampaign's writes go by id), paced like any call.
    async fn learn_field_ids(&self) -> Result<(), Unsent> {
        let Some(list) = self.esp.list_fields() else {
            return Ok(());
        };
        let answer = self.call_before("listing the ESP's fields", list).await?;
        self.esp
            .learn_fields(&answer.as_adapter())
            .map_err(Unsent::Refused)
    }

    /// Finds the ESP's id of a subscriber with the adapter's `lookup` call (paced like any
    /// call to the ESP), and keeps it. No contact yet is an error, so that the write is tried
    /// again later with the usual back-off.
    async fn look_up_id(
        &self,
        subscriber_id: i64,
        lookup: outbound::OutboundRequest,
    ) -> Result<serde_json::Value, Unsent> {
        // The whole answer is read: the id may come after a lot of other data.
        let answer = self.call_before("looking up the contact", lookup).await?;
        let id = self.esp.read_id(&answer.as_adapter());
        match id {
            Some(id) => {
                let literal = id.to_string();
                self.db
                    .write_async(move |conn| referral::set_esp_id(conn, subscriber_id, &literal))
                    .await
                    .map_err(|source| Unsent::Store {
                        what: "cannot keep the contact's id",
                        source,
                    })?;
                Ok(id)
            }
            None if (200..300).contains(&answer.status) => Err(Unsent::NotThereYet),
            None => Err(Unsent::Refused(format!(
                "HTTP {} looking up the contact",
                answer.status
            ))),
        }
    }
}

/// The id of the message that writes `update` for job `job_id`: the same for the same job and
/// content, so that a receiver may drop a repeat.
pub(super) fn message_id(job_id: i64, update: &FieldUpdate<'_>) -> MessageId {
    let digest = Sha256::digest(format!("{update:?}").as_bytes());
    MessageId {
        id: format!("msg_{job_id}_{}", &hex::encode(digest)[..16]),
        timestamp: now_ms() / 1000,
    }
}
