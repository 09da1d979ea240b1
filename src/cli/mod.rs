//! The `promptad` command line: one file per subcommand, each a clap `Args` (its doc comments
//! are `--help`) and a `run`. The library does the work; these only translate flags.

mod backbone;
mod bench;
mod calibrate;
mod demo;
mod doctor;
mod embed;
mod eval;
mod plan;
mod report;
mod run;
mod score;
mod shard;
mod sql;
mod synth;
mod tokenize;
mod train;
mod values;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit;
use crate::stop::StopToken;

/// PromptAD few-shot anomaly detection (CVPR 2024) on OpenCLIP, as a batch pipeline.
///
/// Logs go to stderr: human-readable on a terminal, JSON lines otherwise (set RUST_LOG to
/// change the level, e.g. RUST_LOG=debug).
#[derive(Debug, Parser)]
#[command(name = "promptad", version, about, long_about, after_long_help = exit::help_text())]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Bench(bench::BenchArgs),
    Calibrate(calibrate::CalibrateArgs),
    Demo(demo::DemoArgs),
    Doctor(doctor::DoctorArgs),
    Embed(embed::EmbedArgs),
    Eval(eval::EvalArgs),
    Plan(plan::PlanArgs),
    Report(report::ReportArgs),
    Run(run::RunArgs),
    Score(score::ScoreArgs),
    Shard(shard::ShardArgs),
    Sql(sql::SqlArgs),
    Synth(synth::SynthArgs),
    Tokenize(tokenize::TokenizeArgs),
    Train(train::TrainArgs),
}

impl Command {
    /// Whether the command stops cleanly at a safe point when asked (SIGTERM); the others are
    /// short, or only read.
    pub fn is_stoppable(&self) -> bool {
        matches!(self, Command::Bench(_) | Command::Demo(_) | Command::Score(_) | Command::Train(_))
    }
}

/// Parses nothing; runs an already-parsed command line. `stop` is what SIGTERM sets.
pub fn run(cli: Cli, stop: &StopToken) -> anyhow::Result<ExitCode> {
    init_logging();
    match cli.command {
        Command::Bench(args) => bench::run(args, stop),
        Command::Calibrate(args) => calibrate::run(args),
        Command::Demo(args) => demo::run(args, stop),
        Command::Doctor(args) => doctor::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Report(args) => report::run(args),
        Command::Run(args) => run::run(args),
        Command::Score(args) => score::run(args, stop),
        Command::Shard(args) => shard::run(args),
        Command::Sql(args) => sql::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Train(args) => train::run(args, stop),
    }
}

/// The exit code of a failed command: [`exit::code_of`] over the error chain, the same in flag
/// mode and worker mode.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    exit::code_of(error.chain())
}

/// What to do next, for failures the library describes without knowing the flags.
pub fn hint(error: &anyhow::Error) -> Option<String> {
    error.chain().find_map(hint_for)
}

fn hint_for(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use crate::artifact::ArtifactError;
    use crate::data::DataError;
    use crate::pipeline::score::ScoreError;
    use crate::run::RunError;
    const NEW_RUN: &str = "choose another --run (e.g. the date), or pass --overwrite to replace the run";
    let run_hint = |e: &RunError| match e {
        RunError::PlanConflict { .. } => Some(NEW_RUN.to_string()),
        RunError::BadRunId { .. } => Some("pass a --run made of letters, digits, '-', '_' and '.'".into()),
        _ => None,
    };
    if let Some(e) = e.downcast_ref::<ScoreError>() {
        return match e {
            ScoreError::ImagesSkipped { .. } => Some("after fixing the images, score again with --overwrite".into()),
            ScoreError::BadWorker { index, count } => {
                Some(format!("--index {index} must be below --shard-count {count}"))
            }
            ScoreError::Run(e) => run_hint(e),
            _ => None,
        };
    }
    if let Some(e) = e.downcast_ref::<RunError>() {
        return run_hint(e);
    }
    if let Some(e) = e.downcast_ref::<ArtifactError>() {
        return match e {
            ArtifactError::Exists { .. } => Some("pass --overwrite to replace the model".into()),
            ArtifactError::WeightsMismatch { .. } => {
                Some("pass the checkpoint the model was trained with (--weights)".into())
            }
            _ => None,
        };
    }
    match e.downcast_ref::<DataError>()? {
        DataError::AlreadyPacked { .. } => Some("pass --overwrite to pack again".into()),
        DataError::NoCategories { .. } => Some("for a folder of unlabelled images pass --plain-category NAME".into()),
        DataError::NoRowsPerShard => Some("pass --rows-per-shard 1 or more".into()),
        _ => None,
    }
}

