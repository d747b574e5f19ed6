//! The sweeper: a background task that removes cache entries past their last usable moment.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::CachedTable;
use crate::error::Chain;

/// The running sweeper; stop it with [`Sweeper::stop`].
pub struct Sweeper {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Sweeper {
    /// Sweeps `tables` every `every`.
    pub fn start(tables: Vec<CachedTable>, every: Duration) -> Sweeper {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stopped.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                for table in &tables {
                    match table.sweep().await {
                        Ok(0) => {}
                        Ok(removed) => {
                            tracing::debug!(
                                table = table.table().name(),
                                removed,
                                "swept expired entries"
                            );
                        }
                        Err(error) => {
                            tracing::warn!(table = table.table().name(), error = %Chain(&error), "sweep failed");
                        }
                    }
                }
            }
        });
        Sweeper { stop, task }
    }

    /// Stops the sweeper, letting a sweep under way finish.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the sweeper failed");
        }
    }
}
