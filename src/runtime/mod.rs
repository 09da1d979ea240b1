//! libtorch at run time: which one is loaded, whether it is the one this binary was built for,
//! and whether it computes correctly. A libtorch of another version does not fail cleanly: it
//! returns wrong results or crashes later (`../shared/reference/ecosystem.md` §6), so every
//! command that uses torch calls [`check_libtorch`] first.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

#[path = "../torch_version.rs"]
mod torch_version;

pub mod memory;
pub mod thread_cpu;

/// The libtorch release tch/torch-sys 0.24.0 binds (`torch-sys` `build.rs` `TORCH_VERSION`).
pub const REQUIRED_TORCH: &str = "2.11.0";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "libtorch version mismatch: this binary was built for libtorch {required} but loaded {loaded} from {path}; \
         install torch=={required} there, or point LD_LIBRARY_PATH at a torch {required} lib folder"
    )]
    VersionMismatch { required: String, loaded: String, path: PathBuf },
    #[error("libtorch self-test failed on {device}: {check} gave {got}, expected {expected}; the loaded libtorch ({path}) is broken or of another version")]
    SelfTest { device: String, check: &'static str, got: String, expected: String, path: String },
    #[error("unknown device {0:?}: use cpu, cuda, cuda:N or auto")]
    UnknownDevice(String),
    #[error("device {requested} requested but {available}")]
    DeviceUnavailable { requested: String, available: String },
    /// `--batch-size auto` could not read the device's free memory.
    #[error("{0}; pass a number of images to --batch-size instead of auto")]
    Memory(#[from] memory::MemoryError),
}

/// What `promptad doctor` reports about libtorch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TorchInfo {
    pub required: &'static str,
    pub built_against: Option<&'static str>,
    pub built_lib_dir: Option<&'static str>,
    pub loaded_lib: Option<PathBuf>,
    pub loaded_version: Option<String>,
    pub cuda_available: bool,
    pub cuda_devices: i64,
    pub cudnn_available: bool,
    pub threads: i32,
}

/// The folder of the `libtorch_cpu.so` this process mapped, from `/proc/self/maps`.
fn loaded_lib_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with("/libtorch_cpu.so"))
        .and_then(|path| Path::new(path).parent().map(Path::to_path_buf))
}

pub fn torch_info() -> TorchInfo {
    // Touch libtorch so that it is mapped even if nothing else ran yet.
    let cuda_devices = tch::Cuda::device_count();
    let loaded_lib = loaded_lib_dir();
    TorchInfo {
        required: REQUIRED_TORCH,
        built_against: option_env!("PROMPTAD_BUILT_TORCH_VERSION"),
        built_lib_dir: option_env!("PROMPTAD_BUILT_TORCH_LIB"),
        loaded_version: loaded_lib.as_deref().and_then(Path::parent).and_then(torch_version::read),
        loaded_lib,
        cuda_available: tch::Cuda::is_available(),
        cuda_devices,
        cudnn_available: tch::Cuda::cudnn_is_available(),
        threads: tch::get_num_threads(),
    }
}

/// Refuses a loaded libtorch whose release differs from [`REQUIRED_TORCH`]. An installation whose
/// version cannot be read (no `version.py` / `build-version`) is accepted and left to the self-test.
pub fn check_libtorch() -> Result<TorchInfo, RuntimeError> {
    let info = torch_info();
    verify_version(&info)?;
    Ok(info)
}

fn verify_version(info: &TorchInfo) -> Result<(), RuntimeError> {
    if let (Some(loaded), Some(path)) = (&info.loaded_version, &info.loaded_lib) {
        let release = loaded.split('+').next().unwrap_or(loaded);
        if release != info.required {
            return Err(RuntimeError::VersionMismatch {
                required: info.required.into(),
                loaded: loaded.clone(),
                path: path.clone(),
            });
        }
    }
    Ok(())
}

