//! The sink's bounded queue: when full, the oldest result is dropped (and counted).
//!
//! // why drop-oldest: the queue only fills during a graph outage; what users look for
//! afterwards is their recent work, and the oldest entries are the ones most likely to have
//! been waiting through the whole outage anyway. Either way the user's call never waits.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Debug)]
pub(crate) struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    capacity: usize,
    ready: Notify,
}

impl<T> Queue<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            items: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: capacity.max(1),
            ready: Notify::new(),
        }
    }

    /// Adds `item`; returns whether an older item was dropped to make room.
    pub(crate) fn push(&self, item: T) -> bool {
        let dropped = {
            let mut items = self.items.lock();
            let dropped = items.len() >= self.capacity && items.pop_front().is_some();
            items.push_back(item);
            dropped
        };
        self.ready.notify_one();
        dropped
    }

    /// Puts `batch` (taken by [`Self::pop_batch`]) back in front, in order; returns how many
    /// of its oldest items had to be dropped because newer ones filled the queue meanwhile.
    pub(crate) fn requeue(&self, batch: Vec<T>) -> usize {
        let mut items = self.items.lock();
        let room = self.capacity.saturating_sub(items.len());
        let dropped = batch.len().saturating_sub(room);
        for item in batch.into_iter().skip(dropped).rev() {
            items.push_front(item);
        }
        dropped
    }

    /// Waits for at least one item, then takes up to `max()` (asked once items are there),
    /// oldest first.
    pub(crate) async fn pop_batch(&self, max: impl Fn() -> usize) -> Vec<T> {
        loop {
            {
                let mut items = self.items.lock();
                if !items.is_empty() {
                    let n = items.len().min(max().max(1));
                    return items.drain(..n).collect();
                }
            }
            // A push between the check and here stores a permit: no wake-up is lost.
            self.ready.notified().await;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_drops_the_oldest_and_batches_in_order() {
        let q = Queue::new(3);
        assert!(!q.push(1) && !q.push(2) && !q.push(3));
        assert!(q.push(4), "full: 1 is dropped");
        assert_eq!(q.pop_batch(|| 2).await, vec![2, 3]);
        assert_eq!(q.pop_batch(|| 10).await, vec![4]);
        assert_eq!(q.len(), 0);
        // Held back while newer items arrived: the batch goes first, its oldest dropped.
        q.push(5);
        let batch = q.pop_batch(|| 10).await;
        q.push(6);
        q.push(7);
        assert_eq!(q.requeue(batch), 0);
        assert_eq!(q.pop_batch(|| 10).await, vec![5, 6, 7]);
        q.push(8);
        q.push(9);
        q.push(10);
        assert_eq!(q.requeue(vec![6, 7]), 2, "full: both dropped");
        assert_eq!(q.pop_batch(|| 10).await, vec![8, 9, 10]);
    }
}
