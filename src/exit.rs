//! The one exit-code table of `promptad`. Every command, in flag mode and in worker mode
//! (`--spec SPEC --index N`), ends with one of these codes, chosen from the *type* of the error
//! ([`code_of`]); `--help`, `jobs/README.md` and the Jobs' `podFailurePolicy` are derived from
//! [`TABLE`] (tests hold the README and the manifests to it).
//!
//! The permanent codes follow BSD `sysexits.h` (64 usage, 65 data, 66 no input, 75 temporary).

use std::error::Error;

/// What an orchestrator should do after an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Success: nothing to retry.
    Done,
    /// Retrying the same work cannot help until someone fixes something (`FailIndex`).
    Never,
    /// Retry, counting the failure against the retry budget (`backoffLimitPerIndex`).
    Counted,
    /// Retry without counting: the process was stopped, not broken (`Ignore`).
    NotCounted,
}

/// One row of the exit-code table.
#[derive(Debug, Clone, Copy)]
pub struct ExitRow {
    pub code: u8,
    pub meaning: &'static str,
    /// Failures that end with this code, for people reading the table.
    pub examples: &'static str,
    pub retry: Retry,
}

pub const OK: u8 = 0;
/// An unexpected failure (a bug, the disk, the node): retried, in case it was the node.
pub const FAILED: u8 = 1;
/// The command line does not parse (clap's own code).
pub const USAGE: u8 = 2;
/// The command line or run spec asks for something impossible.
pub const BAD_CONFIG: u8 = 64;
/// The input is there but unusable.
pub const BAD_INPUT: u8 = 65;
/// The input is missing or not accessible.
pub const MISSING_INPUT: u8 = 66;
/// A store could not be reached: retryable.
pub const TEMPORARY: u8 = 75;
/// Stopped by SIGTERM before finishing (128 + 15).
pub const STOPPED: u8 = 143;

/// Every code `promptad` exits with, in order.
pub const TABLE: [ExitRow; 8] = [
    ExitRow {
        code: OK,
        meaning: "done",
        examples: "the work is done, or was already done (model exists, units committed)",
        retry: Retry::Done,
    },
    ExitRow {
        code: FAILED,
        meaning: "unexpected failure",
        examples: "a bug, a full disk, a failing node",
        retry: Retry::Counted,
    },
    ExitRow {
        code: USAGE,
        meaning: "bad command line",
        examples: "an unknown flag, a missing argument",
        retry: Retry::Never,
    },
    ExitRow {
        code: BAD_CONFIG,
        meaning: "impossible request",
        examples:
            "an invalid run spec, an index the plan does not have, --index not below --shard-count, a bad run id, \
                   an unknown device, a category without prompts, a model config that does not fit",
        retry: Retry::Never,
    },
    ExitRow {
        code: BAD_INPUT,
        meaning: "bad input data",
        examples: "undecodable images (recorded in the scores table with --skip-bad), a defect image without a mask, \
                   a truncated shard, too few normal images for k, a damaged or mismatched checkpoint or artifact",
        retry: Retry::Never,
    },
    ExitRow {
        code: MISSING_INPUT,
        meaning: "input missing or not accessible",
        examples: "dataset, category, weights, the model to score with (train it first), bucket, credentials",
        retry: Retry::Never,
    },
    ExitRow {
        code: TEMPORARY,
        meaning: "store unreachable",
        examples: "connection refused, DNS, timeouts",
        retry: Retry::Counted,
    },
    ExitRow {
        code: STOPPED,
        meaning: "stopped by SIGTERM",
        examples: "preemption, node drain: scoring stops between batches and abandons the unit in progress, training \
                   abandons the model in progress; nothing partial is ever visible",
        retry: Retry::NotCounted,
    },
];

/// The row of `code`, if it is one of ours.
pub fn row(code: u8) -> Option<&'static ExitRow> {
    TABLE.iter().find(|r| r.code == code)
}

/// The codes with a given retry policy, in table order (what `podFailurePolicy` lists).
pub fn codes(retry: Retry) -> Vec<u8> {
    TABLE.iter().filter(|r| r.retry == retry).map(|r| r.code).collect()
}

/// What an exit code means, for logs and `promptad run`.
pub fn describe(code: u8) -> String {
    match row(code) {
        Some(r) => format!("{}: {}", policy(r.retry), r.meaning),
        None if code == 137 => "retried: killed (SIGKILL, e.g. out of memory)".into(),
        None => "retried: unexpected failure".into(),
    }
}

