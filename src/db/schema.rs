//! The tables, written by hand in types both backends share (see `diesel.toml`).

diesel::table! {
    /// People the bridge has heard of, keyed by normalised email.
    subscribers (id) {
        id -> BigInt,
        email -> Text,
        esp_id -> Nullable<Text>,
        first_name -> Nullable<Text>,
        name -> Nullable<Text>,
        status -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        platform_id -> Nullable<Text>,
        referral_code -> Nullable<Text>,
        referral_link -> Nullable<Text>,
        referred -> Nullable<Bool>,
        referral_count -> Nullable<BigInt>,
        next_reward -> Nullable<BigInt>,
        last_reward -> Nullable<Text>,
        last_coupon -> Nullable<Text>,
        partner_status -> Nullable<Text>,
        last_referral_at -> Nullable<BigInt>,
        position -> Nullable<BigInt>,
        platform_removed -> Nullable<Bool>,
        leaderboard_rank -> Nullable<BigInt>,
        winner -> Nullable<Bool>,
        fraud_risk -> Nullable<Text>,
        esp_written_sha256 -> Nullable<Text>,
        unpushed -> Bool,
    }
}

diesel::table! {
    /// How far a polled ESP has been read.
    poll_checkpoints (source) {
        source -> Text,
        position -> Text,
        last_id -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    /// Rewards redeemed, kept for the operator.
    redemptions (id) {
        id -> BigInt,
        subscriber_id -> BigInt,
        reward_id -> Nullable<Text>,
        reward_name -> Nullable<Text>,
        variant_name -> Nullable<Text>,
        variant_sku -> Nullable<Text>,
        coupon -> Nullable<Text>,
        shipping_details -> Nullable<Text>,
        inbound_event_id -> Nullable<BigInt>,
        redeemed_at -> BigInt,
    }
}

diesel::table! {
    /// Every accepted webhook, as received.
    inbound_events (id) {
        id -> BigInt,
        source -> Text,
        event_type -> Text,
        subject -> Nullable<Text>,
        body_sha256 -> Text,
        body -> Text,
        outcome -> Text,
        subscriber_id -> Nullable<BigInt>,
        received_at -> BigInt,
        idempotency_key -> Nullable<Text>,
    }
}

diesel::table! {
    /// Outgoing calls and their state.
    jobs (id) {
        id -> BigInt,
        subscriber_id -> BigInt,
        destination -> Text,
        kind -> Text,
        payload -> Text,
        status -> Text,
        attempts -> Integer,
        created_at -> BigInt,
        retry_from -> BigInt,
        run_at -> BigInt,
        lease_token -> Nullable<Text>,
        lease_expires_at -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        finished_at -> Nullable<BigInt>,
        inbound_event_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// One row per HTTP call made for a job.
    attempts (id) {
        id -> BigInt,
        job_id -> BigInt,
        started_at -> BigInt,
        duration_ms -> BigInt,
        status_code -> Nullable<Integer>,
        error -> Nullable<Text>,
        response_body -> Nullable<Text>,
    }
}

diesel::table! {
    /// Dashboard sessions, by the hash of their id.
    admin_sessions (id_sha256) {
        id_sha256 -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    /// What each finished reconciliation found.
    reconcile_runs (id) {
        id -> BigInt,
        started_at -> BigInt,
        finished_at -> BigInt,
        fixed -> Bool,
        platform_subscribers -> BigInt,
        here -> BigInt,
        missing_at_platform -> BigInt,
        unsubscribed_here -> BigInt,
        unknown_here -> BigInt,
        fields_differ -> BigInt,
        queued -> BigInt,
    }
}

diesel::table! {
    /// Periodic work done by one instance at a time: when it is next due.
    schedules (name) {
        name -> Text,
        due_at -> BigInt,
        holder -> Nullable<Text>,
    }
}

diesel::joinable!(jobs -> subscribers (subscriber_id));
diesel::joinable!(attempts -> jobs (job_id));
diesel::joinable!(redemptions -> subscribers (subscriber_id));
diesel::allow_tables_to_appear_in_same_query!(
    subscribers,
    inbound_events,
    jobs,
    attempts,
    redemptions
);
