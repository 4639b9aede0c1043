//! Registry commands: `apply`, `list`, `describe`, `delete`.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;
use featherstore_client::{Change, Code, FeatureServiceSpec, FeatureSetSpec};
use featherstore_core::evolution;
use serde_json::{json, Value};

use crate::common::{text_table, thousands, CliError, CliResult, ServerArgs};

#[derive(Args)]
pub(crate) struct ApplyArgs {
    /// YAML or JSON files declaring feature sets: a list of specs, `{feature_sets: [...]}` or
    /// one spec; YAML may hold several documents. `{feature_sets: [...], feature_services:
    /// [...]}` declares feature services too (created after the sets). `-` reads standard
    /// input.
    #[arg(value_name = "FILE", required_unless_present = "file_options")]
    files: Vec<PathBuf>,
    /// The same as a FILE argument (`apply -f sets.yaml` is `apply sets.yaml`); repeatable.
    #[arg(short = 'f', long = "file", value_name = "FILE", id = "file_options")]
    file_options: Vec<PathBuf>,
    /// Report what would be created without creating anything.
    #[arg(long)]
    dry_run: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Args)]
pub(crate) struct ListArgs {
    /// Print the stored specs as a JSON array.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Args)]
pub(crate) struct DescribeArgs {
    /// Feature set name.
    set: String,
    /// Print the stored spec with its statistics as JSON.
    #[arg(long)]
    json: bool,
    /// List every stored version of the spec (oldest first) instead.
    #[arg(long)]
    versions: bool,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Args)]
pub(crate) struct DeleteArgs {
    /// Feature set name; its data is deleted with it.
    set: String,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

/// What files declare: feature sets and feature services.
#[derive(Debug, Default)]
struct Declared {
    sets: Vec<FeatureSetSpec>,
    services: Vec<FeatureServiceSpec>,
}

/// The feature sets a file declares (its services left out).
#[cfg(test)]
fn read_specs(path: &Path) -> CliResult<Vec<FeatureSetSpec>> {
    read_declared(path).map(|declared| declared.sets)
}

/// The specs and services a file declares, validated, in file order.
fn read_declared(path: &Path) -> CliResult<Declared> {
    let shown = path.display();
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(path).map_err(|e| CliError::from(e).context(&shown))?
    };
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let documents: Vec<Value> = if is_json {
        vec![serde_json::from_str(&text)
            .map_err(|e| CliError::new(format!("{shown}: invalid JSON: {e}")))?]
    } else {
        let mut documents = Vec::new();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document)
                .map_err(|e| CliError::new(format!("{shown}: invalid YAML: {e}")))?;
            if !value.is_null() {
                documents.push(value);
            }
        }
        documents
    };
    let mut items = Vec::new();
    let mut service_items = Vec::new();
    for document in documents {
        match document {
            Value::Array(specs) => items.extend(specs),
            Value::Object(mut object)
                if object.contains_key("feature_sets") || object.contains_key("feature_services") =>
            {
                let known = ["feature_sets", "feature_services"];
                let other: Vec<_> = object.keys().filter(|k| !known.contains(&k.as_str())).collect();
                if !other.is_empty() {
                    return Err(CliError::new(format!(
                        "{shown}: unknown key(s) {other:?} beside \"feature_sets\" and \"feature_services\""
                    )));
                }
                match object.remove("feature_sets") {
                    None => {}
                    Some(Value::Array(specs)) => items.extend(specs),
                    _ => {
                        return Err(CliError::new(format!(
                            "{shown}: \"feature_sets\" must be a list of feature set specs"
                        )))
                    }
                }
                match object.remove("feature_services") {
                    None => {}
                    Some(Value::Array(services)) => service_items.extend(services),
                    _ => {
                        return Err(CliError::new(format!(
                            "{shown}: \"feature_services\" must be a list of feature services"
                        )))
                    }
                }
            }
            spec @ Value::Object(_) => items.push(spec),
            other => {
                return Err(CliError::new(format!(
                    "{shown}: expected a list of feature set specs, {{feature_sets: [...]}} or one spec; found {other}"
                )))
            }
        }
    }
    Ok(Declared {
        sets: parse_items(&shown, "feature set", items, FeatureSetSpec::from_json)?,
        services: parse_items(
            &shown,
            "feature service",
            service_items,
            FeatureServiceSpec::from_json,
        )?,
    })
}

