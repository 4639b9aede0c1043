//! Retrieval requests: the JSON tickets of Flight DoGet, also the bodies of the HTTP routes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::service::check_references;
use crate::time::parse_timestamp;
use crate::{Error, Result};

/// A DoGet ticket. Parsed by [`Ticket::from_json`]: an online ticket naming a
/// `feature_set` is the single-set read of PROTOCOL.md, any other online ticket a read across
/// sets ([`MultiOnlineTicket`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Ticket {
    Online(OnlineTicket),
    History(HistoryTicket),
    #[serde(rename = "online")]
    MultiOnline(MultiOnlineTicket),
}

/// The online request of either kind, as `POST /v1/online` takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum OnlineRequest {
    Set(OnlineTicket),
    Multi(MultiOnlineTicket),
}

/// An online read across feature sets: a feature service, or feature references, and the
/// entity rows column-wise, one key column per entity name of the referenced sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiOnlineTicket {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_service: Option<String>,
    /// `set:feature` or `set:*` references, in place of a service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// Entity name to its keys, one per entity row; every column has the same length.
    pub entities: BTreeMap<String, Vec<Value>>,
    /// Name features `set__feature` instead of `feature`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_names: bool,
    /// Adds each set's event time, named `set__event_timestamp`, after the features.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub with_timestamps: bool,
}

impl MultiOnlineTicket {
    /// Exactly one of `feature_service` and `features`, and well-formed references.
    fn check(self) -> Result<Self> {
        match (&self.feature_service, &self.features) {
            (Some(_), Some(_)) => Err(Error::invalid(
                "an online request takes \"feature_service\" or \"features\", not both",
            )),
            (None, None) => Err(Error::invalid(
                "an online request needs \"feature_set\", \"feature_service\" or \"features\" (set:feature references)",
            )),
            (None, Some(references)) => {
                check_references(references)?;
                Ok(self)
            }
            (Some(_), None) => Ok(self),
        }
    }

    /// The number of entity rows: the length of the key columns, which must all agree.
    pub fn rows(&self) -> Result<usize> {
        let mut lengths = self.entities.iter().map(|(name, keys)| (name, keys.len()));
        let Some((first_name, rows)) = lengths.next() else {
            return Ok(0);
        };
        match lengths.find(|&(_, len)| len != rows) {
            Some((name, len)) => Err(Error::invalid(format!(
                "key columns differ in length: {first_name:?} has {rows} keys, {name:?} has {len}"
            ))),
            None => Ok(rows),
        }
    }
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
        match SingleSetOnline::parse(bytes, true) {
            Some(ticket) => Ok(Ticket::Online(ticket)),
            None => Self::from_json_object(bytes),
        }
    }

    /// Any ticket, through the JSON object its `"type"` and keys are told apart by.
    fn from_json_object(bytes: &[u8]) -> Result<Self> {
        let invalid = |e: &dyn std::fmt::Display| {
            Error::invalid(format!(
                "invalid ticket: {e}; expected JSON with \"type\" \"online\" or \"history\""
            ))
        };
        let mut object: Map<String, Value> =
            serde_json::from_slice(bytes).map_err(|e| invalid(&e))?;
        match object.remove("type") {
            Some(Value::String(kind)) if kind == "online" => {
                Ok(match OnlineRequest::from_object(object, "ticket")? {
                    OnlineRequest::Set(ticket) => Ticket::Online(ticket),
                    OnlineRequest::Multi(ticket) => Ticket::MultiOnline(ticket),
                })
            }
            Some(Value::String(kind)) if kind == "history" => {
                serde_json::from_value(Value::Object(object))
                    .map(Ticket::History)
                    .map_err(|e| invalid(&e))
            }
            Some(other) => Err(invalid(&format_args!("\"type\" is {other}"))),
            None => Err(invalid(&"no \"type\"")),
        }
    }
}

/// A single-set online ticket as clients send it: `"type"` (which a Flight ticket needs and an
/// HTTP body may leave out), `feature_set`, `entities` and `features`, each once. Parsed
/// straight from the bytes, it skips the object of values the general path builds to tell
/// the kinds of ticket apart (~8% of a 100-entity Flight read's server time). Whatever this
/// refuses (another kind of ticket, a repeated key, any error) goes the general path, which
/// answers it as before: where both accept bytes, they give the same ticket.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SingleSetOnline {
    #[serde(rename = "type", default, deserialize_with = "online_kind")]
    kind: Option<OnlineKind>,
    feature_set: String,
    entities: Vec<Value>,
    #[serde(default)]
    features: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum OnlineKind {
    Online,
}

