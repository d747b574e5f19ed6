//! Single-flight: concurrent requests for one key share one piece of work and its result.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// The flights under way, by key.
pub struct Flights<T> {
    running: Mutex<HashMap<Vec<u8>, watch::Receiver<Option<T>>>>,
}

/// A flight joined or started: wait on it for the result.
pub struct Boarding<T> {
    result: watch::Receiver<Option<T>>,
    /// Whether the flight was already under way (RFC 9211's `collapsed`).
    pub collapsed: bool,
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    /// No flights.
    pub fn new() -> Flights<T> {
        Flights {
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Joins the flight for `key`, or starts one running `work()` on `tasks`. The work runs as
    /// its own task, so it completes (and its result is stored) even if every waiter goes away.
    pub fn board<F>(
        self: &Arc<Self>,
        key: Vec<u8>,
        tasks: &TaskTracker,
        work: impl FnOnce() -> F,
    ) -> Boarding<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(result) = running.get(&key) {
            return Boarding {
                result: result.clone(),
                collapsed: true,
            };
        }
        let (sender, result) = watch::channel(None);
        running.insert(key.clone(), result.clone());
        drop(running);
        let landing = Landing {
            flights: self.clone(),
            key,
        };
        let work = work();
        tasks.spawn(async move {
            let outcome = work.await;
            // Land before announcing: a request arriving after the result is known starts
            // afresh (and finds what the work stored) rather than joining a finished flight.
            drop(landing);
            let _ = sender.send(Some(outcome));
        });
        Boarding {
            result,
            collapsed: false,
        }
    }

    /// How many flights are under way.
    pub fn len(&self) -> usize {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl<T: Clone> Boarding<T> {
    /// The flight's result; `None` if its task died without one (it panicked or the runtime
    /// shut down).
    pub async fn wait(mut self) -> Option<T> {
        let landed = self.result.wait_for(Option::is_some).await.ok()?;
        landed.clone()
    }
}

/// Removes a flight from the running set when its task ends, however it ends.
struct Landing<T> {
    flights: Arc<Flights<T>>,
    key: Vec<u8>,
}

impl<T> Drop for Landing<T> {
    fn drop(&mut self) {
        self.flights
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights = Arc::new(Flights::<usize>::new());
        let tasks = TaskTracker::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut waiters = Vec::new();
        for _ in 0..50 {
            let runs = runs.clone();
            let boarding = flights.board(b"k".to_vec(), &tasks, move || async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                runs.fetch_add(1, Ordering::SeqCst) + 41
            });
            waiters.push(tokio::spawn(boarding.wait()));
        }
        for waiter in waiters {
            assert_eq!(waiter.await.expect("joins"), Some(41));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.len(), 0);

        // Once landed, the next call starts a new run.
        let again = flights.board(b"k".to_vec(), &tasks, || async { 7 });
        assert!(!again.collapsed);
        assert_eq!(again.wait().await, Some(7));
    }

    #[tokio::test]
    async fn a_panicking_run_lands_and_wakes_its_waiters() {
        let flights = Arc::new(Flights::<usize>::new());
        let tasks = TaskTracker::new();
        let boarding = flights.board(b"k".to_vec(), &tasks, || async { panic!("bug") });
        assert_eq!(boarding.wait().await, None);
        assert_eq!(flights.len(), 0);
    }
}