fn policy(retry: Retry) -> &'static str {
    match retry {
        Retry::Done => "done",
        Retry::Never => "permanent",
        Retry::Counted => "retryable",
        Retry::NotCounted => "stopped, retried without counting",
    }
}

fn kubernetes(retry: Retry) -> &'static str {
    match retry {
        Retry::Done => "",
        Retry::Never => "`FailIndex`",
        Retry::Counted => "retried, counted (`backoffLimitPerIndex`)",
        Retry::NotCounted => "`Ignore`: retried, not counted",
    }
}

/// The table as `--help` shows it.
pub fn help_text() -> String {
    let mut text = String::from("Exit codes (the same in flag mode and worker mode):\n");
    for r in &TABLE {
        text.push_str(&format!("  {:>3}  {} ({}): {}\n", r.code, r.meaning, policy(r.retry), r.examples));
    }
    text.push_str("  137  killed (SIGKILL, e.g. out of memory; not promptad's own): retryable");
    text
}

/// The table as `jobs/README.md` shows it (a test keeps the README equal to this).
pub fn markdown_table() -> String {
    let mut text = String::from("| code | meaning | examples | on Kubernetes |\n|---|---|---|---|\n");
    for r in &TABLE {
        text.push_str(&format!("| {} | {} | {} | {} |\n", r.code, r.meaning, r.examples, kubernetes(r.retry)));
    }
    text.push_str("| 137 | killed (out of memory, SIGKILL; not promptad's own) | | retried, counted |\n");
    text
}

/// The exit code of an error chain (an error and its `source()`s, outermost first): the first
/// error whose type tells, else [`FAILED`].
pub fn code_of<'a>(chain: impl IntoIterator<Item = &'a (dyn Error + 'static)>) -> u8 {
    chain.into_iter().find_map(classify).unwrap_or(FAILED)
}

/// [`code_of`] the chain that starts at `error`.
pub fn code_of_error(error: &(dyn Error + 'static)) -> u8 {
    let mut chain = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        chain.push(e);
        next = e.source();
    }
    code_of(chain)
}