/// Each item validated by `parse`, an error naming the file and the item.
fn parse_items<T>(
    shown: &std::path::Display<'_>,
    what: &str,
    items: Vec<Value>,
    parse: impl Fn(&[u8]) -> featherstore_core::Result<T>,
) -> CliResult<Vec<T>> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let label = match item.get("name").and_then(Value::as_str) {
                Some(name) => format!("{shown}: {what} {name:?}"),
                None => format!("{shown}: {what} #{}", i + 1),
            };
            let bytes = serde_json::to_vec(&item).expect("JSON values serialize");
            parse(&bytes).map_err(|e| CliError::from(e).context(label))
        })
        .collect()
}

enum Outcome {
    Created,
    WouldCreate,
    Updated(Vec<Change>),
    WouldUpdate(Vec<Change>),
    Unchanged,
    Conflict(String),
}

pub(crate) fn apply(args: ApplyArgs) -> CliResult {
    let mut specs = Vec::new();
    let mut services = Vec::new();
    for file in args.file_options.iter().chain(&args.files) {
        let declared = read_declared(file)?;
        specs.extend(declared.sets);
        services.extend(declared.services);
    }
    let mut seen = HashSet::new();
    for spec in &specs {
        if !seen.insert(spec.name.clone()) {
            return Err(CliError::new(format!(
                "feature set {:?} is declared more than once",
                spec.name
            )));
        }
    }
    let mut seen = HashSet::new();
    for service in &services {
        if !seen.insert(service.name.clone()) {
            return Err(CliError::new(format!(
                "feature service {:?} is declared more than once",
                service.name
            )));
        }
    }
    if specs.is_empty() && services.is_empty() {
        return Err(CliError::new("no feature sets declared"));
    }
    let runtime = crate::common::runtime()?;
    let outcomes = runtime.block_on(async {
        let client = args.server.connect().await?;
        let stored = client
            .list_feature_sets()
            .await
            .map_err(|e| args.server.describe(e))?;
        let mut outcomes = Vec::new();
        for spec in &specs {
            let existing = stored.iter().find(|s| s.name == spec.name);
            let outcome = match existing {
                Some(existing) if existing.same_definition(spec) => Outcome::Unchanged,
                Some(existing) if args.dry_run => match evolution::changes(existing, spec) {
                    Ok(changes) => Outcome::WouldUpdate(changes),
                    Err(refused) => Outcome::Conflict(refused.to_string()),
                },
                Some(_) => match client.update_feature_set(spec).await {
                    Ok(update) if update.changes.is_empty() => Outcome::Unchanged,
                    Ok(update) => Outcome::Updated(update.changes),
                    // The server's own words: what cannot change, and what to do instead.
                    Err(e) if e.code() == Some(Code::InvalidArgument) => {
                        Outcome::Conflict(e.message())
                    }
                    Err(e) => {
                        return Err(args
                            .server
                            .describe(e)
                            .context(format!("updating feature set {:?}", spec.name)))
                    }
                },
                None if args.dry_run => Outcome::WouldCreate,
                None => match client.create_feature_set(spec).await {
                    Ok(_) => Outcome::Created,
                    // Created by someone else meanwhile: compare with what they stored.
                    Err(e) if e.is_already_exists() => {
                        let existing = client
                            .get_feature_set(&spec.name)
                            .await
                            .map_err(|e| args.server.describe(e))?
                            .spec;
                        if existing.same_definition(spec) {
                            Outcome::Unchanged
                        } else {
                            Outcome::Conflict(format!(
                                "created meanwhile with another definition (version {}); run \
                                 apply again to update it",
                                existing.version.unwrap_or(1)
                            ))
                        }
                    }
                    Err(e) => {
                        return Err(args
                            .server
                            .describe(e)
                            .context(format!("creating feature set {:?}", spec.name)))
                    }
                },
            };
            if !args.json {
                print_outcome(&spec.name, &outcome);
            }
            outcomes.push(outcome);
        }
        for service in &services {
            let outcome = apply_service(&client, &args, service).await?;
            if !args.json {
                print_outcome(&format!("service {}", service.name), &outcome);
            }
            outcomes.push(outcome);
        }
        Ok::<_, CliError>(outcomes)
    })?;
    if args.json {
        let names = specs.iter().map(|s| (s.name.as_str(), "feature_set"));
        let names = names.chain(
            services
                .iter()
                .map(|s| (s.name.as_str(), "feature_service")),
        );
        let report: Vec<Value> = names
            .zip(&outcomes)
            .map(|((name, kind), outcome)| {
                let (status, detail, changes) = match outcome {
                    Outcome::Created => ("created", None, None),
                    Outcome::WouldCreate => ("would_create", None, None),
                    Outcome::Updated(c) => ("updated", None, Some(c)),
                    Outcome::WouldUpdate(c) => ("would_update", None, Some(c)),
                    Outcome::Unchanged => ("unchanged", None, None),
                    Outcome::Conflict(m) => ("conflict", Some(m.as_str()), None),
                };
                let mut entry = json!({"name": name, "kind": kind, "status": status});
                if let Some(detail) = detail {
                    entry["message"] = Value::from(detail);
                }
                if let Some(changes) = changes {
                    entry["changes"] = json!(changes);
                }
                entry
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    let conflicts = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Conflict(_)))
        .count();
    if conflicts > 0 {
        let what = if services.is_empty() {
            "feature sets"
        } else {
            "feature sets and services"
        };
        return Err(CliError::new(format!(
            "{conflicts} of {} {what} have changes a stored one cannot take (see above); \
             use a new name for those, or delete the set (and its data) or the service to \
             redefine it",
            outcomes.len()
        )));
    }
    Ok(())
}

/// Creates a declared feature service, or checks the stored one: a service is never changed
/// in place (delete it and apply again).
async fn apply_service(
    client: &featherstore_client::Client,
    args: &ApplyArgs,
    service: &FeatureServiceSpec,
) -> CliResult<Outcome> {
    let stored = match client.get_feature_service(&service.name).await {
        Ok(stored) => Some(stored),
        Err(e) if e.code() == Some(Code::NotFound) => None,
        Err(e) => return Err(args.server.describe(e)),
    };
    Ok(match stored {
        Some(stored) if stored.same_definition(service) => Outcome::Unchanged,
        Some(_) => Outcome::Conflict(
            "stored with another definition; `featherstore service delete` it and apply again"
                .into(),
        ),
        None if args.dry_run => Outcome::WouldCreate,
        None => match client.create_feature_service(service).await {
            Ok(_) => Outcome::Created,
            Err(e) => {
                return Err(args
                    .server
                    .describe(e)
                    .context(format!("creating feature service {:?}", service.name)))
            }
        },
    })
}

fn print_outcome(name: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Created => println!("created       {name}"),
        Outcome::WouldCreate => println!("would create  {name}"),
        Outcome::Updated(changes) => print_changes("updated      ", name, changes),
        Outcome::WouldUpdate(changes) => print_changes("would update ", name, changes),
        Outcome::Unchanged => println!("unchanged     {name}"),
        Outcome::Conflict(message) => println!("conflict      {name}: {message}"),
    }
}

