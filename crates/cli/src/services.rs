//! `featherstore service`: list, describe, delete feature services, and read their online
//! values across sets. Services are created by `featherstore apply` (`feature_services:`).

use clap::{Args, Subcommand};
use featherstore_client::{Client, FeatureServiceSpec, MultiOnlineRequest};

use crate::common::{parse_entities, text_table, CliError, CliResult, ServerArgs};
use crate::output::{write_results, OneBatch, OutputArgs};

#[derive(Args)]
pub(crate) struct ServiceArgs {
    #[command(subcommand)]
    pub(crate) command: ServiceCommand,
}

#[derive(Subcommand)]
pub(crate) enum ServiceCommand {
    /// List the feature services.
    List(ListArgs),
    /// Show a feature service.
    Describe(NameArgs),
    /// Delete a feature service (its feature sets and their data stay).
    Delete(NameArgs),
    /// The online values of a service's features for entity rows, one row per entity row.
    Get(GetArgs),
}

#[derive(Args)]
pub(crate) struct ListArgs {
    /// Print the stored services as a JSON array.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Args)]
pub(crate) struct NameArgs {
    /// Feature service name.
    name: String,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Args)]
pub(crate) struct GetArgs {
    /// Feature service name.
    name: String,
    /// A key column: ENTITY=KEY,KEY,... (one per entity name of the service's sets; every
    /// column has one key per entity row).
    #[arg(long = "entity", required = true, value_name = "ENTITY=KEYS")]
    entities: Vec<String>,
    /// Name features set__feature instead of feature.
    #[arg(long)]
    full_names: bool,
    /// Add each set's event time (set__event_timestamp).
    #[arg(long)]
    with_timestamps: bool,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

impl ServiceCommand {
    pub(crate) fn server_args(&mut self) -> &mut ServerArgs {
        match self {
            ServiceCommand::List(args) => &mut args.server,
            ServiceCommand::Describe(args) | ServiceCommand::Delete(args) => &mut args.server,
            ServiceCommand::Get(args) => &mut args.server,
        }
    }
}

pub(crate) fn run(args: ServiceArgs) -> CliResult {
    let runtime = crate::common::runtime()?;
    runtime.block_on(async {
        match args.command {
            ServiceCommand::List(args) => list(args).await,
            ServiceCommand::Describe(args) => describe(args).await,
            ServiceCommand::Delete(args) => delete(args).await,
            ServiceCommand::Get(args) => get(args).await,
        }
    })
}

async fn list(args: ListArgs) -> CliResult {
    let client = args.server.connect().await?;
    let services = client
        .list_feature_services()
        .await
        .map_err(|e| args.server.describe(e))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&services)?);
    } else if services.is_empty() {
        println!("no feature services");
    } else {
        let rows: Vec<Vec<String>> = services
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.features.join(", "),
                    s.created_at.clone().unwrap_or_default(),
                    s.description.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let headers = ["name", "features", "created_at", "description"];
        println!("{}", text_table(&headers, &rows));
    }
    Ok(())
}

async fn describe(args: NameArgs) -> CliResult {
    let client = args.server.connect().await?;
    let service = client
        .get_feature_service(&args.name)
        .await
        .map_err(|e| args.server.describe(e))?;
    println!("{}", serde_json::to_string_pretty(&service)?);
    Ok(())
}

async fn delete(args: NameArgs) -> CliResult {
    let client = args.server.connect().await?;
    client
        .delete_feature_service(&args.name)
        .await
        .map_err(|e| args.server.describe(e))?;
    println!("deleted feature service {}", args.name);
    Ok(())
}

async fn get(args: GetArgs) -> CliResult {
    let client = args.server.connect().await?;
    let service = client
        .get_feature_service(&args.name)
        .await
        .map_err(|e| args.server.describe(e))?;
    let mut request = MultiOnlineRequest::service(&args.name)
        .full_names(args.full_names)
        .with_timestamps(args.with_timestamps);
    for column in &args.entities {
        let (entity, keys) = column.split_once('=').ok_or_else(|| {
            CliError::new(format!(
                "--entity {column:?} must be ENTITY=KEY,KEY,... (e.g. user_id=u1,u2)"
            ))
        })?;
        let keys: Vec<String> = keys.split(',').map(str::to_owned).collect();
        let spec = entity_spec(&client, &service, entity)
            .await
            .map_err(|e| args.server.describe(e))?
            .ok_or_else(|| {
                CliError::new(format!(
                    "no feature set of service {:?} is keyed by {entity:?}",
                    service.name
                ))
            })?;
        request = request.entity(entity, parse_entities(&spec, &keys)?);
    }
    let batch = client
        .online_multi(request)
        .await
        .map_err(|e| args.server.describe(e))?;
    write_results(OneBatch::new(batch), &args.output, |e| {
        args.server.describe(e)
    })
    .await?;
    Ok(())
}

/// The spec of the first set of `service` keyed by `entity` (its type types the keys).
async fn entity_spec(
    client: &Client,
    service: &FeatureServiceSpec,
    entity: &str,
) -> featherstore_client::Result<Option<featherstore_client::FeatureSetSpec>> {
    let sets = service.set_names().unwrap_or_default();
    let specs = client.list_feature_sets().await?;
    Ok(specs
        .into_iter()
        .find(|spec| spec.entity.name == entity && sets.contains(&spec.name)))
}
