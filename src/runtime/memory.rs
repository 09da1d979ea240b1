//! How much memory a device has free: what `--batch-size auto` sizes its batches by and what
//! `promptad bench` reports of a GPU.
//!
//! - **CPU**: the kernel's `MemAvailable`, bounded by the container's memory limit (cgroup v2
//!   `memory.max` less `memory.current`, or cgroup v1's `limit_in_bytes` less `usage_in_bytes`):
//!   a pod with a 16 GiB limit on a 1 TiB node has 16 GiB, not 1 TiB.
//! - **CUDA**: `cudaMemGetInfo` of the CUDA runtime libtorch loaded (found in this process's
//!   mappings, so no CUDA library is linked or loaded by this binary itself). Free memory is
//!   the device's, after libtorch's caching allocator: what this process reserved is not free.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use tch::Device;

/// Free and total bytes of a device's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DeviceMemory {
    pub free: u64,
    pub total: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot read the memory of {device}: {reason}")]
    Unreadable { device: String, reason: String },
}

/// Free and total memory of `device`; see the module documentation.
pub fn device_memory(device: Device) -> Result<DeviceMemory, MemoryError> {
    let unreadable = |reason: String| MemoryError::Unreadable { device: format!("{device:?}"), reason };
    match device {
        Device::Cpu => host_memory().map_err(unreadable),
        Device::Cuda(index) => cuda_memory(index).map_err(unreadable),
        other => Err(unreadable(format!("{other:?} is neither the CPU nor a CUDA device"))),
    }
}

fn host_memory() -> Result<DeviceMemory, String> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    let system = meminfo_memory(&meminfo).ok_or("/proc/meminfo has no MemAvailable and MemTotal")?;
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let limit = read("/sys/fs/cgroup/memory.max")
        .zip(read("/sys/fs/cgroup/memory.current"))
        .or_else(|| {
            read("/sys/fs/cgroup/memory/memory.limit_in_bytes").zip(read("/sys/fs/cgroup/memory/memory.usage_in_bytes"))
        })
        .and_then(|(limit, usage)| cgroup_memory(&limit, &usage));
    Ok(match limit {
        Some(cgroup) => DeviceMemory { free: system.free.min(cgroup.free), total: system.total.min(cgroup.total) },
        None => system,
    })
}

/// `MemAvailable` and `MemTotal` of a `/proc/meminfo` text.
///
/// ```
/// use promptad::runtime::memory::{meminfo_memory, DeviceMemory};
/// let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
/// assert_eq!(meminfo_memory(text), Some(DeviceMemory { free: 20_480_000_000, total: 24_576_000_000 }));
/// ```
pub fn meminfo_memory(text: &str) -> Option<DeviceMemory> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some(DeviceMemory { free: field("MemAvailable")?, total: field("MemTotal")? })
}

/// A cgroup's limit and usage files as free and total memory; `None` when it has no limit
/// (`max`, or cgroup v1's "unlimited", a number near `i64::MAX`).
///
/// ```
/// use promptad::runtime::memory::{cgroup_memory, DeviceMemory};
/// assert_eq!(cgroup_memory("17179869184\n", "4294967296\n"),
///            Some(DeviceMemory { free: 12_884_901_888, total: 17_179_869_184 }));
/// assert_eq!(cgroup_memory("max\n", "4294967296\n"), None);
/// assert_eq!(cgroup_memory("9223372036854771712\n", "1\n"), None);
/// ```
pub fn cgroup_memory(limit: &str, usage: &str) -> Option<DeviceMemory> {
    let limit: u64 = limit.trim().parse().ok()?;
    let usage: u64 = usage.trim().parse().ok()?;
    // cgroup v1 writes "unlimited" as the largest page-aligned i64.
    if limit >= 1 << 62 {
        return None;
    }
    Some(DeviceMemory { free: limit.saturating_sub(usage), total: limit })
}

type CudaStatus = c_int;