fn print_changes(label: &str, name: &str, changes: &[Change]) {
    println!("{label} {name}");
    for change in changes {
        println!("                {change}");
    }
}

pub(crate) fn list(args: ListArgs) -> CliResult {
    let runtime = crate::common::runtime()?;
    runtime.block_on(async {
        let client = args.server.connect().await?;
        let specs = client
            .list_feature_sets()
            .await
            .map_err(|e| args.server.describe(e))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&specs)?);
            return Ok(());
        }
        if specs.is_empty() {
            println!("no feature sets");
            return Ok(());
        }
        let rows: Vec<Vec<String>> = specs
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    format!("{} ({})", s.entity.name, s.entity.entity_type),
                    s.features.len().to_string(),
                    s.ttl_seconds.map(|t| format!("{t}s")).unwrap_or_default(),
                    s.version.map(|v| v.to_string()).unwrap_or_default(),
                    s.created_at.clone().unwrap_or_default(),
                    s.description.clone().unwrap_or_default(),
                ]
            })
            .collect();
        println!(
            "{}",
            text_table(
                &[
                    "name",
                    "entity",
                    "features",
                    "ttl",
                    "version",
                    "created_at",
                    "description"
                ],
                &rows
            )
        );
        Ok(())
    })
}

pub(crate) fn describe(args: DescribeArgs) -> CliResult {
    let runtime = crate::common::runtime()?;
    runtime.block_on(async {
        let client = args.server.connect().await?;
        if args.versions {
            let versions = client
                .list_feature_set_versions(&args.set)
                .await
                .map_err(|e| args.server.describe(e))?;
            return print_versions(&versions, args.json);
        }
        let info = client
            .get_feature_set(&args.set)
            .await
            .map_err(|e| args.server.describe(e))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&info)?);
            return Ok(());
        }
        let spec = &info.spec;
        println!("feature set   {}", spec.name);
        if let Some(description) = &spec.description {
            println!("description   {description}");
        }
        println!(
            "entity        {} ({})",
            spec.entity.name, spec.entity.entity_type
        );
        println!("timestamp     {}", spec.timestamp);
        if let Some(ttl) = spec.ttl_seconds {
            println!("ttl           {ttl} s");
        }
        if !spec.tags.is_empty() {
            let tags: Vec<String> = spec.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("tags          {}", tags.join(", "));
        }
        if let Some(version) = spec.version {
            println!("version       {version}");
        }
        if let Some(created) = &spec.created_at {
            println!("created_at    {created}");
        }
        println!("rows          {}", thousands(info.stats.rows));
        println!("entities      {}", thousands(info.stats.entities));
        if let Some(latest) = info.stats.latest_event_timestamp {
            println!("latest event  {latest}");
        }
        let rows: Vec<Vec<String>> = spec
            .features
            .iter()
            .map(|f| {
                vec![
                    f.name.clone(),
                    f.feature_type.to_string(),
                    f.description.clone().unwrap_or_default(),
                ]
            })
            .collect();
        println!("{}", text_table(&["feature", "type", "description"], &rows));
        Ok(())
    })
}

