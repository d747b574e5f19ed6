//! A broadcast to in-process receivers, bounded in values and in bytes: the change events every
//! subscription reads, and the plain MQTT broker's messages.
//!
//! Sending never waits. The bus keeps the latest values, at most so many and so many bytes
//! (tokio's broadcast bounds only their number, so 4,096 events of 1 MiB each could be held for
//! one subscriber that stopped reading); older ones go, and a receiver that had not read them is
//! told how many it missed, and resynchronises. A stalled subscriber holds no more than the bus.

use std::collections::VecDeque;
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::Notify;
pub use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// What a value on the bus costs in memory, in bytes (its large parts; an estimate).
pub trait Footprint {
    fn footprint(&self) -> usize;
}

/// The sending end; cloning shares the bus. Receivers see it closed once every clone is gone.
pub struct Bus<T> {
    shared: Arc<Shared<T>>,
    _open: Arc<Open<T>>,
}

/// A receiver, reading every value sent after it subscribed.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// The position of the next value to read.
    next: u64,
}

struct Shared<T> {
    ring: RwLock<Ring<T>>,
    sent: Notify,
    max_values: usize,
    max_bytes: usize,
}

struct Ring<T> {
    values: VecDeque<(Arc<T>, usize)>,
    /// The position of `values[0]`.
    first: u64,
    bytes: usize,
    closed: bool,
}

/// Closes the bus when the last sender goes.
struct Open<T>(Arc<Shared<T>>);

impl<T> Drop for Open<T> {
    fn drop(&mut self) {
        self.0
            .ring
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.0.sent.notify_waiters();
    }
}

impl<T> Clone for Bus<T> {
    fn clone(&self) -> Bus<T> {
        Bus {
            shared: self.shared.clone(),
            _open: self._open.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Bus<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ring = self
            .shared
            .ring
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Bus")
            .field("values", &ring.values.len())
            .field("bytes", &ring.bytes)
            .finish()
    }
}

impl<T: Footprint> Bus<T> {
    /// A bus keeping at most `max_values` values and `max_bytes` bytes of them (but always the
    /// latest value).
    pub fn new(max_values: usize, max_bytes: usize) -> Bus<T> {
        let shared = Arc::new(Shared {
            ring: RwLock::new(Ring {
                values: VecDeque::new(),
                first: 0,
                bytes: 0,
                closed: false,
            }),
            sent: Notify::new(),
            max_values: max_values.max(1),
            max_bytes,
        });
        Bus {
            _open: Arc::new(Open(shared.clone())),
            shared,
        }
    }

    /// Sends `value` to every receiver; the oldest values go if the bus is full.
    pub fn send(&self, value: T) {
        let size = value.footprint();
        {
            let mut ring = self
                .shared
                .ring
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            ring.values.push_back((Arc::new(value), size));
            ring.bytes += size;
            while ring.values.len() > self.shared.max_values
                || (ring.bytes > self.shared.max_bytes && ring.values.len() > 1)
            {
                let (_, gone) = ring.values.pop_front().expect("not empty");
                ring.bytes -= gone;
                ring.first += 1;
            }
        }
        self.shared.sent.notify_waiters();
    }

    /// A receiver of every value sent from now on.
    pub fn subscribe(&self) -> Receiver<T> {
        Receiver::at_end(self.shared.clone())
    }
}

impl<T> Receiver<T> {
    /// The next value; `Lagged(n)` if `n` values went before this receiver read them (the next
    /// call reads the oldest still kept), `Closed` once every sender is gone and all is read.
    pub async fn recv(&mut self) -> Result<Arc<T>, RecvError> {
        let shared = self.shared.clone();
        loop {
            let sent = shared.sent.notified();
            tokio::pin!(sent);
            sent.as_mut().enable();
            match self.try_recv() {
                Ok(value) => return Ok(value),
                Err(TryRecvError::Lagged(missed)) => return Err(RecvError::Lagged(missed)),
                Err(TryRecvError::Closed) => return Err(RecvError::Closed),
                Err(TryRecvError::Empty) => sent.await,
            }
        }
    }

    /// A receiver of the same bus that skips what this one has not read yet.
    pub fn resubscribe(&self) -> Receiver<T> {
        Receiver::at_end(self.shared.clone())
    }

    fn at_end(shared: Arc<Shared<T>>) -> Receiver<T> {
        let next = {
            let ring = shared.ring.read().unwrap_or_else(PoisonError::into_inner);
            ring.first + ring.values.len() as u64
        };
        Receiver { shared, next }
    }

    /// The next value if one is there.
    pub fn try_recv(&mut self) -> Result<Arc<T>, TryRecvError> {
        let ring = self
            .shared
            .ring
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if self.next < ring.first {
            let missed = ring.first - self.next;
            self.next = ring.first;
            return Err(TryRecvError::Lagged(missed));
        }
        let index = usize::try_from(self.next - ring.first).unwrap_or(usize::MAX);
        match ring.values.get(index) {
            Some((value, _)) => {
                self.next += 1;
                Ok(value.clone())
            }
            None if ring.closed => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Footprint for Vec<u8> {
        fn footprint(&self) -> usize {
            self.len()
        }
    }

    #[tokio::test]
    async fn a_receiver_that_falls_behind_by_values_or_bytes_is_told_what_it_missed() {
        let bus: Bus<Vec<u8>> = Bus::new(3, 100);
        let mut slow = bus.subscribe();
        let mut fast = bus.subscribe();
        for n in 0..5u8 {
            bus.send(vec![n; 10]);
            assert_eq!(fast.recv().await.expect("sent")[0], n);
        }
        assert_eq!(slow.recv().await, Err(RecvError::Lagged(2)));
        assert_eq!(slow.recv().await.expect("kept")[0], 2);
        // Bytes: one large value pushes out everything older, but is itself kept.
        bus.send(vec![9; 500]);
        assert_eq!(slow.recv().await, Err(RecvError::Lagged(2)));
        assert_eq!(slow.recv().await.expect("kept").len(), 500);
        assert_eq!(fast.recv().await.expect("kept").len(), 500);
        assert_eq!(fast.try_recv(), Err(TryRecvError::Empty));
        drop(bus);
        assert_eq!(fast.recv().await, Err(RecvError::Closed));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_receiver_wakes_for_each_value() {
        let bus: Bus<Vec<u8>> = Bus::new(1024, 1 << 20);
        let mut receiver = bus.subscribe();
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Ok(value) = receiver.recv().await {
                seen.push(value[0]);
            }
            seen
        });
        for n in 0..200u8 {
            bus.send(vec![n]);
            if n % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        drop(bus);
        assert_eq!(reader.await.expect("reader"), (0..200).collect::<Vec<u8>>());
    }
}
