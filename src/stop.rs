//! Cooperative cancellation. A long pipeline (training, scoring) takes a [`StopToken`] and checks
//! it at its safe points: between training steps, between scoring batches. Who stops it (SIGTERM
//! in `main`, a test, an embedding program) is not the pipeline's business.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A shared flag: set once by whoever wants the work to stop, read by the work.
#[derive(Debug, Clone, Default)]
pub struct StopToken(Arc<AtomicBool>);

/// The work stopped at a safe point because it was asked to; nothing uncommitted is visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "stopped on request (SIGTERM): the work in progress was abandoned before it was committed (nothing partial is \
     visible); running the same command again continues from what was committed"
)]
pub struct Stopped;

impl StopToken {
    /// A token nobody has stopped yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the work to stop; returns whether it had been asked before.
    pub fn stop(&self) -> bool {
        self.0.swap(true, Ordering::SeqCst)
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Stopped)` once [`stop`](Self::stop) was called: the check at a safe point.
    pub fn check(&self) -> Result<(), Stopped> {
        if self.is_stopped() {
            return Err(Stopped);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_sees_the_stop_and_the_second_stop_says_so() {
        let token = StopToken::new();
        let seen_by_work = token.clone();
        assert_eq!(seen_by_work.check(), Ok(()));
        assert!(!token.stop());
        assert_eq!(seen_by_work.check(), Err(Stopped));
        assert!(token.stop(), "a second stop reports the first");
    }
}
