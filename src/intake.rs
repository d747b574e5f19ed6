//! What clients are in the middle of sending, over every transport: HTTP request bodies and MQTT
//! packets that have not arrived whole. Each takes memory from one budget (`--body-memory`) as
//! its bytes arrive and gives it back once it is read whole; one that would take more than is
//! left is refused (HTTP 503, an MQTT disconnect) rather than kept waiting, and each must arrive
//! within `--body-timeout` of its first byte. No number of slow clients can hold more.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget of bytes being received, and how long a request or packet may take to arrive.
#[derive(Clone, Debug)]
pub struct Intake {
    budget: Arc<Semaphore>,
    limit: usize,
    timeout: Duration,
}

/// The budget is spent: a request or packet being received would take more than is left.
#[derive(Debug)]
pub struct Full;

impl Intake {
    /// A budget of `limit` bytes; requests and packets take at most `timeout` to arrive.
    pub fn new(limit: usize, timeout: Duration) -> Intake {
        Intake {
            budget: Arc::new(Semaphore::new(limit.min(Semaphore::MAX_PERMITS))),
            limit,
            timeout,
        }
    }

    /// The budget, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How long a request body or a packet may take to arrive once its first byte has.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A share of the budget for one request or connection, holding nothing yet.
    pub fn share(&self) -> Share {
        Share {
            budget: self.budget.clone(),
            held: None,
        }
    }
}

/// Bytes one request or connection holds of the budget; given back when dropped.
#[derive(Debug)]
pub struct Share {
    budget: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
}

impl Share {
    /// Holds exactly `bytes`: takes more of the budget, or gives some back.
    pub fn hold(&mut self, bytes: usize) -> Result<(), Full> {
        let now = self
            .held
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits);
        if bytes < now {
            let held = self.held.as_mut().expect("holds bytes");
            drop(held.split(now - bytes));
        } else if bytes > now {
            let more = self
                .budget
                .clone()
                .try_acquire_many_owned(u32::try_from(bytes - now).map_err(|_| Full)?)
                .map_err(|_| Full)?;
            match &mut self.held {
                Some(held) => held.merge(more),
                None => self.held = Some(more),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_take_and_give_back_bytes_of_one_budget() {
        let intake = Intake::new(100, Duration::from_secs(1));
        let (mut a, mut b) = (intake.share(), intake.share());
        a.hold(60).expect("room");
        assert!(b.hold(41).is_err(), "only 40 left");
        b.hold(40).expect("room");
        a.hold(10).expect("gives back 50");
        b.hold(90).expect("room again");
        drop(a);
        let mut c = intake.share();
        c.hold(10).expect("a's 10 are back");
        assert!(c.hold(11).is_err());
    }
}
