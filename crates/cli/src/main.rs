//! `featherstore`: the server and the command-line tools of FeatherStore.

mod admin;
mod columns;
mod common;
mod ingest;
mod online;
mod output;
mod read;
mod serve;
mod services;
mod source;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "featherstore", version, about = "A real-time ML feature store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Bearer token of a server with auth (docs/security.md); before or after the command.
    // The one definition: `main` hands it to the command's `ServerArgs`.
    #[arg(
        long,
        global = true,
        env = featherstore_client::TOKEN_ENV,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (Arrow Flight, HTTP and metrics).
    Serve(serve::ServeArgs),
    /// Create or check the feature sets declared in YAML or JSON files.
    Apply(admin::ApplyArgs),
    /// Ingest Parquet, CSV, Arrow IPC or JSON lines files into a feature set.
    Ingest(ingest::IngestArgs),
    /// The online (latest) values of entities.
    Get(read::GetArgs),
    /// The stored rows of a feature set, by entity and event time.
    History(read::HistoryArgs),
    /// Point-in-time correct training data for entity rows.
    TrainingData(read::TrainingDataArgs),
    /// List the feature sets.
    List(admin::ListArgs),
    /// Show a feature set's spec and statistics.
    Describe(admin::DescribeArgs),
    /// Delete a feature set and all its data.
    Delete(admin::DeleteArgs),
    /// Feature services: list, describe, delete, and online reads across their sets.
    Service(services::ServiceArgs),
    /// The online store: `rebuild` a set's online values from the offline store.
    Online(online::OnlineArgs),
}

impl Command {
    /// The server connection settings of a client command.
    fn server_args(&mut self) -> Option<&mut common::ServerArgs> {
        match self {
            Command::Serve(_) => None,
            Command::Apply(args) => Some(&mut args.server),
            Command::Ingest(args) => Some(&mut args.server),
            Command::Get(args) => Some(&mut args.server),
            Command::History(args) => Some(&mut args.server),
            Command::TrainingData(args) => Some(&mut args.server),
            Command::List(args) => Some(&mut args.server),
            Command::Describe(args) => Some(&mut args.server),
            Command::Delete(args) => Some(&mut args.server),
            Command::Service(args) => Some(args.command.server_args()),
            Command::Online(args) => Some(args.command.server_args()),
        }
    }
}

fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    if let Some(server) = cli.command.server_args() {
        server.token = cli.token.take();
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Apply(args) => admin::apply(args).map_err(|e| e.0),
        Command::Ingest(args) => ingest::run(args).map_err(|e| e.0),
        Command::Get(args) => read::get(args).map_err(|e| e.0),
        Command::History(args) => read::history(args).map_err(|e| e.0),
        Command::TrainingData(args) => read::training_data(args).map_err(|e| e.0),
        Command::List(args) => admin::list(args).map_err(|e| e.0),
        Command::Describe(args) => admin::describe(args).map_err(|e| e.0),
        Command::Delete(args) => admin::delete(args).map_err(|e| e.0),
        Command::Service(args) => services::run(args).map_err(|e| e.0),
        Command::Online(args) => online::run(args).map_err(|e| e.0),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("featherstore: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
