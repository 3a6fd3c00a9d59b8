//! The background task: batch, send, spool on failure, replay with backoff.
//!
//! Two modes. Normal (spool and overflow empty): gather a batch (up to `batch_max_events`,
//! waiting at most `batch_delay_ms`, not at all once a required event or a flush is in it),
//! send it; if that fails for any reason but INVALID_ARGUMENT, spool it and switch modes.
//! Replay (something is waiting): new events go straight to the end of the spool (so order
//! holds and `record_required` returns quickly), and when the backoff timer fires the oldest
//! spooled batch is sent; success advances the spool and retries immediately, failure waits
//! `U(0, min(max, base·2^n))`. Back to normal once everything is delivered.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};
use umcp_proto::audit::v1::audit_service_client::AuditServiceClient;
use umcp_proto::audit::v1::{AuditEvent, RecordRequest};

use crate::spool::{AppendError, Spool};
use crate::{
    Ack, AuditClientConfig, AuditClientError, Counters, Item, MAX_BATCH_BYTES, TokenProvider,
};
use umcp_resilience::retry::{Attempts, Backoff};

/// Events and who waits for them.
#[derive(Debug, Default)]
struct Batch {
    events: Vec<AuditEvent>,
    /// Parallel to `events`: the ack of a required event.
    acks: Vec<Option<Ack>>,
    flushes: Vec<Ack>,
    urgent: bool,
    /// Encoded size of `events`.
    bytes: usize,
}

impl Batch {
    fn answer(self, result: &Result<(), AuditClientError>) {
        for ack in self.acks.into_iter().flatten() {
            let _ = ack.send(result.clone());
        }
        for ack in self.flushes {
            let _ = ack.send(result.clone());
        }
    }
}

#[derive(Debug)]
pub(crate) struct Pump {
    config: AuditClientConfig,
    client: AuditServiceClient<Channel>,
    tokens: Arc<dyn TokenProvider>,
    spool: Arc<Mutex<Spool>>,
    spool_empty: bool,
    counters: Arc<Counters>,
    rx: mpsc::UnboundedReceiver<Item>,
    /// Events from `record` that did not fit into a full spool, oldest first.
    overflow: VecDeque<AuditEvent>,
    backoff: Attempts,
    next_retry: Instant,
    closing: bool,
}

impl Pump {
    pub(crate) fn new(
        config: AuditClientConfig,
        channel: Channel,
        tokens: Arc<dyn TokenProvider>,
        spool: Spool,
        counters: Arc<Counters>,
        rx: mpsc::UnboundedReceiver<Item>,
    ) -> Self {
        let backoff = Attempts::new(Backoff {
            base: Duration::from_millis(config.retry_base_ms),
            cap: Duration::from_millis(config.retry_max_ms),
        });
        Self {
            spool_empty: spool.is_empty(),
            config,
            client: AuditServiceClient::new(channel),
            tokens,
            spool: Arc::new(Mutex::new(spool)),
            counters,
            rx,
            overflow: VecDeque::new(),
            backoff,
            next_retry: Instant::now(),
            closing: false,
        }
    }

    fn waiting(&self) -> bool {
        !self.spool_empty || !self.overflow.is_empty()
    }

    pub(crate) async fn run(mut self) {
        loop {
            if self.waiting() {
                tokio::select! {
                    item = self.rx.recv(), if !self.closing => {
                        let mut batch = Batch::default();
                        match item {
                            Some(item) => self.push(&mut batch, item),
                            None => self.closing = true,
                        }
                        self.drain_ready(&mut batch, usize::MAX);
                        self.spool_batch(batch).await;
                    }
                    () = tokio::time::sleep_until(self.next_retry) => {
                        if self.replay_once().await {
                            self.backoff.reset();
                            self.next_retry = Instant::now();
                            if !self.waiting() {
                                tracing::info!("audit spool drained; the audit service is reachable again");
                            }
                        } else {
                            self.next_retry = Instant::now() + self.backoff.next_delay();
                        }
                    }
                }
                if self.closing {
                    break;
                }
            } else {
                let batch = self.gather().await;
                if !batch.events.is_empty() {
                    self.deliver(batch).await;
                } else {
                    batch.answer(&Ok(()));
                }
                if self.closing {
                    break;
                }
            }
        }
        self.finish().await;
    }

    /// At close: spool whatever other clones still queued, and account for anything that
    /// cannot be kept.
    async fn finish(&mut self) {
        self.rx.close();
        loop {
            let mut batch = Batch::default();
            self.drain_ready(&mut batch, self.config.batch_max_events);
            if batch.events.is_empty() && batch.flushes.is_empty() {
                break;
            }
            self.spool_batch(batch).await;
        }
        if !self.overflow.is_empty() {
            let lost = self.overflow.len();
            self.dequeued(lost);
            self.counters
                .dropped
                .fetch_add(lost as u64, Ordering::Relaxed);
            tracing::error!(
                lost,
                "audit client closed while the spool was full; events lost"
            );
            self.overflow.clear();
        }
        if !self.spool_empty {
            tracing::info!(
                spool_bytes = self.counters.spool_bytes.load(Ordering::Relaxed),
                "audit client closed with events spooled; they are replayed on the next start"
            );
        }
    }

