//! Retrieval requests: the JSON tickets of Flight DoGet, also the bodies of the HTTP routes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::parse_timestamp;
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Ticket {
    Online(OnlineTicket),
    History(HistoryTicket),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineTicket {
    pub feature_set: String,
    /// Entity keys, typed by the set's entity type (checked when resolved against the spec).
    pub entities: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryTicket {
    pub feature_set: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entities: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// Adds the column `ingested_at` (the server time each row was stored) after the others.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub with_ingest_time: bool,
    /// Only rows ingested strictly before this instant: the history as it was known then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingested_before: Option<String>,
}

impl Ticket {
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::invalid(format!(
                "invalid ticket: {e}; expected JSON with \"type\" \"online\" or \"history\""
            ))
        })
    }
}

/// The body of an HTTP retrieval route: its ticket, where `"type"` may be left out but, if
/// given, must be the route's `kind`.
fn route_body<T: DeserializeOwned>(bytes: &[u8], kind: &str) -> Result<T> {
    let invalid = |e: serde_json::Error| Error::invalid(format!("invalid {kind} request: {e}"));
    let mut value: Value = serde_json::from_slice(bytes).map_err(invalid)?;
    if let Some(object) = value.as_object_mut() {
        match object.remove("type") {
            None => {}
            Some(Value::String(t)) if t == kind => {}
            Some(other) => {
                return Err(Error::invalid(format!(
                    "\"type\" is {other} but this route takes {kind:?} requests"
                )))
            }
        }
    }
    serde_json::from_value(value).map_err(invalid)
}

impl OnlineTicket {
    /// The body of `POST /v1/online`.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        route_body(bytes, "online")
    }
}

impl HistoryTicket {
    /// The body of `POST /v1/history`.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        route_body(bytes, "history")
    }

    /// `[start, end)` in UTC microseconds; unbounded sides are `None`.
    pub fn time_range(&self) -> Result<(Option<i64>, Option<i64>)> {
        let start = self.start.as_deref().map(parse_timestamp).transpose()?;
        let end = self.end.as_deref().map(parse_timestamp).transpose()?;
        if let (Some(s), Some(e)) = (start, end) {
            if s > e {
                return Err(Error::invalid(format!(
                    "history start {} is after end {}",
                    self.start.as_deref().unwrap_or_default(),
                    self.end.as_deref().unwrap_or_default()
                )));
            }
        }
        Ok((start, end))
    }

    /// `ingested_before` in UTC microseconds.
    pub fn ingested_before(&self) -> Result<Option<i64>> {
        self.ingested_before
            .as_deref()
            .map(parse_timestamp)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_protocol_tickets() {
        let online = Ticket::from_json(
            br#"{"type": "online", "feature_set": "user_features", "entities": ["u1", "u2"], "features": ["age"]}"#,
        )
        .unwrap();
        assert!(matches!(online, Ticket::Online(t) if t.entities.len() == 2));
        let history = Ticket::from_json(
            br#"{"type": "history", "feature_set": "s", "start": "2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let Ticket::History(h) = history else {
            panic!()
        };
        assert_eq!(h.time_range().unwrap().0, Some(1_767_225_600_000_000));
        assert!(Ticket::from_json(br#"{"type": "sql"}"#).is_err());
        assert!(Ticket::from_json(
            br#"{"type": "online", "feature_set": "s", "entities": [], "x": 1}"#
        )
        .is_err());
    }

    #[test]
    fn route_bodies_take_their_own_type_or_none() {
        let online = OnlineTicket::from_json(br#"{"feature_set": "s", "entities": ["a"]}"#);
        assert_eq!(online.unwrap().entities.len(), 1);
        let typed = br#"{"type": "history", "feature_set": "s", "start": "2026-01-01"}"#;
        assert_eq!(HistoryTicket::from_json(typed).unwrap().feature_set, "s");
        let err = OnlineTicket::from_json(typed).unwrap_err();
        assert!(
            err.to_string().contains("takes \"online\" requests"),
            "{err}"
        );
        let err = HistoryTicket::from_json(b"[").unwrap_err();
        assert!(
            err.to_string().starts_with("invalid history request: "),
            "{err}"
        );
    }
}