/// Tiny computations with known results, the symptoms a mismatched libtorch shows first
/// (a conv2d of the wrong shape, a boolean count of 0).
pub fn self_test(device: Device) -> Result<(), RuntimeError> {
    let path = loaded_lib_dir().map(|p| p.display().to_string()).unwrap_or_else(|| "unknown".into());
    let fail = |check: &'static str, got: String, expected: &str| RuntimeError::SelfTest {
        device: format!("{device:?}"),
        check,
        got,
        expected: expected.into(),
        path: path.clone(),
    };
    let opts = (Kind::Float, device);
    let conv =
        Tensor::ones([1, 1, 3, 3], opts).conv2d(&Tensor::ones([1, 1, 2, 2], opts), None::<&Tensor>, [1], [0], [1], 1);
    let conv_values: Vec<f32> = Vec::try_from(conv.flatten(0, -1).to_device(Device::Cpu)).unwrap_or_default();
    if conv.size() != [1, 1, 2, 2] || conv_values != [4.0; 4] {
        return Err(fail(
            "conv2d(ones 3×3, ones 2×2)",
            format!("{:?} {conv_values:?}", conv.size()),
            "[1, 1, 2, 2] of 4.0",
        ));
    }
    let a = Tensor::from_slice(&[1f32, 2., 3., 4.]).view([2, 2]).to_device(device);
    let b = Tensor::from_slice(&[5f32, 6.]).view([2, 1]).to_device(device);
    let product: Vec<f32> = Vec::try_from(a.matmul(&b).flatten(0, -1).to_device(Device::Cpu)).unwrap_or_default();
    if product != [17.0, 39.0] {
        return Err(fail("[[1,2],[3,4]] @ [[5],[6]]", format!("{product:?}"), "[17.0, 39.0]"));
    }
    let count = i64::try_from(a.gt(3.5).sum(Kind::Int64).to_device(Device::Cpu)).unwrap_or(-1);
    if count != 1 {
        return Err(fail("count of entries > 3.5", count.to_string(), "1"));
    }
    Ok(())
}

/// `cpu`, `cuda` (device 0), `cuda:N`, or `auto` (the first GPU if there is one).
pub fn parse_device(name: &str) -> Result<Device, RuntimeError> {
    let device = match name {
        "cpu" => Device::Cpu,
        "auto" => Device::cuda_if_available(),
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => Device::Cuda(n),
            None => return Err(RuntimeError::UnknownDevice(other.into())),
        },
    };
    if let Device::Cuda(n) = device {
        let count = tch::Cuda::device_count();
        if n as i64 >= count {
            let available = if count == 0 {
                "no CUDA device is visible (is this a GPU node, and is libtorch_cuda linked?)".to_string()
            } else {
                format!("only {count} CUDA device(s) are visible")
            };
            return Err(RuntimeError::DeviceUnavailable { requested: name.into(), available });
        }
    }
    Ok(device)
}

