//! A server-stream body that ends with a status even when its buffer is
//! full: items come from a bounded channel; a final status (deadline,
//! shutdown, error) travels on a separate one-shot channel and is yielded
//! after the buffered items, so a cut-short stream never looks complete.
//!
//! The buffer is bounded by a number of items and, optionally, by the bytes
//! they hold: each item takes its size from a byte budget until the response
//! body hands it to tonic. Small messages can then be buffered deeply (fewer
//! task wake-ups per message) while large ones still hold little memory.
//! Depends only on tokio and tonic.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_stream::Stream;
use tonic::Status;

/// A streamed message (a page of records, a batch of events) is closed once
/// what it holds reaches this many encoded bytes: well under the 4 MiB
/// default message limit, whatever the sizes of its items.
pub(crate) const MESSAGE_BYTES: usize = 1024 * 1024;

/// An item in the buffer, with its share of the byte budget.
type Queued<T> = (T, Option<OwnedSemaphorePermit>);

/// The producer's side.
pub(crate) struct Producer<T> {
    /// The buffer, bounded by a number of items: when it is full the producer
    /// waits in `send` (or gets its item back from `try_send`) until the
    /// response body takes one, so a client that does not read stops only its
    /// own producer. Closed when the client goes away.
    items: mpsc::Sender<Queued<T>>,
    /// The final status, on its own one-shot so that it never waits for room
    /// in the buffer and still comes after every buffered item.
    end: oneshot::Sender<Status>,
    /// The byte budget and its size, when the buffer has one: each queued item
    /// holds permits for its encoded size until the body takes it, so the
    /// buffer also holds at most this many bytes (one larger item alone).
    budget: Option<(Arc<Semaphore>, usize)>,
}

/// Why [`Producer::try_send`] did not queue an item.
pub(crate) enum TrySend<T> {
    /// No room now: the item comes back.
    Full(T),
    /// The client is gone.
    Closed,
}

impl<T> Producer<T> {
    /// Ends the stream with `status` after the items already buffered;
    /// never waits for the client.
    pub(crate) fn fail(self, status: Status) {
        let _ = self.end.send(status);
    }

    /// Queues `item` (about `bytes` long when encoded) if there is room now.
    pub(crate) fn try_send(&self, item: T, bytes: usize) -> Result<(), TrySend<T>> {
        let permit = match &self.budget {
            None => None,
            Some((budget, size)) => {
                match Arc::clone(budget).try_acquire_many_owned(share(bytes, *size)) {
                    Ok(permit) => Some(permit),
                    Err(TryAcquireError::NoPermits) => return Err(TrySend::Full(item)),
                    Err(TryAcquireError::Closed) => return Err(TrySend::Closed),
                }
            }
        };
        self.items.try_send((item, permit)).map_err(|e| match e {
            mpsc::error::TrySendError::Full((item, _)) => TrySend::Full(item),
            mpsc::error::TrySendError::Closed(_) => TrySend::Closed,
        })
    }

    /// Resolves when the client is gone.
    pub async fn closed(&self) {
        self.items.closed().await
    }

    /// Waits for room, then queues `item`; `Err` when the client is gone.
    pub async fn send(&self, item: T, bytes: usize) -> Result<(), ()> {
        let permit = match &self.budget {
            None => None,
            Some((budget, size)) => Some(
                Arc::clone(budget)
                    .acquire_many_owned(share(bytes, *size))
                    .await
                    .map_err(|_| ())?,
            ),
        };
        self.items.send((item, permit)).await.map_err(|_| ())
    }
}

/// The permits an item of `bytes` takes: never more than the whole budget,
/// so one item larger than the budget still goes through, alone.
fn share(bytes: usize, budget: usize) -> u32 {
    u32::try_from(bytes.clamp(1, budget.max(1))).unwrap_or(u32::MAX)
}

/// The response body handed to tonic.
pub(crate) struct Answer<T> {
    items: mpsc::Receiver<Queued<T>>,
    end: Option<oneshot::Receiver<Status>>,
}

/// A bounded producer/answer pair holding at most `capacity` items and, with
/// `budget_bytes`, items of at most that many bytes together.
pub(crate) fn channel<T>(capacity: usize, budget_bytes: Option<usize>) -> (Producer<T>, Answer<T>) {
    let (items, rx) = mpsc::channel(capacity.max(1));
    let (end, end_rx) = oneshot::channel();
    // Semaphore permits are u32-sized per acquire and usize in total.
    let budget = budget_bytes.map(|b| {
        let b = b.clamp(1, u32::MAX as usize);
        (Arc::new(Semaphore::new(b)), b)
    });
    (
        Producer { items, end, budget },
        Answer {
            items: rx,
            end: Some(end_rx),
        },
    )
}

impl<T> Stream for Answer<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.items.poll_recv(cx) {
            // The item's share of the byte budget is released here.
            Poll::Ready(Some((item, _permit))) => return Poll::Ready(Some(Ok(item))),
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {}
        }
        let Some(end) = self.end.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(end).poll(cx) {
            Poll::Ready(Ok(status)) => {
                self.end = None;
                Poll::Ready(Some(Err(status)))
            }
            Poll::Ready(Err(_)) => {
                self.end = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn the_byte_budget_holds_items_until_the_body_takes_them() {
        let (producer, mut answer) = channel::<&str>(100, Some(10));
        assert!(producer.try_send("a", 6).is_ok());
        // 6 + 6 > 10: no room until the first item is taken.
        assert!(matches!(producer.try_send("b", 6), Err(TrySend::Full("b"))));
        assert_eq!(answer.next().await.unwrap().unwrap(), "a");
        assert!(producer.try_send("b", 6).is_ok());
        assert_eq!(answer.next().await.unwrap().unwrap(), "b");
        // An item larger than the whole budget still goes, alone.
        assert!(producer.try_send("big", 1_000).is_ok());
        assert!(matches!(producer.try_send("c", 1), Err(TrySend::Full("c"))));
        assert_eq!(answer.next().await.unwrap().unwrap(), "big");
        producer.send("c", 1).await.unwrap();
        assert_eq!(answer.next().await.unwrap().unwrap(), "c");
        // The final status comes after the buffered items.
        producer.try_send("d", 1).ok();
        producer.fail(Status::unavailable("stop"));
        assert_eq!(answer.next().await.unwrap().unwrap(), "d");
        assert_eq!(
            answer.next().await.unwrap().unwrap_err().code(),
            tonic::Code::Unavailable
        );
        assert!(answer.next().await.is_none());
    }

    #[tokio::test]
    async fn the_item_count_bounds_the_buffer_too() {
        let (producer, _answer) = channel::<u8>(2, Some(1_000_000));
        assert!(producer.try_send(1, 1).is_ok());
        assert!(producer.try_send(2, 1).is_ok());
        assert!(matches!(producer.try_send(3, 1), Err(TrySend::Full(3))));
    }
}