/// The code one error's type gives, or `None` when it does not tell (then its source may).
/// Wrapping variants that are `#[error(transparent)]` hide the wrapped error from the source
/// chain, so they are followed here.
fn classify(error: &(dyn Error + 'static)) -> Option<u8> {
    macro_rules! first_of {
        ($($ty:ty => $f:ident),* $(,)?) => {
            $(if let Some(e) = error.downcast_ref::<$ty>() { return $f(e); })*
        };
    }
    first_of!(
        crate::stop::Stopped => stopped,
        crate::worker::WorkerError => worker,
        crate::spec::SpecError => spec,
        crate::store::StoreError => store,
        crate::data::DataError => data,
        crate::data::synth::SynthError => synth,
        crate::run::RunError => run,
        crate::pipeline::score::ScoreError => score,
        crate::pipeline::train::TrainError => train,
        crate::pipeline::demo::DemoError => demo,
        crate::pipeline::bench::BenchError => bench,
        crate::pipeline::calibrate::CalibrateError => calibrate,
        crate::report::ReportError => report,
        crate::prompt::PromptError => prompt,
        crate::clip::ClipError => clip,
        crate::clip::CheckpointError => checkpoint,
        crate::artifact::ArtifactError => artifact,
        crate::runtime::RuntimeError => runtime,
        crate::sink::SinkError => sink,
        crate::sql::SqlError => sql,
    );
    None
}

fn calibrate(e: &crate::pipeline::calibrate::CalibrateError) -> Option<u8> {
    use crate::pipeline::calibrate::CalibrateError as E;
    match e {
        E::Artifact(e) => artifact(e),
        E::Sql(e) => sql(e),
        E::Metric(_) | E::OtherModel { .. } | E::NoLabels { .. } => Some(BAD_INPUT),
        E::NoImages { .. } => Some(MISSING_INPUT),
    }
}

fn report(e: &crate::report::ReportError) -> Option<u8> {
    use crate::report::ReportError as E;
    match e {
        E::Sql(e) => sql(e),
        E::Run(e) => run(e),
        E::Io { .. } | E::Metric(_) => None,
    }
}

fn stopped(_: &crate::stop::Stopped) -> Option<u8> {
    Some(STOPPED)
}

fn worker(e: &crate::worker::WorkerError) -> Option<u8> {
    use crate::worker::WorkerError as E;
    match e {
        E::MissingModel { .. } | E::MissingCategory { .. } => Some(MISSING_INPUT),
        E::ForeignArtifact { .. } => Some(BAD_CONFIG),
        E::Spec(e) => spec(e),
        E::Store(e) => store(e),
        E::Data(e) => data(e),
        E::Artifact(e) => artifact(e),
        E::Runtime(e) => runtime(e),
        E::Train(e) => train(e),
        E::Score(e) => score(e),
    }
}

fn spec(_: &crate::spec::SpecError) -> Option<u8> {
    Some(BAD_CONFIG)
}

fn store(e: &crate::store::StoreError) -> Option<u8> {
    use crate::store::StoreError as E;
    match e {
        E::BadUrl { .. } => Some(BAD_CONFIG),
        E::NotFound { .. } | E::NoBucket { .. } | E::Denied { .. } => Some(MISSING_INPUT),
        E::Unreachable { .. } => Some(TEMPORARY),
        E::Other { .. } | E::Local { .. } => None,
    }
}

fn data(e: &crate::data::DataError) -> Option<u8> {
    use crate::data::DataError as E;
    match e {
        E::Store(e) => store(e),
        E::Sink(e) => sink(e),
        E::UnknownCategory { .. }
        | E::NoDataset { .. }
        | E::NoTrainImages { .. }
        | E::ShardMissing { .. }
        | E::NoImages { .. }
        | E::NoCategories { .. } => Some(MISSING_INPUT),
        E::NotEnoughShots { .. }
        | E::UnknownShot { .. }
        | E::MissingMask { .. }
        | E::Image { .. }
        | E::Vanished { .. }
        | E::ShardUnreadable { .. }
        | E::ShardTruncated { .. }
        | E::ShardColumn { .. }
        | E::BadShardList { .. }
        | E::BadSynthSummary { .. }
        | E::ShardListVersion { .. } => Some(BAD_INPUT),
        E::NoRowsPerShard | E::AlreadyPacked { .. } => Some(BAD_CONFIG),
        E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Some(MISSING_INPUT),
        E::Io { .. } | E::ShardBatch(_) => None,
    }
}

fn synth(e: &crate::data::synth::SynthError) -> Option<u8> {
    use crate::data::synth::SynthError as E;
    match e {
        E::UnknownCategory { .. } | E::UnknownDefect { .. } | E::InvalidConfig(_) | E::NotEmpty(_) => Some(BAD_CONFIG),
        _ => None,
    }
}

fn run(e: &crate::run::RunError) -> Option<u8> {
    use crate::run::RunError as E;
    match e {
        E::Store(e) => store(e),
        E::BadRunId { .. } | E::PlanConflict { .. } => Some(BAD_CONFIG),
        E::BadRecord { .. } => Some(BAD_INPUT),
    }
}

fn score(e: &crate::pipeline::score::ScoreError) -> Option<u8> {
    use crate::pipeline::score::ScoreError as E;
    match e {
        E::BadWorker { .. } => Some(BAD_CONFIG),
        E::Run(e) => run(e),
        E::Store(e) => store(e),
        E::Data(e) => data(e),
        E::Sink(e) => sink(e),
        E::Model(crate::detect::DetectError::Clip(e)) => clip(e),
        E::Model(crate::detect::DetectError::TapMismatch { .. }) => Some(BAD_CONFIG),
        E::BadImage { .. } | E::ImagesSkipped { .. } => Some(BAD_INPUT),
        E::Stopped(_) => Some(STOPPED),
        E::InUnit { source, .. } => score(source),
        E::Metric(_) | E::Torch(_) | E::ReaderPanicked | E::WriterPanicked => None,
    }
}

fn train(e: &crate::pipeline::train::TrainError) -> Option<u8> {
    use crate::pipeline::train::TrainError as E;
    match e {
        E::Data(e) => data(e),
        E::Prompt(e) => prompt(e),
        E::Clip(e) => clip(e),
        E::Artifact(e) => artifact(e),
        E::InitPrompts(crate::pipeline::train::InitPromptsError::Missing { .. }) => Some(MISSING_INPUT),
        E::InitPrompts(_) => Some(BAD_INPUT),
        E::Torch(_) => None,
    }
}

fn demo(e: &crate::pipeline::demo::DemoError) -> Option<u8> {
    use crate::pipeline::demo::DemoError as E;
    match e {
        E::Synth(e) => synth(e),
        E::Data(e) => data(e),
        E::Store(e) => store(e),
        E::Train(e) => train(e),
        E::Artifact(e) => artifact(e),
        E::Score(e) => score(e),
        E::Calibrate(e) => calibrate(e),
        E::Report(e) => report(e),
        E::Metric { .. } => None,
    }
}

fn bench(e: &crate::pipeline::bench::BenchError) -> Option<u8> {
    use crate::pipeline::bench::BenchError as E;
    match e {
        E::Synth(e) => synth(e),
        E::Data(e) => data(e),
        E::Store(e) => store(e),
        E::Artifact(e) => artifact(e),
        E::Train(e) => train(e),
        E::Score(e) => score(e),
        E::Runtime(e) => runtime(e),
        E::Empty(_) | E::TooManyImages { .. } => Some(BAD_CONFIG),
        E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Some(MISSING_INPUT),
        E::Io { .. } => None,
    }
}

fn prompt(e: &crate::prompt::PromptError) -> Option<u8> {
    use crate::prompt::PromptError as E;
    match e {
        E::UnknownCategory { .. } | E::BadState { .. } | E::Config(_) => Some(BAD_CONFIG),
        E::Clip(e) => clip(e),
        E::Stopped(_) => Some(STOPPED),
        E::Diverged { .. } => None,
    }
}

fn clip(e: &crate::clip::ClipError) -> Option<u8> {
    use crate::clip::ClipError as E;
    match e {
        E::Checkpoint(e) => checkpoint(e),
        E::Image { .. } => Some(BAD_INPUT),
        E::Config { .. } | E::Option { .. } => Some(BAD_CONFIG),
        _ => None,
    }
}

fn checkpoint(_: &crate::clip::CheckpointError) -> Option<u8> {
    Some(BAD_INPUT)
}

fn artifact(e: &crate::artifact::ArtifactError) -> Option<u8> {
    use crate::artifact::ArtifactError as E;
    match e {
        E::Store(e) => store(e),
        E::Clip(e) => clip(e),
        E::Sink(e) => sink(e),
        E::Incomplete { .. } => Some(MISSING_INPUT),
        E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Some(MISSING_INPUT),
        E::BadManifest { .. }
        | E::FormatVersion { .. }
        | E::Damaged { .. }
        | E::MissingTensor { .. }
        | E::TensorType { .. }
        | E::Safetensors { .. }
        | E::WeightsMismatch { .. }
        | E::BadCalibration { .. }
        | E::StaleCalibration { .. } => Some(BAD_INPUT),
        E::Exists { .. } | E::CalibrationExists { .. } => Some(BAD_CONFIG),
        E::Io { .. } | E::Torch(_) => None,
    }
}

fn runtime(e: &crate::runtime::RuntimeError) -> Option<u8> {
    use crate::runtime::RuntimeError as E;
    match e {
        E::UnknownDevice(_) => Some(BAD_CONFIG),
        // Another node may have the device, or a working libtorch: retried.
        E::DeviceUnavailable { .. } | E::VersionMismatch { .. } | E::SelfTest { .. } | E::Memory(_) => None,
    }
}

fn sink(e: &crate::sink::SinkError) -> Option<u8> {
    match e {
        crate::sink::SinkError::Store(e) => store(e),
        _ => None,
    }
}

fn sql(e: &crate::sql::SqlError) -> Option<u8> {
    use crate::sql::SqlError as E;
    match e {
        E::Run(e) => run(e),
        E::Store(e) => store(e),
        E::NoOutput { .. } | E::NoRun { .. } | E::UnknownRun { .. } => Some(MISSING_INPUT),
        E::AmbiguousRun { .. } | E::Query { .. } | E::SeveralRuns { .. } => Some(BAD_CONFIG),
        E::Column { .. } => Some(BAD_INPUT),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_policies_partition_the_failures() {
        let mut seen: Vec<u8> = TABLE.iter().map(|r| r.code).collect();
        seen.dedup();
        assert_eq!(seen.len(), TABLE.len());
        assert_eq!(codes(Retry::Never), [USAGE, BAD_CONFIG, BAD_INPUT, MISSING_INPUT]);
        assert_eq!(codes(Retry::NotCounted), [STOPPED]);
        assert_eq!(codes(Retry::Counted), [FAILED, TEMPORARY]);
        assert!(describe(BAD_INPUT).starts_with("permanent"));
        assert!(describe(TEMPORARY).starts_with("retryable"));
    }

    #[test]
    fn help_and_markdown_name_every_code() {
        for r in &TABLE {
            assert!(help_text().contains(&format!("{:>3}  {}", r.code, r.meaning)));
            assert!(markdown_table().contains(&format!("| {} | {} |", r.code, r.meaning)));
        }
    }
}