pub(crate) fn delete(args: DeleteArgs) -> CliResult {
    let runtime = crate::common::runtime()?;
    runtime.block_on(async {
        let client = args.server.connect().await?;
        client
            .delete_feature_set(&args.set)
            .await
            .map_err(|e| args.server.describe(e))?;
        println!("deleted feature set {}", args.set);
        Ok(())
    })
}

/// One line per version (`--json`: the specs), oldest first.
fn print_versions(versions: &[FeatureSetSpec], json: bool) -> CliResult {
    if json {
        println!("{}", serde_json::to_string_pretty(versions)?);
        return Ok(());
    }
    let mut previous: Option<&FeatureSetSpec> = None;
    for spec in versions {
        let version = spec.version.unwrap_or(1);
        let created = spec.created_at.as_deref().unwrap_or("");
        println!(
            "version {version}  {created}  {} features",
            spec.features.len()
        );
        if let Some(previous) = previous {
            // Stored versions passed the rules, so this lists what each one changed.
            for change in evolution::changes(previous, spec).unwrap_or_default() {
                println!("    {change}");
            }
        }
        previous = Some(spec);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn reads_every_declaration_shape() {
        let (_d, list) = write(
            "a.yaml",
            "- name: a\n  entity: {name: id, type: int64}\n  features: [{name: x, type: float32}]\n",
        );
        assert_eq!(read_specs(&list).unwrap()[0].name, "a");
        let (_d, wrapped) = write(
            "b.yml",
            "feature_sets:\n  - name: b\n    entity: {name: id, type: string}\n    features: []\n---\nname: c\nentity: {name: id, type: string}\nfeatures: []\n",
        );
        let names: Vec<_> = read_specs(&wrapped)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["b", "c"]);
        let (_d, json) = write(
            "c.json",
            r#"{"feature_sets": [{"name": "d", "entity": {"name": "id", "type": "string"}, "features": []}]}"#,
        );
        assert_eq!(read_specs(&json).unwrap()[0].timestamp, "event_timestamp");
    }

    #[test]
    fn names_the_bad_spec() {
        let (_d, bad) = write(
            "bad.yaml",
            "- name: ok\n  entity: {name: id, type: int64}\n  features: []\n- name: broken\n  entity: {name: id, type: float}\n  features: []\n",
        );
        let err = read_specs(&bad).unwrap_err().to_string();
        assert!(err.contains("\"broken\""), "{err}");
        let (_d, junk) = write("junk.yaml", "just a string");
        assert!(read_specs(&junk).is_err());
    }

    #[test]
    fn reads_feature_services_beside_sets() {
        let (_d, both) = write(
            "both.yaml",
            "feature_sets:\n  - {name: a, entity: {name: id, type: int64}, features: []}\nfeature_services:\n  - {name: s, features: ['a:*']}\n",
        );
        let declared = read_declared(&both).unwrap();
        assert_eq!(
            (declared.sets.len(), declared.services[0].name.as_str()),
            (1, "s")
        );
        let (_d, only) = write(
            "only.yaml",
            "feature_services: [{name: s, features: ['a:x']}]\n",
        );
        assert_eq!(read_declared(&only).unwrap().services.len(), 1);
        let (_d, bad) = write(
            "bad.yaml",
            "feature_services: [{name: s, features: ['nocolon']}]\n",
        );
        let err = read_declared(&bad).unwrap_err().to_string();
        assert!(err.contains("feature service \"s\""), "{err}");
        let (_d, extra) = write("extra.yaml", "feature_services: []\nmodels: []\n");
        assert!(read_declared(&extra)
            .unwrap_err()
            .to_string()
            .contains("models"));
    }
}
