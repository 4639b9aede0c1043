//! `featherstore`: the server and the command-line tools of FeatherStore.

mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "featherstore", version, about = "A real-time ML feature store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (Arrow Flight, HTTP and metrics).
    Serve(serve::ServeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("featherstore: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