/// The CUDA runtime's functions this needs, from the `libcudart` libtorch loaded.
struct CudaRuntime {
    get_device: unsafe extern "C" fn(*mut c_int) -> CudaStatus,
    set_device: unsafe extern "C" fn(c_int) -> CudaStatus,
    mem_get_info: unsafe extern "C" fn(*mut usize, *mut usize) -> CudaStatus,
    error_string: unsafe extern "C" fn(CudaStatus) -> *const c_char,
}

impl CudaRuntime {
    /// The runtime mapped into this process, by its path in `/proc/self/maps`.
    fn loaded() -> Result<CudaRuntime, String> {
        let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("/proc/self/maps: {e}"))?;
        let path = maps
            .lines()
            .filter_map(|line| line.split_whitespace().nth(5))
            .find(|path| path.rsplit('/').next().is_some_and(|name| name.starts_with("libcudart.so")))
            .ok_or("libtorch has not loaded a CUDA runtime (libcudart): this is a CPU-only libtorch")?;
        let c_path = CString::new(path).map_err(|_| format!("{path}: a path with a NUL byte"))?;
        // SAFETY: RTLD_NOLOAD only returns a handle to a library that is already loaded.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
        if handle.is_null() {
            return Err(format!("{path} is mapped but cannot be opened"));
        }
        let symbol = |name: &str| -> Result<*mut c_void, String> {
            let c_name = CString::new(name).expect("symbol names have no NUL byte");
            // SAFETY: a lookup in a loaded library; the pointer is checked before use.
            let address = unsafe { libc::dlsym(handle, c_name.as_ptr()) };
            if address.is_null() {
                Err(format!("{path} has no {name}"))
            } else {
                Ok(address)
            }
        };
        // SAFETY: these are the CUDA runtime API's C signatures (cuda_runtime_api.h).
        unsafe {
            Ok(CudaRuntime {
                get_device: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_int) -> CudaStatus>(symbol(
                    "cudaGetDevice",
                )?),
                set_device: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(c_int) -> CudaStatus>(symbol(
                    "cudaSetDevice",
                )?),
                mem_get_info: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*mut usize, *mut usize) -> CudaStatus,
                >(symbol("cudaMemGetInfo")?),
                error_string: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(CudaStatus) -> *const c_char>(
                    symbol("cudaGetErrorString")?,
                ),
            })
        }
    }

    fn check(&self, call: &str, status: CudaStatus) -> Result<(), String> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: cudaGetErrorString returns a static NUL-terminated string for any code.
        let text = unsafe { CStr::from_ptr((self.error_string)(status)) }.to_string_lossy().into_owned();
        Err(format!("{call} failed with CUDA error {status}: {text}"))
    }
}

fn cuda_memory(index: usize) -> Result<DeviceMemory, String> {
    let cuda = CudaRuntime::loaded()?;
    let (mut current, mut free, mut total) = (0 as c_int, 0usize, 0usize);
    // SAFETY: out-pointers to locals; the calling thread's current device is restored after.
    unsafe {
        cuda.check("cudaGetDevice", (cuda.get_device)(&mut current))?;
        cuda.check("cudaSetDevice", (cuda.set_device)(index as c_int))?;
        let queried = cuda.check("cudaMemGetInfo", (cuda.mem_get_info)(&mut free, &mut total));
        cuda.check("cudaSetDevice", (cuda.set_device)(current))?;
        queried?;
    }
    Ok(DeviceMemory { free: free as u64, total: total as u64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_has_free_memory_below_its_total() {
        let memory = device_memory(Device::Cpu).unwrap();
        assert!(memory.free > 0 && memory.free <= memory.total, "{memory:?}");
    }

    #[test]
    fn a_cuda_device_that_is_absent_is_an_error_naming_it() {
        if tch::Cuda::device_count() > 0 {
            let memory = device_memory(Device::Cuda(0)).unwrap();
            assert!(memory.free > 0 && memory.free <= memory.total, "{memory:?}");
            return;
        }
        let err = device_memory(Device::Cuda(0)).unwrap_err().to_string();
        assert!(err.contains("Cuda(0)") && (err.contains("CUDA error") || err.contains("libcudart")), "{err}");
    }
}
