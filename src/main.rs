//! The `mailroom` command: runs the controller, or prints the CRDs.

use clap::{Parser, Subcommand};

/// A Kubernetes operator that sends email.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML (what `crds/` holds).
    Crds,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => match mailroom::api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                std::process::ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: rendering the CRDs: {err}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
