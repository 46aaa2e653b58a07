//! Stopping: the signal that starts it, and the tokens and task tracker that
//! own every background task of a process (reaper, pool refill, limiter
//! pruning, executions, streamed commands), so that shutdown can wait for
//! them and then cancel what is left.
//!
//! Two steps: [`Shutdown::stop`] ends the loops (nothing new starts), while
//! commands already running go on; [`Shutdown::cancel`] (when the grace is
//! over) cancels those commands too.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Resolves on SIGTERM or ctrl-c.
pub async fn signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        }
        Err(err) => {
            tracing::error!(%err, "no SIGTERM handler; only ctrl-c stops this process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The process's stop and cancel tokens and its task tracker. Cloning shares them.
#[derive(Clone, Default)]
pub struct Shutdown {
    /// Cancelled when the process starts stopping: loops end.
    stop: CancellationToken,
    /// Cancelled when it stops waiting: commands are cancelled.
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `task` so that [`drain_until`](Self::drain_until) waits for it.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// A token cancelled when the process gives up waiting: commands hang
    /// their own cancellation on it (a child token).
    pub fn token(&self) -> CancellationToken {
        self.token.child_token()
    }

    /// Resolves once the process starts stopping ([`cancel`](Self::cancel)
    /// stops too): loops run until this.
    pub async fn stopping(&self) {
        self.stop.cancelled().await
    }

    /// Ends the loops; running commands go on.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Cancels every command and loop still running.
    pub fn cancel(&self) {
        self.stop.cancel();
        self.token.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Accepts no more tasks and waits until `deadline` for the tracked ones;
    /// `false` if some were still running then.
    pub async fn drain_until(&self, deadline: tokio::time::Instant) -> bool {
        self.tracker.close();
        tokio::time::timeout_at(deadline, self.tracker.wait()).await.is_ok()
    }

    /// Runs the loop `task` as a tracked task that ends when the process
    /// starts stopping, wherever the loop is (a pass in flight is dropped:
    /// loops here are passes that the next process repeats).
    pub fn spawn_loop<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = stop.stopping() => {}
                () = task => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_tracked_tasks_until_its_limit() {
        let shutdown = Shutdown::new();
        shutdown.spawn(tokio::time::sleep(Duration::from_secs(5)));
        assert!(!shutdown.drain_until(Instant::now() + Duration::from_secs(1)).await);
        assert!(shutdown.drain_until(Instant::now() + Duration::from_secs(10)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_ends_at_stop_even_in_the_middle_of_a_pass() {
        let shutdown = Shutdown::new();
        shutdown.spawn_loop(async {
            // A pass that would take an hour (a hung engine call).
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        shutdown.stop();
        assert!(shutdown.drain_until(Instant::now() + Duration::from_millis(10)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_loops_but_leaves_commands_running() {
        let shutdown = Shutdown::new();
        let (stop, token) = (shutdown.clone(), shutdown.token());
        let looping = shutdown.spawn(async move { stop.stopping().await });
        shutdown.stop();
        looping.await.unwrap();
        assert!(!token.is_cancelled());
        shutdown.cancel();
        assert!(token.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancel_reaches_every_child_token() {
        let shutdown = Shutdown::new();
        let token = shutdown.token();
        let task = shutdown.spawn(async move { token.cancelled().await });
        shutdown.cancel();
        task.await.unwrap();
        assert!(shutdown.drain_until(Instant::now() + Duration::from_secs(1)).await);
    }
}