/// Prints a failed command's error once, with its whole chain, what to do next and what its
/// exit code means; returns that code.
pub fn report_failure(error: &anyhow::Error) -> ExitCode {
    let code = exit_code(error);
    tracing::error!(code, meaning = %exit::describe(code), error = format!("{error:#}"), "failed");
    eprintln!("error: {error:#}");
    if let Some(hint) = hint(error) {
        eprintln!("hint: {hint}");
    }
    eprintln!("exit code {code} ({})", exit::describe(code));
    ExitCode::from(code)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DataError;
    use crate::spec::SpecError;
    use crate::stop::Stopped;
    use crate::store::StoreError;
    use anyhow::Context;

    #[test]
    fn errors_map_to_their_exit_codes_through_context() {
        let cases: Vec<(anyhow::Error, u8)> = vec![
            (anyhow::Error::from(Stopped).context("scoring unit test-00001 of bottle"), exit::STOPPED),
            (StoreError::Unreachable { url: "s3://b/x".into(), detail: "connect".into() }.into(), exit::TEMPORARY),
            (
                anyhow::Error::from(StoreError::NotFound { url: "s3://b/x".into() }).context("reading the dataset"),
                exit::MISSING_INPUT,
            ),
            (
                DataError::Store(StoreError::Unreachable { url: "s3://b/x".into(), detail: "timed out".into() }).into(),
                exit::TEMPORARY,
            ),
            (DataError::NotEnoughShots { category: "bottle".into(), k: 8, available: 4 }.into(), exit::BAD_INPUT),
            (
                SpecError::IndexOutOfRange { path: "x.toml".into(), job: "training", index: 9, completions: 3 }.into(),
                exit::BAD_CONFIG,
            ),
            (
                crate::worker::WorkerError::MissingModel { url: "s3://m".into(), train_index: 0 }.into(),
                exit::MISSING_INPUT,
            ),
            (crate::pipeline::score::ScoreError::ImagesSkipped { count: 2 }.into(), exit::BAD_INPUT),
            (
                crate::pipeline::score::ScoreError::InUnit {
                    unit: "test-00000".into(),
                    category: "bottle".into(),
                    source: Box::new(crate::pipeline::score::ScoreError::Data(DataError::ShardTruncated {
                        url: "s3://b/part-00000.parquet".into(),
                        row: 16,
                        source: parquet::errors::ParquetError::EOF("eof".into()),
                    })),
                }
                .into(),
                exit::BAD_INPUT,
            ),
            (anyhow::anyhow!("something else"), exit::FAILED),
            (Err::<(), _>(std::io::Error::other("disk")).context("writing").unwrap_err(), exit::FAILED),
        ];
        for (error, code) in cases {
            assert_eq!(exit_code(&error), code, "{error:#}");
        }
    }

    #[test]
    fn permanent_and_retried_codes_do_not_overlap() {
        use exit::Retry;
        for code in exit::codes(Retry::Never) {
            assert!(
                !exit::codes(Retry::NotCounted).contains(&code)
                    && code != exit::OK
                    && code != exit::FAILED
                    && code != exit::TEMPORARY
            );
            assert!(exit::describe(code).starts_with("permanent"));
        }
        assert!(exit::describe(exit::TEMPORARY).starts_with("retryable"));
    }
}
