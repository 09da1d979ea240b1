//! The `promptad` command line: one file per subcommand, each a clap `Args` (its doc comments
//! are `--help`) and a `run`. The library does the work; these only translate flags.

mod backbone;
mod demo;
mod doctor;
mod embed;
mod eval;
mod plan;
mod run;
mod score;
mod shard;
mod sql;
mod synth;
mod tokenize;
mod train;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// PromptAD few-shot anomaly detection (CVPR 2024) on OpenCLIP, as a batch pipeline.
///
/// Logs go to stderr: human-readable on a terminal, JSON lines otherwise (set RUST_LOG to
/// change the level, e.g. RUST_LOG=debug).
#[derive(Debug, Parser)]
#[command(name = "promptad", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Demo(demo::DemoArgs),
    Doctor(doctor::DoctorArgs),
    Embed(embed::EmbedArgs),
    Eval(eval::EvalArgs),
    Plan(plan::PlanArgs),
    Run(run::RunArgs),
    Score(score::ScoreArgs),
    Shard(shard::ShardArgs),
    Sql(sql::SqlArgs),
    Synth(synth::SynthArgs),
    Tokenize(tokenize::TokenizeArgs),
    Train(train::TrainArgs),
}

/// Parses nothing; runs an already-parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    init_logging();
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Run(args) => run::run(args),
        Command::Score(args) => score::run(args),
        Command::Shard(args) => shard::run(args),
        Command::Sql(args) => sql::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Train(args) => train::run(args),
    }
}

fn init_logging() {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second call (tests run several commands in one process) keeps the first subscriber.
    let _ = if std::io::stderr().is_terminal() { builder.try_init() } else { builder.json().try_init() };
}

/// A progress bar on a terminal; hidden otherwise (structured logs carry progress there).
pub(crate) fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}
