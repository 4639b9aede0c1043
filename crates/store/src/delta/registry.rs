//! The specs of the feature sets, in the object store beside their tables, so that every
//! server on the bucket sees the same registry:
//!
//! ```text
//! {uri}/_featherstore/specs/{set}/v0000000001.json   version 1 of the set's spec
//! {uri}/_featherstore/specs/{set}/v0000000002.json   version 2 (after an update), ...
//! ```
//!
//! Each version is written once, with a conditional put (`PutMode::Create`): of two servers
//! creating the same set, or updating it to the same version, one wins and the other gets
//! ALREADY_EXISTS / ABORTED. The set's current spec is its greatest version.
//!
//! Feature services are one object each, `{uri}/_featherstore/services/{name}.json`, also
//! written with a conditional put (`put_service`).

use std::collections::BTreeMap;

use deltalake::logstore::object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use deltalake::{ObjectStore, ObjectStoreError, Path};
use featherstore_core::spec::is_valid_name;
use featherstore_core::{FeatureServiceSpec, FeatureSetSpec};
use futures::TryStreamExt;

use crate::offline::parse_service;
use crate::{Error, Result};

/// The folder of the registry under the table root, beside the tables: no feature set may
/// take its name (see [`check_set_name`]).
pub(super) const REGISTRY_DIR: &str = "_featherstore";

const SPECS: &str = "_featherstore/specs";

/// A set's table is the folder named after it, so a set named as the registry's folder
/// would write its table into the registry (and read specs as data files).
pub(super) fn check_set_name(name: &str) -> Result<()> {
    if name == REGISTRY_DIR {
        return Err(featherstore_core::Error::invalid(format!(
            "the feature set name {name:?} is reserved by the Delta backend (its registry \
             folder); choose another name"
        ))
        .into());
    }
    Ok(())
}

fn set_prefix(set: &str) -> Path {
    Path::from(format!("{SPECS}/{set}"))
}

fn version_path(set: &str, version: u64) -> Path {
    Path::from(format!("{SPECS}/{set}/v{version:010}.json"))
}

/// The set and version a registry object holds, from its path.
fn parse_path(path: &Path) -> Option<(String, u64)> {
    let mut parts = path.parts();
    let (first, second) = (parts.next()?, parts.next()?);
    if first.as_ref() != REGISTRY_DIR || second.as_ref() != "specs" {
        return None;
    }
    let set = parts.next()?.as_ref().to_string();
    let file = parts.next()?;
    let version = file
        .as_ref()
        .strip_prefix('v')?
        .strip_suffix(".json")?
        .parse()
        .ok()?;
    (parts.next().is_none() && is_valid_name(&set)).then_some((set, version))
}

async fn read_spec(store: &dyn ObjectStore, path: &Path) -> Result<FeatureSetSpec> {
    let bytes = store.get(path).await?.bytes().await?;
    FeatureSetSpec::from_json(&bytes).map_err(|e| Error::Corrupt(format!("{path}: {e}")))
}

/// Every version of every set: set → version → path.
async fn list(store: &dyn ObjectStore, prefix: &Path) -> Result<BTreeMap<String, Vec<u64>>> {
    let objects: Vec<_> = store.list(Some(prefix)).try_collect().await?;
    let mut sets: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for object in objects {
        if let Some((set, version)) = parse_path(&object.location) {
            sets.entry(set).or_default().push(version);
        }
    }
    for versions in sets.values_mut() {
        versions.sort_unstable();
    }
    Ok(sets)
}

/// The current spec of every set, by name.
pub(super) async fn load_specs(store: &dyn ObjectStore) -> Result<Vec<FeatureSetSpec>> {
    let mut specs = Vec::new();
    for (set, versions) in list(store, &Path::from(SPECS)).await? {
        if let Some(&latest) = versions.last() {
            specs.push(read_spec(store, &version_path(&set, latest)).await?);
        }
    }
    Ok(specs)
}

/// Every stored version of a set's spec, oldest first.
pub(super) async fn versions(store: &dyn ObjectStore, set: &str) -> Result<Vec<FeatureSetSpec>> {
    let mut specs = Vec::new();
    let listed = list(store, &set_prefix(set)).await?;
    for version in listed.get(set).into_iter().flatten() {
        specs.push(read_spec(store, &version_path(set, *version)).await?);
    }
    Ok(specs)
}