    fn push(&mut self, batch: &mut Batch, item: Item) {
        match item {
            Item::Event(event, ack) => {
                batch.urgent |= ack.is_some();
                batch.bytes += prost::Message::encoded_len(&*event);
                batch.events.push(*event);
                batch.acks.push(ack);
            }
            Item::Flush(ack) => {
                batch.urgent = true;
                batch.flushes.push(ack);
            }
            Item::Close => {
                batch.urgent = true;
                self.closing = true;
            }
        }
    }

    /// Takes whatever is already queued, up to `max` events in the batch.
    fn drain_ready(&mut self, batch: &mut Batch, max: usize) {
        while batch.events.len() < max && batch.bytes < MAX_BATCH_BYTES {
            match self.rx.try_recv() {
                Ok(item) => self.push(batch, item),
                Err(_) => break,
            }
        }
    }

    async fn gather(&mut self) -> Batch {
        let mut batch = Batch::default();
        let max = self.config.batch_max_events;
        match self.rx.recv().await {
            Some(item) => self.push(&mut batch, item),
            None => {
                self.closing = true;
                return batch;
            }
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.batch_delay_ms);
        while !batch.urgent && batch.events.len() < max && batch.bytes < MAX_BATCH_BYTES {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(item)) => self.push(&mut batch, item),
                Ok(None) => {
                    self.closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        self.drain_ready(&mut batch, max);
        batch
    }

    async fn send(&mut self, events: &[AuditEvent]) -> Result<(), Status> {
        let token = self.tokens.token().await?;
        let mut request = tonic::Request::new(RecordRequest {
            events: events.to_vec(),
        });
        request.set_timeout(Duration::from_millis(self.config.request_timeout_ms));
        let value = format!("Bearer {token}").parse().map_err(|_| {
            Status::unauthenticated("the token provider returned an unusable token")
        })?;
        request.metadata_mut().insert("authorization", value);
        self.client.record(request).await.map(|_| ())
    }

    fn delivered(&self, n: usize) {
        self.counters.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn dequeued(&self, n: usize) {
        self.counters.queued.fetch_sub(n as u64, Ordering::Relaxed);
    }

    /// Normal mode: send, or spool on failure.
    async fn deliver(&mut self, batch: Batch) {
        match self.send(&batch.events).await {
            Ok(()) => {
                self.delivered(batch.events.len());
                self.dequeued(batch.events.len());
                batch.answer(&Ok(()));
            }
            Err(status) if status.code() == Code::InvalidArgument => self.isolate(batch).await,
            Err(status) => {
                tracing::warn!(
                    code = ?status.code(),
                    message = status.message(),
                    "audit service unavailable; spooling events locally"
                );
                self.spool_batch(batch).await;
                self.next_retry = Instant::now() + self.backoff.next_delay();
            }
        }
    }

    /// A batch was refused as invalid: send events one by one so only the bad ones are lost
    /// (a producer bug, counted in `rejected`), and spool the rest if the service goes away.
    async fn isolate(&mut self, batch: Batch) {
        let Batch {
            events,
            acks,
            flushes,
            ..
        } = batch;
        let mut rest = Batch {
            flushes,
            ..Batch::default()
        };
        let mut failed = false;
        for (event, ack) in events.into_iter().zip(acks) {
            if failed {
                rest.events.push(event);
                rest.acks.push(ack);
                continue;
            }
            match self.send(std::slice::from_ref(&event)).await {
                Ok(()) => {
                    self.delivered(1);
                    self.dequeued(1);
                    if let Some(ack) = ack {
                        let _ = ack.send(Ok(()));
                    }
                }
                Err(status) if status.code() == Code::InvalidArgument => {
                    self.reject(&event, &status);
                    self.dequeued(1);
                    if let Some(ack) = ack {
                        let _ =
                            ack.send(Err(AuditClientError::Rejected(status.message().to_owned())));
                    }
                }
                Err(_) => {
                    failed = true;
                    rest.events.push(event);
                    rest.acks.push(ack);
                }
            }
        }
        if failed {
            self.spool_batch(rest).await;
            self.next_retry = Instant::now() + self.backoff.next_delay();
        } else {
            rest.answer(&Ok(()));
        }
    }

    fn reject(&self, event: &AuditEvent, status: &Status) {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            event_id = event.event_id,
            reason = status.message(),
            "the audit service rejected an event as invalid"
        );
    }

    /// Runs `f` on the spool off the async threads (it fsyncs), then refreshes the cached
    /// emptiness and the byte gauge. `None` when the blocking task failed.
    async fn with_spool<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Spool) -> R + Send + 'static,
    ) -> Option<R> {
        let spool = Arc::clone(&self.spool);
        let (result, empty, bytes) = tokio::task::spawn_blocking(move || {
            let mut spool = spool.lock();
            let result = f(&mut spool);
            (result, spool.is_empty(), spool.pending_bytes())
        })
        .await
        .ok()?;
        self.spool_empty = empty;
        self.counters.spool_bytes.store(bytes, Ordering::Relaxed);
        Some(result)
    }

    /// Appends a batch to the spool (behind anything in the overflow); required events that
    /// cannot be spooled fail closed.
    async fn spool_batch(&mut self, batch: Batch) {
        let Batch {
            events,
            acks,
            flushes,
            ..
        } = batch;
        if events.is_empty() {
            for ack in flushes {
                let _ = ack.send(Ok(()));
            }
            return;
        }
        let result = if self.overflow.is_empty() {
            let copy = events.clone();
            self.with_spool(move |s| s.append(&copy))
                .await
                .unwrap_or_else(|| Err(AppendError::Io(std::io::Error::other("spool task failed"))))
        } else {
            // Order: nothing may overtake what already waits in memory.
            Err(AppendError::Full {
                pending: 0,
                max: self.config.spool_max_bytes,
            })
        };
        match result {
            Ok(()) => {
                self.counters
                    .spooled
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                self.dequeued(events.len());
                Batch {
                    acks,
                    flushes,
                    ..Batch::default()
                }
                .answer(&Ok(()));
            }
            Err(error) => {
                let refusal = match error {
                    AppendError::Full { .. } => AuditClientError::SpoolFull,
                    AppendError::Io(e) => {
                        tracing::error!(error = %e, "cannot write the audit spool");
                        AuditClientError::SpoolFailed
                    }
                };
                for (event, ack) in events.into_iter().zip(acks) {
                    match ack {
                        // Fail closed: the audited operation is refused.
                        Some(ack) => {
                            self.dequeued(1);
                            let _ = ack.send(Err(refusal.clone()));
                        }
                        None if self.overflow.len() < self.config.memory_max_events => {
                            self.overflow.push_back(event);
                        }
                        None => {
                            self.dequeued(1);
                            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(
                                event_id = event.event_id,
                                "audit spool and memory buffer full; event dropped"
                            );
                        }
                    }
                }
                for ack in flushes {
                    let _ = ack.send(Err(refusal.clone()));
                }
            }
        }
    }

    /// Sends the oldest waiting batch; `true` when it was delivered.
    async fn replay_once(&mut self) -> bool {
        let max = self.config.batch_max_events;
        if !self.spool_empty {
            let Some(Ok((events, next))) =
                self.with_spool(move |s| s.peek(max, MAX_BATCH_BYTES)).await
            else {
                tracing::error!("cannot read the audit spool");
                return false;
            };
            let delivered = self.send_all(&events).await;
            if delivered.is_err() {
                return false;
            }
            if !matches!(
                self.with_spool(move |s| s.advance(next)).await,
                Some(Ok(()))
            ) {
                tracing::error!("cannot advance the audit spool cursor");
                return false;
            }
            self.refill().await;
            return true;
        }
        let take = self.overflow.len().min(max);
        let events: Vec<AuditEvent> = self.overflow.drain(..take).collect();
        match self.send_all(&events).await {
            Ok(()) => {
                self.dequeued(events.len());
                true
            }
            Err(()) => {
                for event in events.into_iter().rev() {
                    self.overflow.push_front(event);
                }
                false
            }
        }
    }

    /// Sends `events`, isolating invalid ones (rejected, not retried); `Err` when the service
    /// is unreachable.
    async fn send_all(&mut self, events: &[AuditEvent]) -> Result<(), ()> {
        match self.send(events).await {
            Ok(()) => {
                self.delivered(events.len());
                Ok(())
            }
            Err(status) if status.code() == Code::InvalidArgument => {
                for event in events {
                    match self.send(std::slice::from_ref(event)).await {
                        Ok(()) => self.delivered(1),
                        Err(status) if status.code() == Code::InvalidArgument => {
                            self.reject(event, &status);
                        }
                        Err(_) => return Err(()),
                    }
                }
                Ok(())
            }
            Err(status) => {
                tracing::debug!(code = ?status.code(), "audit replay attempt failed");
                Err(())
            }
        }
    }

    /// Moves events from memory into the spool as space frees up.
    async fn refill(&mut self) {
        while !self.overflow.is_empty() {
            let take = self.overflow.len().min(self.config.batch_max_events);
            let chunk: Vec<AuditEvent> = self.overflow.iter().take(take).cloned().collect();
            let n = chunk.len();
            match self.with_spool(move |s| s.append(&chunk)).await {
                Some(Ok(())) => {
                    self.overflow.drain(..n);
                    self.counters.spooled.fetch_add(n as u64, Ordering::Relaxed);
                    self.dequeued(n);
                }
                _ => break,
            }
        }
    }
}
