//! What comes in: the ESP's events (webhooks, or polling for an ESP that posts none) and the
//! referral platforms' callbacks, each stored durably in batched transactions together with the
//! jobs it queues, before the sender is answered.

pub mod callbacks;
pub mod ingest;
pub mod poll;