/// A present `"type"` must be `"online"`: `null` is an error here, as it is on the general
/// path, not an absent type.
fn online_kind<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<OnlineKind>, D::Error> {
    OnlineKind::deserialize(deserializer).map(Some)
}

impl SingleSetOnline {
    /// The ticket, if `bytes` are one (with `"type"` when `typed`).
    fn parse(bytes: &[u8], typed: bool) -> Option<OnlineTicket> {
        let wire: Self = serde_json::from_slice(bytes).ok()?;
        (wire.kind.is_some() || !typed).then_some(OnlineTicket {
            feature_set: wire.feature_set,
            entities: wire.entities,
            features: wire.features,
        })
    }
}

/// The `entities` of a read across sets is an object of key columns (arrays); said plainly,
/// since serde's message would not name the field.
fn check_entity_columns(entities: Option<&Value>) -> Result<()> {
    let expected = "expected {\"entity_name\": [keys, ...], ...}, one key column per entity";
    match entities {
        None => Err(Error::invalid(format!(
            "an online request without \"feature_set\" needs \"entities\": {expected}"
        ))),
        Some(Value::Object(columns)) => match columns.iter().find(|(_, keys)| !keys.is_array()) {
            Some((name, keys)) => Err(Error::invalid(format!(
                "\"entities\" key column {name:?} is {keys}, not an array; {expected}"
            ))),
            None => Ok(()),
        },
        Some(other) => Err(Error::invalid(format!(
            "\"entities\" is {other}; {expected}"
        ))),
    }
}

impl OnlineRequest {
    /// The body of `POST /v1/online`: either kind of online ticket.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        match SingleSetOnline::parse(bytes, false) {
            Some(ticket) => Ok(OnlineRequest::Set(ticket)),
            None => Self::from_object(route_object(bytes, "online")?, "online request"),
        }
    }

    /// A ticket naming a `feature_set` is a single-set read; any other a read across sets.
    fn from_object(object: Map<String, Value>, what: &str) -> Result<Self> {
        let invalid = |e: serde_json::Error| Error::invalid(format!("invalid {what}: {e}"));
        if object.contains_key("feature_set") {
            serde_json::from_value(Value::Object(object))
                .map(OnlineRequest::Set)
                .map_err(invalid)
        } else {
            check_entity_columns(object.get("entities"))?;
            let ticket: MultiOnlineTicket =
                serde_json::from_value(Value::Object(object)).map_err(invalid)?;
            ticket.check().map(OnlineRequest::Multi)
        }
    }
}

/// The body of an HTTP retrieval route: its ticket, where `"type"` may be left out but, if
/// given, must be the route's `kind`.
fn route_body<T: DeserializeOwned>(bytes: &[u8], kind: &str) -> Result<T> {
    let object = route_object(bytes, kind)?;
    serde_json::from_value(Value::Object(object))
        .map_err(|e| Error::invalid(format!("invalid {kind} request: {e}")))
}

