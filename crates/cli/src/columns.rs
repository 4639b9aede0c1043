//! Which columns of a data file go into a feature set, and under which names: `featherstore
//! ingest --columns`, `--rename` and `--timestamp-column`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema};
use featherstore_core::FeatureSetSpec;

use crate::common::{CliError, CliResult};

/// `--rename SRC=DST`, parsed.
pub(crate) fn parse_rename(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((from, to)) if !from.trim().is_empty() && !to.trim().is_empty() => {
            Ok((from.trim().to_string(), to.trim().to_string()))
        }
        _ => Err(format!(
            "expected SRC=DST (a column of the file, then its name in the set), got {text:?}"
        )),
    }
}

/// How the columns of a file map onto a set's columns.
#[derive(Debug, Default)]
pub(crate) struct ColumnMap {
    /// Only these file columns, when given.
    keep: Option<Vec<String>>,
    /// File column name to set column name.
    rename: HashMap<String, String>,
}

impl ColumnMap {
    /// Checks the flags against each other: a column renamed twice, or two columns given one
    /// name, is an error. `--timestamp-column NAME` is `--rename NAME=<the set's timestamp>`.
    pub(crate) fn new(
        spec: &FeatureSetSpec,
        keep: Option<Vec<String>>,
        renames: Vec<(String, String)>,
        timestamp_column: Option<String>,
    ) -> CliResult<Self> {
        let timestamp = timestamp_column.map(|name| (name, spec.timestamp.clone()));
        let mut rename = HashMap::new();
        let mut targets = HashSet::new();
        for (from, to) in renames.into_iter().chain(timestamp) {
            if let Some(earlier) = rename.insert(from.clone(), to.clone()) {
                return Err(CliError::new(format!(
                    "column {from:?} is renamed twice (to {earlier:?} and to {to:?})"
                )));
            }
            if !targets.insert(to.clone()) {
                return Err(CliError::new(format!(
                    "two columns are renamed to {to:?}; a set column takes one file column"
                )));
            }
        }
        let keep = keep.map(|names| {
            names
                .into_iter()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect()
        });
        Ok(ColumnMap { keep, rename })
    }

    /// Whether the file's columns go through as they are.
    pub(crate) fn is_identity(&self) -> bool {
        self.keep.is_none() && self.rename.is_empty()
    }

    /// The set's name for file column `name`.
    pub(crate) fn target<'a>(&'a self, name: &'a str) -> &'a str {
        self.rename.get(name).map_or(name, String::as_str)
    }

    /// Whether file column `name` is taken.
    pub(crate) fn keeps(&self, name: &str) -> bool {
        self.keep
            .as_ref()
            .is_none_or(|keep| keep.iter().any(|k| k == name))
    }

