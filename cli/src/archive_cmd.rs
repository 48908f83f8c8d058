//! Archive-side commands: keygen, receive (and add-device), verify, export.
//! Thin: all logic is in the `verbatim-receiver` crate.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct KeygenArgs {}
#[derive(clap::Args)]
pub struct ReceiveArgs {}
#[derive(clap::Args)]
pub struct VerifyArgs {}
#[derive(clap::Args)]
pub struct ExportArgs {}

pub fn keygen(_: KeygenArgs) -> ExitCode {
    eprintln!("not yet available");
    ExitCode::from(2)
}
pub fn receive(_: ReceiveArgs) -> ExitCode {
    eprintln!("not yet available");
    ExitCode::from(2)
}
pub fn verify(_: VerifyArgs) -> ExitCode {
    eprintln!("not yet available");
    ExitCode::from(2)
}
pub fn export(_: ExportArgs) -> ExitCode {
    eprintln!("not yet available");
    ExitCode::from(2)
}
