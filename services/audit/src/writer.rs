//! The single writer: group commit on a dedicated thread.
//!
//! Every `Record` call becomes a job on a bounded channel. The writer takes the first waiting
//! job and every other job already queued (up to [`GROUP_MAX_EVENTS`]), appends all their new
//! records with one write, makes them durable with one `fdatasync`, re-signs the checkpoint,
//! and only then publishes them (index, tail subscribers, the Ed25519 signer, which signs
//! later on its own thread) and answers every job. Concurrent
//! callers therefore share one fsync, and while one fsync runs the next group forms.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use umcp_proto::audit::v1::AuditEvent;

use crate::chain::{Checkpoint, CheckpointFile};
use crate::error::AuditError;
use crate::frame;
use crate::log::RecordOutcome;
use crate::shared::Shared;

/// Most events committed by one fsync.
pub(crate) const GROUP_MAX_EVENTS: usize = 8192;

/// One `Record` call waiting for the writer.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) events: Vec<(AuditEvent, u128)>,
    pub(crate) reply: Reply,
}

/// The writer's private state.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) file: File,
    pub(crate) checkpoint: CheckpointFile,
    pub(crate) end: u64,
    pub(crate) head_sequence: u64,
    pub(crate) head_hash: [u8; 32],
}

struct Staged {
    offset: u64,
    len: u32,
    event: Arc<AuditEvent>,
}

type Reply = oneshot::Sender<Result<RecordOutcome, AuditError>>;

/// A group's new records, chained and framed in memory, not yet written.
struct Batch {
    /// The framed records, appended at the log end with one write.
    buf: Vec<u8>,
    staged: Vec<Staged>,
    /// `(accepted, duplicates, reply)` of each job, in order.
    replies: Vec<(u32, u32, Reply)>,
    /// The head after this batch.
    sequence: u64,
    hash: [u8; 32],
}

impl Writer {
    /// Runs until every sender is gone.
    pub(crate) fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(first) = jobs.blocking_recv() {
            let mut group = vec![first];
            let mut events = group[0].events.len();
            while events < GROUP_MAX_EVENTS {
                match jobs.try_recv() {
                    Ok(job) => {
                        events += job.events.len();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
        tracing::info!("audit writer stopped");
    }

    /// Makes a group durable, then publishes it and answers every job.
    fn commit(&mut self, group: Vec<Job>) {
        if self.shared.failed.load(Ordering::Acquire) {
            for job in group {
                let _ = job.reply.send(Err(AuditError::StorageFailed));
            }
            return;
        }
        let batch = self.stage(group);
        if !batch.staged.is_empty() {
            if let Err(e) = self.write(&batch) {
                self.fail(&e, batch.replies);
                return;
            }
            self.advance(&batch);
        }
        self.shared.stats.record_commit(batch.staged.len());
        for s in batch.staged {
            // No receivers is fine; a lagging receiver is told so by its own stream.
            let _ = self.shared.tail.send(s.event);
        }
        for (accepted, duplicates, reply) in batch.replies {
            let _ = reply.send(Ok(RecordOutcome {
                accepted,
                duplicates,
                last_sequence: batch.sequence,
            }));
        }
    }

    /// Numbers, chains and frames the group's events after the head, skipping ids already
    /// stored or repeated within the group.
    fn stage(&self, group: Vec<Job>) -> Batch {
        let mut batch = Batch {
            buf: Vec::with_capacity(group.iter().map(|j| j.events.len() * 512).sum()),
            staged: Vec::new(),
            replies: Vec::with_capacity(group.len()),
            sequence: self.head_sequence,
            hash: self.head_hash,
        };
        let index = self.shared.index.read();
        let mut fresh: HashSet<u128> = HashSet::new();
        for job in group {
            let (mut accepted, mut duplicates) = (0u32, 0u32);
            for (mut event, id) in job.events {
                if index.contains_id(id) || !fresh.insert(id) {
                    duplicates += 1;
                    continue;
                }
                batch.sequence += 1;
                let sequence = batch.sequence;
                event.sequence = sequence;
                // The stored bytes carry no hash: it is computed over them.
                event.chain_hash.clear();
                let bytes = event.encode_to_vec();
                batch.hash = self.shared.key.link(&batch.hash, sequence, &bytes);
                let offset = self.end + batch.buf.len() as u64;
                frame::encode(&mut batch.buf, sequence, &batch.hash, &bytes);
                let len =
                    u32::try_from(self.end + batch.buf.len() as u64 - offset).unwrap_or(u32::MAX);
                event.chain_hash = hex::encode(batch.hash);
                batch.staged.push(Staged {
                    offset,
                    len,
                    event: Arc::new(event),
                });
                accepted += 1;
            }
            batch.replies.push((accepted, duplicates, job.reply));
        }
        batch
    }

    /// Appends the batch, syncs it and rewrites the MAC'd checkpoint, under the commit lock
    /// (so `Verify` sees a log end and a checkpoint of the same commit).
    fn write(&mut self, batch: &Batch) -> std::io::Result<()> {
        let _commit = self.shared.commit_lock.lock();
        let checkpoint = Checkpoint {
            sequence: batch.sequence,
            hash: batch.hash,
        };
        self.file
            .write_all_at(&batch.buf, self.end)
            .and_then(|()| self.file.sync_data())
            .and_then(|()| self.checkpoint.write(&self.shared.key, checkpoint))
    }

    /// After a failed write: refuse this batch and every later one.
    fn fail(&mut self, error: &std::io::Error, replies: Vec<(u32, u32, Reply)>) {
        // After a failed fsync the kernel may have dropped the dirty pages: nothing about the
        // file can be trusted any more. Fail closed until a restart re-verifies it (producers
        // spool meanwhile).
        tracing::error!(error = %error, "audit log write failed; refusing further writes");
        let _ = self.file.set_len(self.end);
        self.shared.failed.store(true, Ordering::Release);
        for (_, _, reply) in replies {
            let _ = reply.send(Err(AuditError::StorageFailed));
        }
    }

    /// After a durable write: move the head, index the records, tell the signer.
    fn advance(&mut self, batch: &Batch) {
        self.end += batch.buf.len() as u64;
        self.head_sequence = batch.sequence;
        self.head_hash = batch.hash;
        {
            let mut index = self.shared.index.write();
            for s in &batch.staged {
                index.push(s.offset, s.len, s.event.sequence, &s.event);
            }
        }
        self.shared.signer.committed(batch.sequence, batch.hash);
    }
}
