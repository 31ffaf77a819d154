//! A server-stream body that ends with a status even when its buffer is
//! full: items come from a bounded channel; a final status (deadline,
//! shutdown, error) travels on a separate one-shot channel and is yielded
//! after the buffered items, so a cut-short stream never looks complete.
//! Depends only on tokio and tonic.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tonic::Status;

/// The producer's side.
pub struct Producer<T> {
    pub items: mpsc::Sender<Result<T, Status>>,
    end: oneshot::Sender<Status>,
}

impl<T> Producer<T> {
    /// Ends the stream with `status` after the items already buffered;
    /// never waits for the client.
    pub fn fail(self, status: Status) {
        let _ = self.end.send(status);
    }
}

/// The response body handed to tonic.
pub struct Answer<T> {
    items: mpsc::Receiver<Result<T, Status>>,
    end: Option<oneshot::Receiver<Status>>,
}

/// A bounded producer/answer pair holding at most `capacity` items.
pub fn channel<T>(capacity: usize) -> (Producer<T>, Answer<T>) {
    let (items, rx) = mpsc::channel(capacity.max(1));
    let (end, end_rx) = oneshot::channel();
    (
        Producer { items, end },
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
            Poll::Ready(Some(item)) => return Poll::Ready(Some(item)),
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
