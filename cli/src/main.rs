//! `verbatim`: the operator's command line (demo, policy check, simulate, inspect, archive side).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod policy_cmd;

#[derive(Parser)]
#[command(name = "verbatim", version, about = "Verbatim compliance capture agent: operator tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate and describe managed policies (MDM AppConfig).
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check a policy file (XML property list or JSON dictionary) as an MDM would push it.
    /// Exit 0 with a one-line summary when valid; exit 1 with one line per problem.
    Check { file: PathBuf },
    /// Print a complete, valid, commented sample policy as an XML property list.
    Template,
    /// Print the markdown reference of every policy key (docs/policy-reference.md).
    Reference,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Policy(PolicyCommand::Check { file }) => policy_cmd::check(&file),
        Command::Policy(PolicyCommand::Template) => policy_cmd::template(),
        Command::Policy(PolicyCommand::Reference) => policy_cmd::reference(),
    }
}
