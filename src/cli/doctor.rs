//! `promptad doctor`: is this machine able to run promptad?

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::values::ReportFormat;
use crate::runtime;

/// Check that this machine can run promptad.
///
/// Checks the libtorch this binary loads against the one it was built for, lists CUDA devices,
/// and runs a tiny computation with a known result on the CPU and on every GPU.
///
/// Exits 0 when everything passes, 1 otherwise, printing what to fix.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// table (for reading) or json (the report as one JSON object).
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// Same as --format json (kept for one release).
    #[arg(long, hide = true)]
    pub json: bool,
}

pub fn run(args: DoctorArgs) -> Result<ExitCode> {
    let version = runtime::check_libtorch();
    let info = runtime::torch_info();
    let mut devices = vec![tch::Device::Cpu];
    devices.extend((0..info.cuda_devices as usize).map(tch::Device::Cuda));
    // A mismatched libtorch may crash on the first real op, so the self-test runs only after the
    // version check passed.
    let self_tests: Vec<(String, Result<(), String>)> = if version.is_ok() {
        devices.iter().map(|&d| (format!("{d:?}"), runtime::self_test(d).map_err(|e| e.to_string()))).collect()
    } else {
        Vec::new()
    };
    let ok = version.is_ok() && self_tests.iter().all(|(_, r)| r.is_ok());
    if args.format.or_json(args.json) == ReportFormat::Json {
        let report = serde_json::json!({
            "ok": ok,
            "promptad": env!("CARGO_PKG_VERSION"),
            "torch": info,
            "version_check": version.as_ref().err().map(|e| e.to_string()),
            "self_tests": self_tests.iter().map(|(d, r)| serde_json::json!({"device": d, "ok": r.is_ok(), "error": r.as_ref().err()})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("promptad {}", env!("CARGO_PKG_VERSION"));
        println!("libtorch required:   {}", info.required);
        println!(
            "libtorch built with: {} ({})",
            info.built_against.unwrap_or("unknown"),
            info.built_lib_dir.unwrap_or("unknown")
        );
        println!(
            "libtorch loaded:     {} ({})",
            info.loaded_version.as_deref().unwrap_or("unknown"),
            info.loaded_lib
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "not found in /proc/self/maps".into())
        );
        println!("cpu threads:         {}", info.threads);
        println!(
            "cuda:                {} ({} device(s), cudnn {})",
            info.cuda_available, info.cuda_devices, info.cudnn_available
        );
        match &version {
            Ok(_) => println!("version check:       ok"),
            Err(e) => println!("version check:       FAILED: {e}"),
        }
        for (device, result) in &self_tests {
            match result {
                Ok(()) => println!("self-test {device}:  ok"),
                Err(e) => println!("self-test {device}:  FAILED: {e}"),
            }
        }
        println!("{}", if ok { "ok" } else { "NOT OK: fix the failures above before running promptad here" });
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
