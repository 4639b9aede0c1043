//! Feature services of the Parquet backend: one JSON file per service,
//! `{dir}/.services/{name}.json`, beside the sets' directories (a name starting with a dot is
//! never a set's). Each file is written atomically and fsynced, so a crash leaves the old
//! document or the new one, never a torn one.

use std::path::{Path, PathBuf};

use featherstore_core::spec::is_valid_name;
use featherstore_core::FeatureServiceSpec;

use crate::durable::{self, create_dir_durably, list_dir, sync_dir, write_atomic, TMP_SUFFIX};
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

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, features: &[&str]) -> FeatureServiceSpec {
        FeatureServiceSpec {
            name: name.into(),
            features: features.iter().map(|f| f.to_string()).collect(),
            description: None,
            tags: Default::default(),
            created_at: Some("2026-01-01T00:00:00Z".into()),
        }
    }

    #[test]
    fn services_are_files_replaced_whole_and_crash_debris_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty(), "no directory yet");
        save(dir.path(), &service("b", &["s:*"])).unwrap();
        save(dir.path(), &service("a", &["s:x"])).unwrap();
        save(dir.path(), &service("a", &["s:y"])).unwrap();
        let debris = services_dir(dir.path()).join("c.json.tmp");
        std::fs::write(&debris, b"{\"name\": \"c\", \"feat").unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded, [service("a", &["s:y"]), service("b", &["s:*"])]);
        assert!(!debris.exists(), "a half-written file is removed at load");
        delete(dir.path(), "a").unwrap();
        delete(dir.path(), "a").unwrap();
        assert_eq!(load(dir.path()).unwrap(), [service("b", &["s:*"])]);
        std::fs::write(services_dir(dir.path()).join("b.json"), b"{").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("feature service \"b\""), "{err}");
    }
}
