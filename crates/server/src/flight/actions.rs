//! DoAction: the feature set registry (PROTOCOL.md, "Actions").

use arrow_flight::{Action, ActionType};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};

use super::FlightStream;
use crate::auth::Access;
use crate::error::{ApiError, ApiResult};
use crate::service::{parse_name, AppState, Rebuild};

const ACTIONS: &[(&str, &str)] = &[
    (
        "create_feature_set",
        "Create a feature set from a spec; the same spec again is a no-op",
    ),
    (
        "update_feature_set",
        "Change a stored set as the evolution rules allow: {\"spec\", \"changes\"}",
    ),
    (
        "get_feature_set",
        "{\"name\", \"version\"?}: the stored spec (or one version of it) with stats",
    ),
    (
        "list_feature_set_versions",
        "{\"name\"}: every stored version of a spec, oldest first",
    ),
    ("list_feature_sets", "{}: every stored spec"),
    (
        "delete_feature_set",
        "{\"name\"}: delete a set and all its data",
    ),
    (
        "create_feature_service",
        "Create a feature service (name, features: [\"set:feature\" | \"set:*\"]); the same again is a no-op",
    ),
    (
        "get_feature_service",
        "{\"name\"}: the stored feature service",
    ),
    ("list_feature_services", "{}: every stored feature service"),
    (
        "delete_feature_service",
        "{\"name\"}: delete a feature service (its sets stay)",
    ),
    (
        "rebuild_online",
        "{\"name\"}: write a set's latest values from the offline store into the online store again; streams {\"rows\", \"entities\"} progress, then {\"rows\", \"entities\", \"done\": true}",
    ),
];

pub(super) fn list() -> Vec<ActionType> {
    action_types(ACTIONS)
}

/// ListActions entries of `(name, description)` pairs.
pub(super) fn action_types(actions: &[(&str, &str)]) -> Vec<ActionType> {
    actions
        .iter()
        .map(|(name, description)| ActionType {
            r#type: name.to_string(),
            description: description.to_string(),
        })
        .collect()
}

/// The metrics label of an action: its name when known.
pub(super) fn method_name(action: &str) -> &'static str {
    ACTIONS
        .iter()
        .find(|(name, _)| *name == action)
        .map_or("unknown_action", |(name, _)| name)
}

pub(super) async fn do_action(
    state: &AppState,
    access: &Access,
    action: Action,
) -> ApiResult<FlightStream<arrow_flight::Result>> {
    let body = action.body.as_ref();
    if action.r#type == "rebuild_online" {
        return rebuild_online(state, parse_name(body)?).await;
    }
    let result: Value = match action.r#type.as_str() {
        "create_feature_set" => state.create_set(access, body).await?.0,
        "update_feature_set" => state.update_set(access, body).await?,
        "get_feature_set" => {
            let (name, version) = featherstore_core::action::parse_name_version(body)?;
            state.describe_set_version(name, version).await?
        }
        "list_feature_set_versions" => state.list_versions(parse_name(body)?).await?,
        "list_feature_sets" => state.list_sets(access),
        "delete_feature_set" => {
            state.delete_set(parse_name(body)?).await?;
            json!({"deleted": true})
        }
        "create_feature_service" => state.create_service(access, body).await?.0,
        "get_feature_service" => state.describe_service(access, &parse_name(body)?)?,
        "list_feature_services" => state.list_services(access),
        "delete_feature_service" => {
            state.delete_service(access, parse_name(body)?).await?;
            json!({"deleted": true})
        }
        other => {
            return Err(ApiError::invalid(format!(
                "unknown action {other:?}; expected one of {}",
                ACTIONS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    Ok(Box::pin(futures::stream::once(async move {
        Ok(json_result(&result))
    })))
}

fn json_result(value: &Value) -> arrow_flight::Result {
    let body = Bytes::from(serde_json::to_vec(value).expect("JSON values serialize"));
    arrow_flight::Result { body }
}

/// `rebuild_online`: a result per progress update, `{"rows", "entities"}`, then the last,
/// `{"rows", "entities", "done": true}` (or the rebuild's error).
async fn rebuild_online(
    state: &AppState,
    name: String,
) -> ApiResult<FlightStream<arrow_flight::Result>> {
    let Rebuild {
        entities,
        mut progress,
        finished,
    } = state.rebuild_online(name).await?;
    let progress = futures::stream::poll_fn(move |cx| progress.poll_recv(cx))
        .map(move |rows| Ok(json_result(&json!({"rows": rows, "entities": entities}))));
    let done = futures::stream::once(async move {
        let rows = finished.await?;
        Ok(json_result(
            &json!({"rows": rows, "entities": entities, "done": true}),
        ))
    });
    Ok(Box::pin(progress.chain(done)))
}
