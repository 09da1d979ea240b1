use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match promptad::cli::run(promptad::cli::Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
