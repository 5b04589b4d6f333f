//! The time as providers and webhooks state it.

/// Now, in whole seconds since the Unix epoch (as JWT claims and webhook timestamps carry it).
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
