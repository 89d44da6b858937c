//! Reading a row: which columns the file has, and each row as a person or the reason it is
//! refused.

use std::path::Path;

use referral_bridge_adapters::{Email, Person};
use serde_json::Value;

use super::ImportError;

/// The columns the import reads, by position.
pub(super) struct Columns {
    email: usize,
    id: Option<usize>,
    first_name: Option<usize>,
    name: Option<usize>,
    created_at: Option<usize>,
    /// The attribution columns there are (DESIGN 3.8), by key.
    attribution: Vec<(&'static str, usize)>,
    count: usize,
}

impl Columns {
    pub(super) fn find(headers: &csv::StringRecord, path: &Path) -> Result<Columns, ImportError> {
        let names: Vec<String> = headers
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let find = |wanted: &str| names.iter().position(|n| n == wanted);
        let email = find("email").ok_or_else(|| ImportError::NoEmailColumn {
            path: path.to_path_buf(),
            found: headers
                .iter()
                .map(|h| format!("`{}`", h.chars().take(40).collect::<String>()))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        Ok(Columns {
            email,
            id: find("id"),
            first_name: find("first_name"),
            name: find("name"),
            created_at: find("created_at"),
            attribution: referral_bridge_adapters::ATTRIBUTION_KEYS
                .iter()
                .filter_map(|key| Some((*key, find(key)?)))
                .collect(),
            count: names.len(),
        })
    }
}

/// One good row.
pub(super) struct Row {
    pub(super) person: Person,
    pub(super) created_at: Option<i64>,
    pub(super) attribution: referral_bridge_adapters::Attribution,
}

/// Reads a row, or says why it is refused.
pub(super) fn parse_row(record: &csv::StringRecord, columns: &Columns) -> Result<Row, String> {
    if record.len() != columns.count {
        return Err(format!(
            "expected {} columns, found {}",
            columns.count,
            record.len()
        ));
    }
    let field = |at: Option<usize>| {
        at.and_then(|i| record.get(i))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let email = Email::parse(record.get(columns.email).unwrap_or_default())
        .map_err(|e| format!("the email is not a valid address: {}", e.reason))?;
    let created_at = field(columns.created_at)
        .map(|text| {
            parse_time(text).ok_or_else(|| {
                "created_at is neither unix seconds nor an ISO 8601 date".to_string()
            })
        })
        .transpose()?;
    // An id of digits stays a number, as the ESP would send it; anything else is text.
    // An id of digits stays a number, as the ESP would send it, of any length (serde_json keeps
    // a number's digits exactly); anything else, a leading zero included, is text.
    let digits = |id: &str| {
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && (!id.starts_with('0') || id == "0")
    };
    let esp_id = field(columns.id).map(|id| match serde_json::from_str::<Value>(id) {
        Ok(number) if digits(id) => number,
        _ => Value::from(id),
    });
    let person = Person {
        email,
        esp_id,
        first_name: field(columns.first_name).map(str::to_string),
        name: field(columns.name).map(str::to_string),
    };
    person.check().map_err(|e| e.0)?;
    let attribution = referral_bridge_adapters::Attribution(
        columns
            .attribution
            .iter()
            .filter_map(|(key, at)| Some((*key, field(Some(*at))?.to_string())))
            .collect(),
    );
    Ok(Row {
        person,
        created_at,
        attribution,
    })
}

/// Unix seconds, or an ISO 8601 date or date-time (`2024-01-31`, `2024-01-31T10:00:00Z`,
/// `2024-01-31 10:00:00`, with an offset or without, read as UTC).
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Some(seconds);
    }
    referral_bridge_adapters::time::iso8601_seconds(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_accepted_form() {
        assert_eq!(parse_time("1564400550"), Some(1564400550));
        assert_eq!(parse_time("2019-07-29T11:42:30Z"), Some(1564400550));
        assert_eq!(parse_time("2019-07-29 11:42:30"), Some(1564400550));
        assert_eq!(parse_time("2019-07-29T13:42:30+02:00"), Some(1564400550));
        assert_eq!(parse_time("2019-07-29T06:42:30-05:00"), Some(1564400550));
        assert_eq!(parse_time("2019-07-29"), Some(1564358400));
        // `+0530` is five and a half hours, not 530.
        assert_eq!(parse_time("2019-07-29T17:12:30+0530"), Some(1564400550));
        assert_eq!(parse_time("2019-07-29T08:12:30-03:30"), Some(1564400550));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2019-13-45"), None);
    }
}