/// The JSON object of an HTTP retrieval route's body, its `"type"` checked and removed.
fn route_object(bytes: &[u8], kind: &str) -> Result<Map<String, Value>> {
    let mut object: Map<String, Value> = serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid(format!("invalid {kind} request: {e}")))?;
    match object.remove("type") {
        None => {}
        Some(Value::String(t)) if t == kind => {}
        Some(other) => {
            return Err(Error::invalid(format!(
                "\"type\" is {other} but this route takes {kind:?} requests"
            )))
        }
    }
    Ok(object)
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

    /// The direct parse of a single-set online ticket answers what the general path answers,
    /// on tickets it takes and on the ones it leaves to the general path.
    #[test]
    fn single_set_tickets_parse_as_the_general_path_does() {
        let taken: &[&str] = &[
            r#"{"type": "online", "feature_set": "s", "entities": [1, 2, 3]}"#,
            r#"{"feature_set": "s", "type": "online", "entities": ["a", 1.5, null], "features": ["x"]}"#,
            r#"{"type": "online", "feature_set": "s", "entities": [], "features": null}"#,
            r#"{"type": "online", "feature_set": "s", "entities": [18446744073709551615, -1]}"#,
        ];
        let left: &[&str] = &[
            r#"{"type": null, "feature_set": "s", "entities": [1]}"#,
            r#"{"type": "online", "type": "online", "feature_set": "s", "entities": [1]}"#,
            r#"{"type": "online", "feature_set": "s", "feature_set": "t", "entities": [1]}"#,
            r#"{"type": "online", "feature_set": "s", "entities": [1], "extra": 1}"#,
            r#"{"type": "online", "feature_set": "s", "entities": 7}"#,
            r#"{"type": "online", "feature_set": "s"}"#,
            r#"{"type": "history", "feature_set": "s"}"#,
            r#"{"type": "online", "feature_service": "f", "entities": {"id": [1]}}"#,
            r#"{"type": "Online", "feature_set": "s", "entities": [1]}"#,
            r#"{"type": "online", "feature_set": "s", "entities": [1]} trailing"#,
            r#"[1, 2]"#,
            "",
        ];
        for body in taken.iter().chain(left) {
            let bytes = body.as_bytes();
            assert_eq!(
                format!("{:?}", Ticket::from_json(bytes)),
                format!("{:?}", Ticket::from_json_object(bytes)),
                "ticket {body}"
            );
            let general = route_object(bytes, "online")
                .and_then(|object| OnlineRequest::from_object(object, "online request"));
            assert_eq!(
                format!("{:?}", OnlineRequest::from_json(bytes)),
                format!("{general:?}"),
                "request {body}"
            );
        }
        for body in taken {
            assert!(
                SingleSetOnline::parse(body.as_bytes(), true).is_some(),
                "{body}"
            );
        }
        for body in left {
            assert!(
                SingleSetOnline::parse(body.as_bytes(), true).is_none(),
                "{body}"
            );
        }
        let untyped = br#"{"feature_set": "s", "entities": [1]}"#;
        assert!(SingleSetOnline::parse(untyped, true).is_none());
        assert!(SingleSetOnline::parse(untyped, false).is_some());
        assert!(Ticket::from_json(untyped).is_err());
        assert!(OnlineRequest::from_json(untyped).is_ok());
    }

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

    #[test]
    fn online_tickets_without_a_feature_set_read_across_sets() {
        let ticket = Ticket::from_json(
            br#"{"type": "online", "feature_service": "fraud", "entities": {"user_id": ["u1", "u2"], "merchant_id": [7, 9]}}"#,
        )
        .unwrap();
        let Ticket::MultiOnline(multi) = &ticket else {
            panic!("{ticket:?}")
        };
        assert_eq!(multi.rows().unwrap(), 2);
        let json = serde_json::to_vec(&ticket).unwrap();
        assert_eq!(Ticket::from_json(&json).unwrap(), ticket);
        let body = br#"{"features": ["a:x", "b:*"], "entities": {"id": [1]}, "full_names": true}"#;
        assert!(matches!(
            OnlineRequest::from_json(body).unwrap(),
            OnlineRequest::Multi(t) if t.full_names && t.features.as_ref().unwrap().len() == 2
        ));
        let single = br#"{"type": "online", "feature_set": "s", "entities": ["a"]}"#;
        assert!(matches!(
            OnlineRequest::from_json(single).unwrap(),
            OnlineRequest::Set(_)
        ));
        for (bad, expected) in [
            (
                r#"{"type": "online", "entities": {"id": [1]}}"#,
                "feature_service",
            ),
            (r#"{"type": "online", "feature_service": "s"}"#, "entities"),
            (
                r#"{"type": "online", "feature_service": "s", "features": ["a:x"], "entities": {}}"#,
                "not both",
            ),
            (
                r#"{"type": "online", "features": ["a"], "entities": {}}"#,
                "set:feature",
            ),
            (
                r#"{"type": "online", "feature_service": "s", "entities": [1]}"#,
                "entities",
            ),
            (
                r#"{"type": "online", "feature_service": "s", "entities": {"id": 1}}"#,
                "entities",
            ),
            (
                r#"{"type": "online", "feature_service": "s", "entities": {}, "x": 1}"#,
                "unknown field",
            ),
        ] {
            let err = Ticket::from_json(bad.as_bytes()).unwrap_err();
            assert_eq!(err.code(), crate::ErrorCode::InvalidArgument, "{bad}");
            assert!(err.to_string().contains(expected), "{bad}: {err}");
        }
        let uneven = br#"{"feature_service": "s", "entities": {"a": [1, 2], "b": [1]}}"#;
        let OnlineRequest::Multi(uneven) = OnlineRequest::from_json(uneven).unwrap() else {
            panic!()
        };
        let err = uneven.rows().unwrap_err().to_string();
        assert!(
            err.contains("\"a\" has 2") && err.contains("\"b\" has 1"),
            "{err}"
        );
    }
}
