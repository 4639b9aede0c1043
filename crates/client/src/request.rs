//! What requests carry: entity keys, points in time, and the online, history and training data
//! requests with their optional parts.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use featherstore_core::ticket::{HistoryTicket, MultiOnlineTicket, OnlineTicket};
use featherstore_core::time::{format_timestamp, parse_timestamp};
use featherstore_core::{AsOf, EntityKeys};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::{Error, Result};

/// A point in time: microseconds since the Unix epoch, UTC (the store's resolution).
///
/// Made from a [`SystemTime`], a `chrono::DateTime` of any time zone, a number of seconds or
/// microseconds, or parsed from RFC 3339 text or a bare date:
///
/// ```
/// use featherstore_client::Timestamp;
///
/// let t = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
/// assert_eq!(t, Timestamp::from_secs(1_767_225_600));
/// assert_eq!(Timestamp::parse("2026-01-01").unwrap(), t);
/// assert_eq!(t.to_string(), "2026-01-01T00:00:00Z");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis.saturating_mul(1_000))
    }

    pub const fn from_secs(seconds: i64) -> Self {
        Timestamp(seconds.saturating_mul(1_000_000))
    }

    /// The current time.
    pub fn now() -> Self {
        SystemTime::now().into()
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (`2026-01-01T12:00:00Z`, any offset) or a date (`2026-01-01`, midnight
    /// UTC). Digits finer than a microsecond are truncated toward the past.
    pub fn parse(text: &str) -> Result<Self> {
        parse_timestamp(text)
            .map(Timestamp)
            .map_err(|e| Error::InvalidArgument(e.to_string()))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with a `Z`, with 0, 3 or 6 fractional digits as needed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_timestamp(self.0))
    }
}

impl FromStr for Timestamp {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Timestamp::parse(text)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let micros = match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
            // Before the epoch: floor, so a time is never moved later.
            Err(before) => {
                let d = before.duration();
                let micros = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
                let partial = d.as_nanos() % 1_000 != 0;
                -micros - i64::from(partial)
            }
        };
        Timestamp(micros)
    }
}

