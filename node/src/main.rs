//! The `shoal` command.

use std::process::ExitCode;

use clap::Parser;
use shoal::cli::{Cli, Command};
use shoal::logging::{self, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Node(args) => logging::init(args.log_format, "info"),
        _ => logging::init(LogFormat::Text, "warn"),
    }
    match shoal::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<shoal::cli::Exit>() {
                Some(exit) => ExitCode::from(exit.code),
                None => ExitCode::FAILURE,
            }
        }
    }
}