    /// Checks that the named columns exist among `file_columns` (the flags name file columns;
    /// a typo must not pass unnoticed).
    pub(crate) fn check_names<'a>(
        &self,
        file_columns: impl Iterator<Item = &'a str> + Clone,
    ) -> CliResult {
        let named = self
            .keep
            .iter()
            .flatten()
            .map(|n| (n.as_str(), "--columns"))
            .chain(
                self.rename
                    .keys()
                    .map(|n| (n.as_str(), "--rename/--timestamp-column")),
            );
        for (name, flag) in named {
            if !file_columns.clone().any(|c| c == name) {
                let have: Vec<String> = file_columns.clone().map(|c| format!("{c:?}")).collect();
                return Err(CliError::new(format!(
                    "column {name:?} given to {flag} is not in the file; its columns are {}",
                    have.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Checks that the set columns a file yields are declared, and that the entity and event
    /// time are there; the errors name the flags that fix them.
    pub(crate) fn check_declared<'a>(
        &self,
        spec: &FeatureSetSpec,
        file_columns: impl Iterator<Item = &'a str> + Clone,
    ) -> CliResult {
        self.check_undeclared(spec, file_columns.clone())?;
        let yields = |set_column: &str| {
            file_columns
                .clone()
                .any(|c| self.keeps(c) && self.target(c) == set_column)
        };
        if !yields(&spec.timestamp) {
            return Err(CliError::new(format!(
                "no column of the file is the event time {:?} of feature set {:?}; name the \
                 file's time column with --timestamp-column NAME",
                spec.timestamp, spec.name
            )));
        }
        if !yields(&spec.entity.name) {
            return Err(CliError::new(format!(
                "no column of the file is the entity key {:?} of feature set {:?}; map the \
                 file's key column with --rename SRC={}",
                spec.entity.name, spec.name, spec.entity.name
            )));
        }
        Ok(())
    }

    /// Checks that the set columns a file yields are all declared; the error lists the others
    /// and the flags that skip or rename them.
    pub(crate) fn check_undeclared<'a>(
        &self,
        spec: &FeatureSetSpec,
        file_columns: impl Iterator<Item = &'a str> + Clone,
    ) -> CliResult {
        let declared = |name: &str| {
            name == spec.entity.name || name == spec.timestamp || spec.feature(name).is_some()
        };
        let taken = file_columns.clone().filter(|c| self.keeps(c));
        let undeclared: Vec<&str> = taken
            .clone()
            .filter(|c| !declared(self.target(c)))
            .collect();
        if !undeclared.is_empty() {
            let listed: Vec<String> = undeclared.iter().map(|c| format!("{c:?}")).collect();
            let usable: Vec<&str> = taken.clone().filter(|c| declared(self.target(c))).collect();
            let (noun, verb) = if undeclared.len() == 1 {
                ("column", "is")
            } else {
                ("columns", "are")
            };
            return Err(CliError::new(format!(
                "{noun} {} of the file {verb} not declared by feature set {:?} (entity {:?}, \
                 timestamp {:?}, features {}); skip {} with --columns {}, or give {} a set \
                 column's name with --rename SRC=DST",
                listed.join(", "),
                spec.name,
                spec.entity.name,
                spec.timestamp,
                feature_names(spec),
                if undeclared.len() == 1 { "it" } else { "them" },
                usable.join(","),
                if undeclared.len() == 1 { "it" } else { "them" },
            )));
        }
        Ok(())
    }

    /// `batch` with the taken columns only, under their set names.
    pub(crate) fn apply(&self, batch: RecordBatch) -> CliResult<RecordBatch> {
        if self.is_identity() {
            return Ok(batch);
        }
        let schema = batch.schema();
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            if self.keeps(field.name()) {
                fields.push(
                    Field::new(self.target(field.name()), field.data_type().clone(), true)
                        .with_metadata(field.metadata().clone()),
                );
                columns.push(column.clone());
            }
        }
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }
}

fn feature_names(spec: &FeatureSetSpec) -> String {
    if spec.features.is_empty() {
        return "none".to_string();
    }
    let names: Vec<String> = spec
        .features
        .iter()
        .map(|f| format!("{:?}", f.name))
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array};

    fn spec() -> FeatureSetSpec {
        FeatureSetSpec::from_json(
            br#"{"name": "s", "entity": {"name": "id", "type": "int64"},
                 "features": [{"name": "a", "type": "int32"}, {"name": "b", "type": "float32"}]}"#,
        )
        .unwrap()
    }

    fn batch(names: &[&str]) -> RecordBatch {
        RecordBatch::try_from_iter(
            names
                .iter()
                .map(|n| (*n, Arc::new(Int64Array::from(vec![1])) as ArrayRef)),
        )
        .unwrap()
    }

    #[test]
    fn keeps_and_renames() {
        let map = ColumnMap::new(
            &spec(),
            Some(vec!["user".into(), "ts".into(), "a".into()]),
            vec![("user".into(), "id".into())],
            Some("ts".into()),
        )
        .unwrap();
        let file = ["user", "ts", "a", "extra"];
        map.check_names(file.iter().copied()).unwrap();
        map.check_declared(&spec(), file.iter().copied()).unwrap();
        let out = map.apply(batch(&file)).unwrap().schema();
        let names: Vec<&str> = out.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "event_timestamp", "a"]);
    }

    #[test]
    fn names_undeclared_columns_and_the_flags() {
        let map = ColumnMap::default();
        let file = ["id", "event_timestamp", "a", "x", "y"];
        let err = map
            .check_declared(&spec(), file.iter().copied())
            .unwrap_err()
            .0;
        assert!(
            err.starts_with("columns \"x\", \"y\" of the file are not declared"),
            "{err}"
        );
        assert!(err.contains("--columns id,event_timestamp,a"), "{err}");
        assert!(err.contains("--rename SRC=DST"), "{err}");

        let file = ["id", "ts"];
        let err = map
            .check_declared(&spec(), file.iter().copied())
            .unwrap_err()
            .0;
        assert!(err.contains("\"ts\" of the file is not declared"), "{err}");
        let err = map
            .check_declared(&spec(), ["id", "a"].iter().copied())
            .unwrap_err()
            .0;
        assert!(err.contains("--timestamp-column NAME"), "{err}");
    }

    #[test]
    fn refuses_unknown_and_conflicting_names() {
        let map = ColumnMap::new(&spec(), Some(vec!["nope".into()]), vec![], None).unwrap();
        let err = map.check_names(["id", "a"].iter().copied()).unwrap_err().0;
        assert!(
            err.contains("\"nope\" given to --columns is not in the file"),
            "{err}"
        );
        let err = ColumnMap::new(
            &spec(),
            None,
            vec![("ts".into(), "a".into())],
            Some("ts".into()),
        )
        .unwrap_err()
        .0;
        assert!(err.contains("renamed twice"), "{err}");
        let err = ColumnMap::new(
            &spec(),
            None,
            vec![("x".into(), "a".into()), ("y".into(), "a".into())],
            None,
        )
        .unwrap_err()
        .0;
        assert!(err.contains("two columns are renamed to \"a\""), "{err}");
        assert!(parse_rename("a").is_err() && parse_rename("=b").is_err());
        assert_eq!(parse_rename(" a = b ").unwrap(), ("a".into(), "b".into()));
    }
}