impl<Tz: chrono::TimeZone> From<chrono::DateTime<Tz>> for Timestamp {
    fn from(t: chrono::DateTime<Tz>) -> Self {
        Timestamp(t.timestamp_micros())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A type usable as an entity key: strings for `string` entities, integers for `int64` ones.
///
/// Sealed; implemented for `&str`, `String`, `&String`, `i64`, `&i64`, `i32` and `u32`.
pub trait EntityKey: sealed::Sealed + Sized {
    #[doc(hidden)]
    fn collect_keys(keys: impl Iterator<Item = Self>) -> EntityKeys;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for &str {}
    impl Sealed for String {}
    impl Sealed for &String {}
    impl Sealed for i64 {}
    impl Sealed for &i64 {}
    impl Sealed for i32 {}
    impl Sealed for u32 {}
}

macro_rules! string_key {
    ($($t:ty),*) => {$(
        impl EntityKey for $t {
            fn collect_keys(keys: impl Iterator<Item = Self>) -> EntityKeys {
                EntityKeys::String(keys.map(|k| k.to_string()).collect())
            }
        }
    )*};
}
string_key!(&str, String, &String);

macro_rules! int_key {
    ($($t:ty),*) => {$(
        impl EntityKey for $t {
            fn collect_keys(keys: impl Iterator<Item = Self>) -> EntityKeys {
                EntityKeys::Int64(keys.map(i64::from).collect())
            }
        }
    )*};
}
int_key!(i64, i32, u32);

impl EntityKey for &i64 {
    fn collect_keys(keys: impl Iterator<Item = Self>) -> EntityKeys {
        EntityKeys::Int64(keys.copied().collect())
    }
}

/// The entity keys of a request, all strings or all integers: made from slices, arrays and
/// vectors of [`EntityKey`] types, or from one key.
///
/// ```
/// use featherstore_client::Entities;
///
/// let users = Entities::from(["u1", "u2"]);
/// let ids = Entities::from(vec![17_i64, 42]);
/// let one = Entities::from("u1");
/// assert_eq!((users.len(), ids.len(), one.len()), (2, 2, 1));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Entities(EntityKeys);

impl Entities {
    /// String keys.
    pub fn strings<I: IntoIterator<Item = S>, S: Into<String>>(keys: I) -> Self {
        Entities(EntityKeys::String(
            keys.into_iter().map(Into::into).collect(),
        ))
    }

    /// Integer keys (for `int64` entities).
    pub fn ints<I: IntoIterator<Item = i64>>(keys: I) -> Self {
        Entities(EntityKeys::Int64(keys.into_iter().collect()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn keys(&self) -> &EntityKeys {
        &self.0
    }

    pub fn into_keys(self) -> EntityKeys {
        self.0
    }

    pub(crate) fn to_json(&self) -> Vec<Value> {
        match &self.0 {
            EntityKeys::String(keys) => keys.iter().map(|k| Value::from(k.as_str())).collect(),
            EntityKeys::Int64(keys) => keys.iter().map(|&k| Value::from(k)).collect(),
        }
    }
}

impl From<EntityKeys> for Entities {
    fn from(keys: EntityKeys) -> Self {
        Entities(keys)
    }
}

impl<K: EntityKey> From<Vec<K>> for Entities {
    fn from(keys: Vec<K>) -> Self {
        Entities(K::collect_keys(keys.into_iter()))
    }
}

impl<K: EntityKey + Clone> From<&[K]> for Entities {
    fn from(keys: &[K]) -> Self {
        Entities(K::collect_keys(keys.iter().cloned()))
    }
}

impl<K: EntityKey + Clone> From<&Vec<K>> for Entities {
    fn from(keys: &Vec<K>) -> Self {
        Entities(K::collect_keys(keys.iter().cloned()))
    }
}

impl<K: EntityKey, const N: usize> From<[K; N]> for Entities {
    fn from(keys: [K; N]) -> Self {
        Entities(K::collect_keys(keys.into_iter()))
    }
}

impl<K: EntityKey + Clone, const N: usize> From<&[K; N]> for Entities {
    fn from(keys: &[K; N]) -> Self {
        Entities(K::collect_keys(keys.iter().cloned()))
    }
}

impl From<&str> for Entities {
    fn from(key: &str) -> Self {
        Entities::strings([key])
    }
}

impl From<String> for Entities {
    fn from(key: String) -> Self {
        Entities::strings([key])
    }
}

impl From<i64> for Entities {
    fn from(key: i64) -> Self {
        Entities::ints([key])
    }
}

/// Feature names as requests take them: `["age", "ctr_7d"]`, a `Vec<String>`, ...
pub(crate) fn names<I, S>(features: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    features.into_iter().map(Into::into).collect()
}

/// An online read: the latest value of each entity (PROTOCOL.md, "Retrieval").
///
/// ```
/// use featherstore_client::OnlineRequest;
///
/// let request = OnlineRequest::new("user_features", ["u1", "u2"]).features(["age"]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineRequest {
    feature_set: String,
    entities: Entities,
    features: Option<Vec<String>>,
}

impl OnlineRequest {
    pub fn new(feature_set: impl Into<String>, entities: impl Into<Entities>) -> Self {
        OnlineRequest {
            feature_set: feature_set.into(),
            entities: entities.into(),
            features: None,
        }
    }

    /// Only these features, in this order (default: all, in spec order).
    pub fn features<I: IntoIterator<Item = S>, S: Into<String>>(mut self, features: I) -> Self {
        self.features = Some(names(features));
        self
    }

    pub(crate) fn to_ticket(&self) -> featherstore_core::Ticket {
        featherstore_core::Ticket::Online(OnlineTicket {
            feature_set: self.feature_set.clone(),
            entities: self.entities.to_json(),
            features: self.features.clone(),
        })
    }
}

/// An online read across feature sets: a stored feature service's features, or
/// `set:feature` / `set:*` references, for entity rows given column-wise (one key column per
/// entity name of the sets read). The answer has one row per entity row, in order: the key
/// columns, then the features in reference order.
///
/// ```
/// use featherstore_client::MultiOnlineRequest;
///
/// let request = MultiOnlineRequest::service("fraud_model")
///     .entity("user_id", ["u1", "u2"])
///     .entity("merchant_id", vec![7_i64, 9])
///     .full_names(true);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MultiOnlineRequest {
    ticket: MultiOnlineTicket,
}

impl MultiOnlineRequest {
    /// The features of a stored feature service.
    pub fn service(name: impl Into<String>) -> Self {
        Self::reading(Some(name.into()), None)
    }

    /// `set:feature` or `set:*` references, in output order.
    pub fn features<I: IntoIterator<Item = S>, S: Into<String>>(references: I) -> Self {
        Self::reading(None, Some(names(references)))
    }

    fn reading(feature_service: Option<String>, features: Option<Vec<String>>) -> Self {
        MultiOnlineRequest {
            ticket: MultiOnlineTicket {
                feature_service,
                features,
                entities: Default::default(),
                full_names: false,
                with_timestamps: false,
            },
        }
    }

    /// The key column of entity `name`: one key per entity row.
    pub fn entity(mut self, name: impl Into<String>, keys: impl Into<Entities>) -> Self {
        self.ticket
            .entities
            .insert(name.into(), keys.into().to_json());
        self
    }

    /// Name features `set__feature` instead of `feature`.
    pub fn full_names(mut self, full_names: bool) -> Self {
        self.ticket.full_names = full_names;
        self
    }

    /// Add each set's event time, as `set__event_timestamp`, after the features.
    pub fn with_timestamps(mut self, with_timestamps: bool) -> Self {
        self.ticket.with_timestamps = with_timestamps;
        self
    }

    pub(crate) fn to_ticket(&self) -> featherstore_core::Ticket {
        featherstore_core::Ticket::MultiOnline(self.ticket.clone())
    }
}

/// A history read: every row with `start <= event time < end` (PROTOCOL.md, "Retrieval").
/// Everything but the feature set is optional: all entities, unbounded, all features.
///
/// ```
/// use featherstore_client::{HistoryRequest, Timestamp};
///
/// let request = HistoryRequest::new("user_features")
///     .entities(["u1"])
///     .start(Timestamp::parse("2026-01-01").unwrap())
///     .end(Timestamp::now())
///     .features(["age", "ctr_7d"]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRequest {
    feature_set: String,
    entities: Option<Entities>,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
    features: Option<Vec<String>>,
    with_ingest_time: bool,
    ingested_before: Option<Timestamp>,
}

impl HistoryRequest {
    pub fn new(feature_set: impl Into<String>) -> Self {
        HistoryRequest {
            feature_set: feature_set.into(),
            entities: None,
            start: None,
            end: None,
            features: None,
            with_ingest_time: false,
            ingested_before: None,
        }
    }

    /// Adds the column `ingested_at` (when the server stored each row) after the others.
    pub fn with_ingest_time(mut self, with_ingest_time: bool) -> Self {
        self.with_ingest_time = with_ingest_time;
        self
    }

    /// Only the rows ingested strictly before `instant`: the history as it was known then.
    pub fn ingested_before(mut self, instant: impl Into<Timestamp>) -> Self {
        self.ingested_before = Some(instant.into());
        self
    }

    pub fn entities(mut self, entities: impl Into<Entities>) -> Self {
        self.entities = Some(entities.into());
        self
    }

    /// Inclusive lower bound of the event time.
    pub fn start(mut self, start: impl Into<Timestamp>) -> Self {
        self.start = Some(start.into());
        self
    }

    /// Exclusive upper bound of the event time.
    pub fn end(mut self, end: impl Into<Timestamp>) -> Self {
        self.end = Some(end.into());
        self
    }

    pub fn features<I: IntoIterator<Item = S>, S: Into<String>>(mut self, features: I) -> Self {
        self.features = Some(names(features));
        self
    }

    pub(crate) fn to_ticket(&self) -> featherstore_core::Ticket {
        featherstore_core::Ticket::History(HistoryTicket {
            feature_set: self.feature_set.clone(),
            entities: self.entities.as_ref().map(Entities::to_json),
            start: self.start.map(|t| t.to_string()),
            end: self.end.map(|t| t.to_string()),
            features: self.features.clone(),
            with_ingest_time: self.with_ingest_time,
            ingested_before: self.ingested_before.map(|t| t.to_string()),
        })
    }
}

/// Options of a training data request (PROTOCOL.md, "Training data").
///
/// ```
/// use featherstore_client::TrainingDataOptions;
///
/// let options = TrainingDataOptions::default().timestamp("label_time").full_names(true);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrainingDataOptions {
    timestamp: Option<String>,
    full_names: bool,
    as_of: Option<AsOf>,
}

impl TrainingDataOptions {
    /// The column of the entity rows holding the time of each row (default
    /// `event_timestamp`).
    pub fn timestamp(mut self, column: impl Into<String>) -> Self {
        self.timestamp = Some(column.into());
        self
    }

