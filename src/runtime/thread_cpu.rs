//! CPU time by who spends it: promptad's own host threads (the reader, its decoders, the writer,
//! the I/O runtime), each registered with its [`HostRole`] when it starts, against the rest,
//! which are the thread that runs the model and libtorch's workers.
//!
//! `promptad bench` reads [`model_threads_cpu_seconds`] around each forward to tell the
//! backbone's CPU time from the host's inside one scoring pass, and [`host_cpu_seconds`] before
//! and after the pass to say which host stage spent the rest. A separate timing of the forward
//! alone, subtracted from the pass's process CPU, was a difference of two drifting numbers on a
//! shared VM (docs/scale.md, 2026-12-07).
//!
//! Threads are told apart by registration, not by name: libtorch's workers take the name of the
//! thread that starts them, which is the binary's (a binary installed as `promptad-0.3` made the
//! model's threads look like host threads when names decided). A host thread hands its CPU time
//! to its role's sum when it stops, so the threads that a pass starts and joins still count
//! after they are gone.

use std::sync::Mutex;

/// The start of every host thread's name, so that `perf` and `top -H` show which is which
/// (Linux keeps 15 bytes of a name: `promptad-decode`).
pub const HOST_THREAD_PREFIX: &str = "promptad-";

/// What a host thread does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRole {
    /// Walks the units and asks for their files (the reader thread; a folder's file reads run
    /// on the I/O runtime's threads).
    Read,
    /// Decodes and preprocesses images (the reader's pool).
    Decode,
    /// Statistics, Parquet encoding and commits (the writer thread).
    Write,
    /// Store I/O (the tokio runtime's threads).
    Io,
}

/// CPU seconds of the host threads, by [`HostRole`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostCpu {
    pub read: f64,
    pub decode: f64,
    pub write: f64,
    pub io: f64,
}

impl HostCpu {
    pub fn total(&self) -> f64 {
        self.read + self.decode + self.write + self.io
    }

    /// What was spent between `earlier` and `self`.
    pub fn since(&self, earlier: &HostCpu) -> HostCpu {
        HostCpu {
            read: self.read - earlier.read,
            decode: self.decode - earlier.decode,
            write: self.write - earlier.write,
            io: self.io - earlier.io,
        }
    }

    fn add(&mut self, role: HostRole, seconds: f64) {
        let sum = match role {
            HostRole::Read => &mut self.read,
            HostRole::Decode => &mut self.decode,
            HostRole::Write => &mut self.write,
            HostRole::Io => &mut self.io,
        };
        *sum += seconds;
    }
}

/// The live host threads (kernel thread id, role) and what the stopped ones spent.
struct Registry {
    live: Vec<(i32, HostRole)>,
    stopped: HostCpu,
}

static REGISTRY: Mutex<Registry> =
    Mutex::new(Registry { live: Vec::new(), stopped: HostCpu { read: 0.0, decode: 0.0, write: 0.0, io: 0.0 } });

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // The registry holds plain numbers; a panic elsewhere while it was locked leaves them whole.
    REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers the calling thread as a host thread of `role` (a pool's start handler calls this;
/// a thread of our own holds a [`HostThread`] instead).
pub fn register_host_thread(role: HostRole) {
    let tid = current_tid();
    let mut registry = registry();
    registry.live.retain(|&(t, _)| t != tid);
    registry.live.push((tid, role));
}

/// Unregisters the calling thread, moving the CPU time it has spent to its role's sum (a
/// pool's exit handler calls this). Nothing for a thread that is not registered.
pub fn unregister_host_thread() {
    let tid = current_tid();
    let mut registry = registry();
    if let Some(at) = registry.live.iter().position(|&(t, _)| t == tid) {
        let (_, role) = registry.live.swap_remove(at);
        let spent = super::cpu_clock_seconds(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or(f64::NAN);
        registry.stopped.add(role, spent);
    }
}

/// A host thread's registration for as long as it is held: the first line of a host thread's
/// body, `let _host = HostThread::start(HostRole::Write);`. Unregisters on drop, a panic's
/// unwinding included.
pub struct HostThread(());

impl HostThread {
    pub fn start(role: HostRole) -> HostThread {
        register_host_thread(role);
        HostThread(())
    }
}

impl Drop for HostThread {
    fn drop(&mut self) {
        unregister_host_thread();
    }
}

/// CPU seconds spent so far by host threads, live and stopped, by role. NaN where a thread's
/// clock cannot be read (not Linux).
pub fn host_cpu_seconds() -> HostCpu {
    let registry = registry();
    let mut cpu = registry.stopped;
    for &(tid, role) in &registry.live {
        cpu.add(role, thread_cpu_seconds(tid).unwrap_or(f64::NAN));
    }
    cpu
}

/// CPU seconds spent so far by every thread of this process that is not a host thread: the
/// model's (the process's clock, which keeps the time of stopped threads too, less the host's).
pub fn model_threads_cpu_seconds() -> f64 {
    let host = host_cpu_seconds().total();
    super::process_cpu_seconds() - host
}

#[cfg(target_os = "linux")]
fn current_tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

#[cfg(not(target_os = "linux"))]
fn current_tid() -> i32 {
    0
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

    /// Each host thread's own clock is read by its role, live or stopped; an unregistered thread
    /// is the model's whatever its name. Other tests of this binary may run host threads at the
    /// same time, so the roles used here are ones they leave idle, and the model's share is
    /// checked only to include the model spinner.
    #[test]
    fn host_threads_are_timed_by_role_live_and_stopped_and_names_do_not_decide() {
        let (before, model_before) = (host_cpu_seconds(), model_threads_cpu_seconds());
        let alive = std::sync::Arc::new(std::sync::Barrier::new(3));
        let spinner = |name: &str, role: Option<HostRole>, millis: u64, wait: bool| {
            let alive = alive.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    let _host = role.map(HostThread::start);
                    spin(Duration::from_millis(millis));
                    if wait {
                        alive.wait();
                        alive.wait();
                    }
                })
                .unwrap()
        };
        // A stopped host thread: gone before anything is read.
        spinner("promptad-gone", Some(HostRole::Read), 200, false).join().unwrap();
        let live = spinner("promptad-live", Some(HostRole::Write), 300, true);
        // Named like a host thread, but not registered: the model's.
        let model = spinner("promptad-model", None, 100, true);
        alive.wait();
        let (after, model_after) = (host_cpu_seconds(), model_threads_cpu_seconds());
        alive.wait();
        live.join().unwrap();
        model.join().unwrap();
        let spent = after.since(&before);
        // What each spun, plus its start and the barrier (a clock of another thread, or in the
        // wrong unit, fails).
        assert!((0.2..0.25).contains(&spent.read), "{spent:?}");
        assert!((0.3..0.35).contains(&spent.write), "{spent:?}");
        let model_spent = model_after - model_before;
        assert!(model_spent >= 0.1, "the unregistered thread's 0.1 s is the model's: {model_spent}");
        // Once stopped, the live thread's time stays with its role.
        let stopped = host_cpu_seconds().since(&before);
        assert!((stopped.write - spent.write).abs() < 0.01, "{stopped:?} {spent:?}");
    }
}
