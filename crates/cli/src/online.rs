//! `featherstore online`: the online store's maintenance (`rebuild`).

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget};

use crate::common::{CliResult, ServerArgs};
use crate::ingest::{rows, style};

#[derive(Args)]
pub(crate) struct OnlineArgs {
    #[command(subcommand)]
    pub(crate) command: OnlineCommand,
}

#[derive(Subcommand)]
pub(crate) enum OnlineCommand {
    /// Write a set's latest values from the server's offline store into the online store
    /// again (after Redis lost its data, say). Ingest into the set waits meanwhile; values
    /// newer than the offline store's are kept.
    Rebuild(RebuildArgs),
}

impl OnlineCommand {
    pub(crate) fn server_args(&mut self) -> &mut ServerArgs {
        match self {
            OnlineCommand::Rebuild(args) => &mut args.server,
        }
    }
}

#[derive(Args)]
pub(crate) struct RebuildArgs {
    /// Feature set name.
    set: String,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

pub(crate) fn run(args: OnlineArgs) -> CliResult {
    match args.command {
        OnlineCommand::Rebuild(args) => rebuild(args),
    }
}

fn rebuild(args: RebuildArgs) -> CliResult {
    let runtime = crate::common::runtime()?;
    runtime.block_on(async {
        let client = args.server.connect().await?;
        let bar = ProgressBar::no_length().with_style(style(
            "{spinner} [{elapsed_precise}] [{wide_bar}] {human_pos}/{human_len} entities (ETA {eta})",
        ));
        if !args.quiet && std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(200));
        } else {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let done = client
            .rebuild_online(&args.set, |report| {
                bar.set_length(report.entities.max(report.rows));
                bar.set_position(report.rows);
            })
            .await;
        bar.finish_and_clear();
        let done = done.map_err(|e| args.server.describe(e))?;
        println!(
            "rebuilt the online values of {}: {} written",
            args.set,
            rows(done.rows)
        );
        Ok(())
    })
}