    /// Name the appended columns `set__feature` instead of `feature`.
    pub fn full_names(mut self, full_names: bool) -> Self {
        self.full_names = full_names;
        self
    }

    /// Which rows count at an entity row's time t: `AsOf::EventTime` (the default: event time
    /// <= t) or `AsOf::IngestTime` (also ingested by t: the data as known at t).
    pub fn as_of(mut self, as_of: AsOf) -> Self {
        self.as_of = Some(as_of);
        self
    }

    pub(crate) fn command(&self, features: &[String]) -> Value {
        self.command_reading("features", Value::from(features))
    }

    /// The command reading a stored feature service's features.
    pub(crate) fn service_command(&self, service: &str) -> Value {
        self.command_reading("feature_service", Value::from(service))
    }

    fn command_reading(&self, key: &str, what: Value) -> Value {
        let mut command = serde_json::json!({
            "type": "training_data",
            "full_names": self.full_names,
        });
        command[key] = what;
        if let Some(timestamp) = &self.timestamp {
            command["timestamp"] = Value::from(timestamp.as_str());
        }
        if let Some(as_of) = self.as_of {
            command["as_of"] = Value::from(as_of.as_str());
        }
        command
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_from_common_shapes() {
        let names = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            Entities::from(&names),
            Entities::from(["a", "b"]),
            "strings"
        );
        assert_eq!(Entities::from(&[1_i64, 2][..]), Entities::ints([1, 2]));
        assert_eq!(Entities::from([1, 2]), Entities::ints([1, 2]), "literals");
        assert_eq!(Entities::from(7_i64).to_json(), vec![Value::from(7)]);
    }

