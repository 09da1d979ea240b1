//! CPU time by who spends it: promptad's own host threads (the reader, the decoders, the
//! writer, the I/O runtime), all named [`HOST_THREAD_PREFIX`]…, against the rest, which are the
//! thread that runs the model and libtorch's workers (they take the name of the thread that
//! started them, never ours).
//!
//! `promptad bench` reads [`model_threads_cpu_seconds`] around each forward to tell the
//! backbone's CPU time from the host's inside one scoring pass. A separate timing of the forward
//! alone, subtracted from the pass's process CPU, was a difference of two drifting numbers on a
//! shared VM (docs/scale.md, 2026-12-07).

/// The start of every host thread's name (Linux keeps 15 bytes of it: `promptad-decode`).
pub const HOST_THREAD_PREFIX: &str = "promptad-";

/// CPU seconds used so far by the threads of this process whose names do not start with
/// [`HOST_THREAD_PREFIX`]: the model's. NaN where the threads cannot be listed (not Linux).
pub fn model_threads_cpu_seconds() -> f64 {
    threads_cpu_seconds(is_model_thread)
}

/// Whether a thread of this name runs the model: any thread not named as a host thread.
fn is_model_thread(name: &str) -> bool {
    !name.starts_with(HOST_THREAD_PREFIX)
}

/// CPU seconds used so far by the live threads of this process whose names `counted` accepts.
fn threads_cpu_seconds(counted: impl Fn(&str) -> bool) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return f64::NAN };
    tasks
        .flatten()
        .filter_map(|task| {
            // A thread that exits meanwhile has no `comm` to read, and is left out.
            let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
            let tid = task.file_name().to_str()?.parse::<i32>().ok()?;
            counted(name.trim_end()).then(|| thread_cpu_seconds(tid)).flatten()
        })
        .sum()
}

/// The CPU clock of thread `tid` of this process, read with `clock_gettime`: to the nanosecond,
/// including the slice it is running now (`/proc/…/schedstat` lags a running thread by a tick).
#[cfg(target_os = "linux")]
fn thread_cpu_seconds(tid: i32) -> Option<f64> {
    // The kernel's id of a thread's scheduler clock: `MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)`
    // (include/linux/posix-timers.h), `(~tid << 3) | CPUCLOCK_PERTHREAD_MASK | CPUCLOCK_SCHED`.
    super::cpu_clock_seconds(((!tid) << 3) | 4 | 2)
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_seconds(_tid: i32) -> Option<f64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Runs until this thread has used `for_how_long` of CPU by the standard clock of the
    /// calling thread (not the tid-made one under test).
    fn spin(for_how_long: Duration) {
        let own_cpu = || crate::runtime::cpu_clock_seconds(libc::CLOCK_THREAD_CPUTIME_ID).unwrap();
        let mut x = 0u64;
        while own_cpu() < for_how_long.as_secs_f64() {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }

    /// Each thread's own clock is read, by its name, and a host thread is not the model's.
    #[test]
    fn threads_are_timed_by_their_own_clocks_and_told_apart_by_name() {
        let done = std::sync::Arc::new(std::sync::Barrier::new(3));
        let spinner = |name: &str, millis: u64| {
            let done = done.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    spin(Duration::from_millis(millis));
                    done.wait();
                    done.wait();
                })
                .unwrap()
        };
        let host = spinner("promptad-spin", 300);
        let model = spinner("model-spin", 100);
        done.wait();
        // Both are alive (waiting), so their clocks can be read.
        let host_s = threads_cpu_seconds(|n| n == "promptad-spin");
        let model_s = threads_cpu_seconds(|n| n == "model-spin");
        // The classification `model_threads_cpu_seconds` uses, applied to the same live threads.
        let host_as_model = threads_cpu_seconds(|n| n == "promptad-spin" && is_model_thread(n));
        let model_as_model = threads_cpu_seconds(|n| n == "model-spin" && is_model_thread(n));
        done.wait();
        host.join().unwrap();
        model.join().unwrap();
        // What each spun, plus its start and the barrier (a clock of another thread, or in the
        // wrong unit, fails).
        assert!((0.3..0.35).contains(&host_s), "{host_s}");
        assert!((0.1..0.15).contains(&model_s), "{model_s}");
        assert_eq!(host_as_model, 0.0);
        assert!((model_as_model - model_s).abs() < 1e-3, "{model_as_model} {model_s}");
        assert!(model_threads_cpu_seconds() > 0.0);
    }
}
