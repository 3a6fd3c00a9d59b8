//! `Tail`: replay matching history from the index, then follow live commits.
//!
//! Each stream is a task that feeds a bounded channel. Commits never wait for it: live events
//! reach it through a broadcast channel of `tail_buffer` events, and a consumer that falls
//! further behind has its stream ended with [`AuditError::TailLagged`], naming the sequence to
//! resume from (the last one examined, sent or filtered out).

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use umcp_proto::audit::v1::AuditEvent;

use crate::error::AuditError;
use crate::index::Filter;
use crate::log::TailEvents;
use crate::read;
use crate::shared::Shared;

/// Events replayed per read while a `Tail` catches up.
const REPLAY_CHUNK: usize = 256;
/// Messages buffered between a `Tail` task and the transport.
const STREAM_BUFFER: usize = 64;

type Sink = mpsc::Sender<Result<AuditEvent, AuditError>>;

/// Starts a tail of the events matching `filter` after `after_sequence` (0 = only events
/// committed after this call). The stream ends with [`AuditError::ShuttingDown`] at shutdown.
pub(crate) fn start(shared: &Arc<Shared>, filter: Filter, after_sequence: u64) -> TailEvents {
    // Subscribe before reading history, so nothing committed in between is missed.
    let live = shared.tail.subscribe();
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let stopping = shared.stopping();
    // "Only new" means after the head at the time of this call, fixed before returning.
    let (after, replay) = match after_sequence {
        0 => (shared.index.read().head(), false),
        after => (after, true),
    };
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        tokio::select! {
            () = run(shared, live, after, replay, filter, tx.clone()) => {}
            () = stopping => {
                let _ = tx.send(Err(AuditError::ShuttingDown)).await;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// Replays history after `after` (when `replay`), then forwards live commits after it.
async fn run(
    shared: Arc<Shared>,
    live: broadcast::Receiver<Arc<AuditEvent>>,
    after: u64,
    replay: bool,
    filter: Filter,
    tx: Sink,
) {
    let mut last = after;
    if replay {
        match replay_history(&shared, &filter, after, &tx).await {
            Some(examined) => last = examined,
            // The consumer is gone, or reading failed (and it was told).
            None => return,
        }
    }
    follow(&shared, live, last, &filter, &tx).await;
}

/// Sends the committed events matching `filter` after `after`, chunk by chunk, up to the
/// head. Returns the last sequence examined; `None` when the stream is over.
async fn replay_history(
    shared: &Arc<Shared>,
    filter: &Filter,
    after: u64,
    tx: &Sink,
) -> Option<u64> {
    let mut last = after;
    loop {
        // The index picks the matching records, so a narrow filter reads little.
        let (chunk, examined, at_head) = match read_chunk(shared, filter, last).await {
            Ok(read) => read,
            Err(e) => {
                let _ = tx.send(Err(e.logged())).await;
                return None;
            }
        };
        for event in chunk {
            if tx.send(Ok(event)).await.is_err() {
                return None;
            }
        }
        last = examined;
        // Everything after `last` is in the live receiver (subscribed before the replay).
        if at_head {
            return Some(last);
        }
    }
}

/// One replay chunk, read on a blocking thread (it reads the log file).
async fn read_chunk(
    shared: &Arc<Shared>,
    filter: &Filter,
    after: u64,
) -> Result<(Vec<AuditEvent>, u64, bool), AuditError> {
    let shared = Arc::clone(shared);
    let filter = filter.clone();
    tokio::task::spawn_blocking(move || read::read_after(&shared, &filter, after, REPLAY_CHUNK))
        .await
        .map_err(|e| AuditError::TaskFailed(format!("read task failed: {e}")))?
}

/// Forwards live commits after `last` that match `filter` until the consumer leaves, falls
/// more than the tail buffer behind, or the log closes.
async fn follow(
    shared: &Shared,
    mut live: broadcast::Receiver<Arc<AuditEvent>>,
    mut last: u64,
    filter: &Filter,
    tx: &Sink,
) {
    loop {
        let event = tokio::select! {
            received = live.recv() => received,
            () = tx.closed() => return,
        };
        match event {
            // Already sent by the replay.
            Ok(event) if event.sequence <= last => {}
            Ok(event) => {
                last = event.sequence;
                if filter.matches(&event) && tx.send(Ok((*event).clone())).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let error = AuditError::TailLagged {
                    buffer: shared.tail_buffer,
                    last_sent: last,
                };
                tracing::warn!(
                    last_sent = last,
                    "audit tail consumer too slow; ending its stream"
                );
                let _ = tx.send(Err(error)).await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