/// Tells glibc's allocator to keep freed memory for reuse instead of handing it back to the
/// kernel at once: allocations up to 32 MiB (its maximum) come from the heap rather than from
/// fresh mappings, up to 1 GiB of free heap is kept before trimming, and the heap grows 64 MiB
/// at a time. Scoring allocates and frees the same tens of megabytes every batch (decoded
/// images, activations, maps); with glibc's defaults each batch faults them in again, and the
/// kernel zeroing those pages was ~9 % of a 1024² scoring run's CPU samples. Measured in
/// docs/scale.md (images/s up ~4 %, peak RSS unchanged: the kept memory is the same memory).
/// A no-op on other C libraries. Returns whether glibc took every setting.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MIB: libc::c_int = 1 << 20;
        // SAFETY: mallopt only sets allocator parameters, under glibc's own arena lock.
        unsafe {
            [(libc::M_MMAP_THRESHOLD, 32 * MIB), (libc::M_TRIM_THRESHOLD, 1024 * MIB), (libc::M_TOP_PAD, 64 * MIB)]
                .into_iter()
                .all(|(param, value)| libc::mallopt(param, value) == 1)
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// This process's peak resident set size (VmHWM) in MiB; NaN where /proc is unavailable.
pub fn peak_rss_mib() -> f64 {
    proc_status_mib("VmHWM")
}

/// CPU time (user + system, all threads, those that have exited too) this process has used, in
/// seconds, to the nanosecond (`CLOCK_PROCESS_CPUTIME_ID`; `/proc/self/stat` counts 10 ms ticks,
/// too coarse for the difference `bench` takes); NaN where the clock cannot be read.
pub fn process_cpu_seconds() -> f64 {
    cpu_clock_seconds(libc::CLOCK_PROCESS_CPUTIME_ID).unwrap_or(f64::NAN)
}

/// The reading of CPU clock `clock` (a process's, a thread's, or one made from a thread id) in
/// seconds, to the nanosecond; None where the clock cannot be read (a thread that has exited).
pub(crate) fn cpu_clock_seconds(clock: libc::clockid_t) -> Option<f64> {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given.
    let read = unsafe { libc::clock_gettime(clock, &mut time) } == 0;
    read.then_some(time.tv_sec as f64 + time.tv_nsec as f64 * 1e-9)
}

/// Resets this process's peak resident set size to its current one (Linux `clear_refs` 5), so
/// that the next [`peak_rss_mib`] is the peak of what follows; false where that is not allowed.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// This process's resident set size now (VmRSS) in MiB; NaN where /proc is unavailable.
pub fn rss_mib() -> f64 {
    proc_status_mib("VmRSS")
}

fn proc_status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The first `hex_digits` hex digits of the SHA-256 of `bytes`: the one rule behind content
/// versions, default run ids and cache folder names.
///
/// ```
/// assert_eq!(promptad::runtime::sha256_prefix(b"abc", 8), "ba7816bf");
/// ```
pub fn sha256_prefix(bytes: &[u8], hex_digits: usize) -> String {
    use sha2::Digest;
    let mut hex = format!("{:x}", sha2::Sha256::digest(bytes));
    hex.truncate(hex_digits);
    hex
}

/// Seconds since 1970 (0 if the clock is before it), for records.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The device `name` names, after the libtorch version check and the start-up self-test on it:
/// what every command that runs a model does first.
pub fn checked_device(name: &str) -> Result<Device, RuntimeError> {
    check_libtorch()?;
    let device = parse_device(name)?;
    self_test(device)?;
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_every_allocator_setting() {
        // mallopt returns 0 for a value it refuses; every setting must be one glibc keeps.
        assert!(keep_freed_memory());
    }

    #[test]
    fn this_build_runs_on_the_libtorch_it_was_built_for() {
        let info = check_libtorch().expect("the test binary's own libtorch");
        assert_eq!(info.loaded_version.as_deref().map(|v| v.split('+').next().unwrap()), Some(REQUIRED_TORCH));
        self_test(Device::Cpu).unwrap();
    }

    #[test]
    fn another_libtorch_release_is_refused_with_what_to_do() {
        let mut info = torch_info();
        info.loaded_version = Some("2.13.0+cu130".into());
        info.loaded_lib = Some(PathBuf::from("/opt/venv/lib/python3.12/site-packages/torch/lib"));
        let err = verify_version(&info).unwrap_err().to_string();
        assert!(err.contains("built for libtorch 2.11.0 but loaded 2.13.0+cu130"), "{err}");
        assert!(err.contains("install torch==2.11.0"), "{err}");
        info.loaded_version = Some("2.11.0+cpu".into());
        verify_version(&info).unwrap();
    }

    #[test]
    fn device_names() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(matches!(parse_device("gpu"), Err(RuntimeError::UnknownDevice(_))));
        if tch::Cuda::device_count() == 0 {
            let err = parse_device("cuda:0").unwrap_err().to_string();
            assert!(err.contains("no CUDA device"), "{err}");
        }
    }
}
