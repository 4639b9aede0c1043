//! Feature services of the Parquet backend: one JSON file per service,
//! `{dir}/.services/{name}.json`, beside the sets' directories (a name starting with a dot is
//! never a set's). Each file is written atomically and fsynced, so a crash leaves the old
//! document or the new one, never a torn one.

use std::path::{Path, PathBuf};

use featherstore_core::spec::is_valid_name;
use featherstore_core::FeatureServiceSpec;

use super::durable::{self, create_dir_durably, list_dir, sync_dir, write_atomic, TMP_SUFFIX};
use crate::offline::parse_service;
use crate::{Error, Result};

const SERVICES_DIR: &str = ".services";
const SUFFIX: &str = ".json";

fn services_dir(dir: &Path) -> PathBuf {
    dir.join(SERVICES_DIR)
}

/// Every stored service, by name; debris of a crash mid-write is removed.
pub(super) fn load(dir: &Path) -> Result<Vec<FeatureServiceSpec>> {
    let mut services = Vec::new();
    for entry in list_dir(&services_dir(dir))? {
        let path = entry.path();
        let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if file.ends_with(TMP_SUFFIX) {
            durable::remove_quietly(&path);
            continue;
        }
        let Some(name) = file.strip_suffix(SUFFIX).filter(|n| is_valid_name(n)) else {
            continue;
        };
        let bytes =
            std::fs::read(&path).map_err(Error::io(format!("reading {}", path.display())))?;
        services.push(parse_service(name, &bytes)?);
    }
    Ok(services)
}

pub(super) fn save(dir: &Path, service: &FeatureServiceSpec) -> Result<()> {
    let services = services_dir(dir);
    create_dir_durably(&services)?;
    let json = serde_json::to_vec_pretty(service).expect("services serialize");
    write_atomic(&services.join(format!("{}{SUFFIX}", service.name)), &json)
}

pub(super) fn delete(dir: &Path, name: &str) -> Result<()> {
    let services = services_dir(dir);
    let path = services.join(format!("{name}{SUFFIX}"));
    match std::fs::remove_file(&path) {
        Ok(()) => sync_dir(&services),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()))(e)),
    }
}