    #[test]
    fn tickets_follow_the_protocol() {
        let online = OnlineRequest::new("s", ["u1"]).features(["a"]).to_ticket();
        assert_eq!(
            serde_json::to_value(&online).unwrap(),
            serde_json::json!({"type": "online", "feature_set": "s", "entities": ["u1"], "features": ["a"]})
        );
        let history = HistoryRequest::new("s")
            .start(Timestamp::from_secs(0))
            .to_ticket();
        assert_eq!(
            serde_json::to_value(&history).unwrap(),
            serde_json::json!({"type": "history", "feature_set": "s", "start": "1970-01-01T00:00:00Z"})
        );
        let command = TrainingDataOptions::default().command(&["s:*".into()]);
        assert_eq!(
            command,
            serde_json::json!({"type": "training_data", "features": ["s:*"], "full_names": false})
        );
    }

    #[test]
    fn timestamps_from_system_time_floor() {
        let before = SystemTime::UNIX_EPOCH - std::time::Duration::from_nanos(1_500);
        assert_eq!(Timestamp::from(before).as_micros(), -2);
        let after = SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(1_500);
        assert_eq!(Timestamp::from(after).as_micros(), 1);
        assert!(Timestamp::parse("tomorrow")
            .unwrap_err()
            .is_invalid_argument());
    }
}
