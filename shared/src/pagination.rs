//! Keyset pagination: a page continues after the last row of the previous one, by
//! `(created_at, id)` descending. The cursor clients get is opaque.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;
use uuid::Uuid;

/// A position in a newest-first listing: the last row of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The row's creation time.
    pub created_at: OffsetDateTime,
    /// The row's id (breaks ties).
    pub id: Uuid,
}

impl Cursor {
    /// The opaque form handed to clients.
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(32);
        raw.extend_from_slice(&self.created_at.unix_timestamp_nanos().to_be_bytes());
        raw.extend_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Parses a client's cursor; `None` when it is not one of ours. A cursor is opaque but not
    /// secret, so one can be forged: its time must lie between 1970 and the year 9999, which
    /// every row's time does and every value PostgreSQL can compare with does too.
    pub fn decode(text: &str) -> Option<Self> {
        let raw = URL_SAFE_NO_PAD.decode(text).ok()?;
        if raw.len() != 32 {
            return None;
        }
        let nanos = i128::from_be_bytes(raw[..16].try_into().ok()?);
        if nanos < 0 {
            return None;
        }
        let created_at = OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
        let id = Uuid::from_slice(&raw[16..]).ok()?;
        Some(Self { created_at, id })
    }

    /// The cursor after the last of `rows` when there were more than `limit`; trims `rows`.
    pub fn next_page<T>(
        rows: &mut Vec<T>,
        limit: i64,
        key: impl Fn(&T) -> Cursor,
    ) -> Option<String> {
        let limit = usize::try_from(limit).unwrap_or(0);
        if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|row| key(row).encode())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = Cursor { created_at: OffsetDateTime::now_utc(), id: Uuid::now_v7() };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::decode("not-a-cursor"), None);
        assert_eq!(Cursor::decode(""), None);
    }

    #[test]
    fn forged_cursors_outside_the_storable_years_are_refused() {
        let forge = |nanos: i128| {
            let mut raw = nanos.to_be_bytes().to_vec();
            raw.extend_from_slice(Uuid::nil().as_bytes());
            URL_SAFE_NO_PAD.encode(raw)
        };
        // Year -9999 (time's earliest): PostgreSQL cannot store it.
        let ancient = time::Date::MIN.midnight().assume_utc().unix_timestamp_nanos();
        assert_eq!(Cursor::decode(&forge(ancient)), None);
        assert_eq!(Cursor::decode(&forge(-1)), None);
        assert_eq!(Cursor::decode(&forge(i128::MAX)), None);
        let latest = time::Date::MAX.midnight().assume_utc().unix_timestamp_nanos();
        assert!(Cursor::decode(&forge(latest)).is_some(), "year 9999 is storable");
    }
}