/// Writes `spec` as its version, unless that version exists: `Ok(false)` then.
pub(super) async fn put_new(store: &dyn ObjectStore, spec: &FeatureSetSpec) -> Result<bool> {
    let bytes = serde_json::to_vec_pretty(spec)
        .map_err(|e| Error::Corrupt(format!("encoding the spec of {:?}: {e}", spec.name)))?;
    let options = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let path = version_path(&spec.name, spec.version.unwrap_or(1));
    match store
        .put_opts(&path, PutPayload::from(bytes), options)
        .await
    {
        Ok(_) => Ok(true),
        Err(ObjectStoreError::AlreadyExists { .. } | ObjectStoreError::Precondition { .. }) => {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// One stored version of a set's spec.
pub(super) async fn read_version(
    store: &dyn ObjectStore,
    set: &str,
    version: u64,
) -> Result<FeatureSetSpec> {
    read_spec(store, &version_path(set, version)).await
}

/// Removes every version of a set's spec: from then on the set does not exist.
pub(super) async fn remove(store: &dyn ObjectStore, set: &str) -> Result<()> {
    let objects: Vec<_> = store.list(Some(&set_prefix(set))).try_collect().await?;
    for object in objects {
        match store.delete(&object.location).await {
            Ok(()) | Err(ObjectStoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Where the feature services live: one JSON object per service, beside the specs.
const SERVICES: &str = "_featherstore/services";

fn service_path(name: &str) -> Path {
    Path::from(format!("{SERVICES}/{name}.json"))
}

/// The service a registry object holds, from its path.
fn parse_service_path(path: &Path) -> Option<String> {
    let mut parts = path.parts();
    let (first, second, file) = (parts.next()?, parts.next()?, parts.next()?);
    if first.as_ref() != REGISTRY_DIR || second.as_ref() != "services" {
        return None;
    }
    let name = file.as_ref().strip_suffix(".json")?;
    (parts.next().is_none() && is_valid_name(name)).then(|| name.to_string())
}

/// Every stored feature service, ordered by name.
pub(super) async fn load_services(store: &dyn ObjectStore) -> Result<Vec<FeatureServiceSpec>> {
    let objects: Vec<_> = store
        .list(Some(&Path::from(SERVICES)))
        .try_collect()
        .await?;
    let mut names: Vec<String> = objects
        .iter()
        .filter_map(|object| parse_service_path(&object.location))
        .collect();
    names.sort_unstable();
    let mut services = Vec::with_capacity(names.len());
    for name in names {
        match store.get(&service_path(&name)).await {
            Ok(found) => services.push(parse_service(&name, &found.bytes().await?)?),
            // Deleted by another server since the listing.
            Err(ObjectStoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(services)
}

/// Stores a service under its name with a conditional put, so that of two servers creating
/// the same name at once one wins. The same definition stored already (by another server, or
/// by this put when its answer was lost) is no error; a different one is ALREADY_EXISTS: each
/// server only stores a service it does not know, and replacing another server's would leave
/// the servers serving different definitions under one name.
pub(super) async fn put_service(
    store: &dyn ObjectStore,
    service: &FeatureServiceSpec,
) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(service)
        .map_err(|e| Error::Corrupt(format!("encoding feature service {:?}: {e}", service.name)))?;
    let options = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let path = service_path(&service.name);
    match store
        .put_opts(&path, PutPayload::from(bytes), options)
        .await
    {
        Ok(_) => Ok(()),
        Err(ObjectStoreError::AlreadyExists { .. } | ObjectStoreError::Precondition { .. }) => {
            let stored = store.get(&path).await?.bytes().await?;
            if parse_service(&service.name, &stored)?.same_definition(service) {
                Ok(())
            } else {
                Err(featherstore_core::Error::AlreadyExists(format!(
                    "feature service {:?} was stored meanwhile by another server with a different definition",
                    service.name
                ))
                .into())
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes a stored service; one that is not stored is no error.
pub(super) async fn remove_service(store: &dyn ObjectStore, name: &str) -> Result<()> {
    match store.delete(&service_path(name)).await {
        Ok(()) | Err(ObjectStoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_version_files_of_valid_sets() {
        assert_eq!(
            parse_path(&version_path("users", 12)),
            Some(("users".to_string(), 12))
        );
        assert_eq!(
            parse_path(&Path::from("_featherstore/specs/users/x.json")),
            None
        );
        assert_eq!(parse_path(&Path::from("users/_delta_log/0.json")), None);
    }
}
