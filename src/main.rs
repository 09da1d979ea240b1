use std::process::ExitCode;

use clap::Parser;
use promptad::cli::{self, Cli};
use promptad::exit;
use promptad::stop::StopToken;

fn main() -> ExitCode {
    promptad::runtime::keep_freed_memory();
    let cli = Cli::parse();
    let stop = StopToken::new();
    if cli.command.is_stoppable() {
        if let Err(error) = stop_on_sigterm(stop.clone()) {
            eprintln!("error: cannot handle SIGTERM: {error}");
            return ExitCode::from(exit::FAILED);
        }
    }
    match cli::run(cli, &stop) {
        Ok(code) => code,
        Err(error) => cli::report_failure(&error),
    }
}

/// The first SIGTERM asks the work to stop at its next safe point (nothing partial becomes
/// visible); a second one ends the process at once.
fn stop_on_sigterm(stop: StopToken) -> std::io::Result<()> {
    let (ready, installed) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("promptad-sigterm".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
            Ok(runtime) => runtime,
            Err(e) => return drop(ready.send(Err(e))),
        };
        runtime.block_on(async move {
            let mut terms = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => return drop(ready.send(Err(e))),
            };
            let _ = ready.send(Ok(()));
            while terms.recv().await.is_some() {
                if stop.stop() {
                    eprintln!("second SIGTERM: exiting now");
                    std::process::exit(i32::from(exit::STOPPED));
                }
                tracing::warn!("SIGTERM: stopping at the next safe point (nothing partial will be visible)");
            }
        });
    })?;
    installed.recv().unwrap_or_else(|_| Err(std::io::Error::other("the SIGTERM handler thread died")))
}
