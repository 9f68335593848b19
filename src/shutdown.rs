//! Owned shutdown: every task a server starts is spawned through one [`Shutdown`], which can
//! tell them all to stop and then wait until they have.
//!
//! Sessions' tasks (sender, keyframe forwarding, data channel, supervisor) watch
//! [`Shutdown::token`] (or a child of it) and end when it is cancelled; [`Shutdown::finished`]
//! resolves once the last of them has returned, so a server that says it stopped has no
//! task left behind. Threads (a stream's pacing and encoding threads) are owned by their
//! [`crate::pipeline::Pipeline`], which joins them when dropped.

use std::future::Future;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The stop signal and the set of tasks that must end before a server has stopped.
#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` on the runtime, counted until it returns.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Cancelled when the server starts shutting down.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Whether shutdown has begun.
    pub fn is_started(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Tells every task to stop.
    pub fn start(&self) {
        self.token.cancel();
    }

    /// Resolves once every task spawned here has returned (no new ones are taken after).
    pub async fn finished(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.tasks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `finished` waits for tasks that take time to notice the stop, and not longer.
    #[tokio::test(start_paused = true)]
    async fn finished_waits_for_every_task_to_return() {
        let shutdown = Shutdown::new();
        for delay in [10u64, 200, 50] {
            let token = shutdown.token().clone();
            shutdown.spawn(async move {
                token.cancelled().await;
                tokio::time::sleep(Duration::from_millis(delay)).await;
            });
        }
        assert_eq!(shutdown.running(), 3);
        let t0 = tokio::time::Instant::now();
        shutdown.start();
        shutdown.finished().await;
        assert_eq!(shutdown.running(), 0);
        assert_eq!(t0.elapsed(), Duration::from_millis(200));
    }
}
