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
use crate::store::Shared;

/// Most events committed by one fsync.
pub(crate) const GROUP_MAX_EVENTS: usize = 8192;

/// The result of one `Record` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordOutcome {
    /// Events newly committed.
    pub accepted: u32,
    /// Events whose id was already stored (or repeated within the call).
    pub duplicates: u32,
    /// Sequence of the last committed event in the log after this call.
    pub last_sequence: u64,
}

/// One `Record` call waiting for the writer.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) events: Vec<(AuditEvent, u128)>,
    pub(crate) reply: oneshot::Sender<Result<RecordOutcome, AuditError>>,
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

    fn commit(&mut self, group: Vec<Job>) {
        if self.shared.failed.load(Ordering::Acquire) {
            for job in group {
                let _ = job.reply.send(Err(AuditError::StorageFailed));
            }
            return;
        }
        let mut buf = Vec::with_capacity(group.iter().map(|j| j.events.len() * 512).sum());
        let mut staged: Vec<Staged> = Vec::new();
        let mut outcomes: Vec<(u32, u32, oneshot::Sender<_>)> = Vec::with_capacity(group.len());
        let mut sequence = self.head_sequence;
        let mut hash = self.head_hash;
        {
            let index = self.shared.index.read();
            let mut fresh: HashSet<u128> = HashSet::new();
            for job in group {
                let (mut accepted, mut duplicates) = (0u32, 0u32);
                for (mut event, id) in job.events {
                    if index.contains_id(id) || !fresh.insert(id) {
                        duplicates += 1;
                        continue;
                    }
                    sequence += 1;
                    event.sequence = sequence;
                    event.chain_hash.clear();
                    let bytes = event.encode_to_vec();
                    hash = self.shared.key.link(&hash, sequence, &bytes);
                    let offset = self.end + buf.len() as u64;
                    frame::encode(&mut buf, sequence, &hash, &bytes);
                    let len =
                        u32::try_from(self.end + buf.len() as u64 - offset).unwrap_or(u32::MAX);
                    event.chain_hash = hex::encode(hash);
                    staged.push(Staged {
                        offset,
                        len,
                        event: Arc::new(event),
                    });
                    accepted += 1;
                }
                outcomes.push((accepted, duplicates, job.reply));
            }
        }
        if !staged.is_empty() {
            let _commit = self.shared.commit_lock.lock();
            let written = self
                .file
                .write_all_at(&buf, self.end)
                .and_then(|()| self.file.sync_data())
                .and_then(|()| {
                    self.checkpoint
                        .write(&self.shared.key, Checkpoint { sequence, hash })
                });
            if let Err(e) = written {
                // After a failed fsync the kernel may have dropped the dirty pages: nothing
                // about the file can be trusted any more. Fail closed until a restart
                // re-verifies it (producers spool meanwhile).
                tracing::error!(error = %e, "audit log write failed; refusing further writes");
                let _ = self.file.set_len(self.end);
                self.shared.failed.store(true, Ordering::Release);
                for (_, _, reply) in outcomes {
                    let _ = reply.send(Err(AuditError::StorageFailed));
                }
                return;
            }
            self.end += buf.len() as u64;
            self.head_sequence = sequence;
            self.head_hash = hash;
            {
                let mut index = self.shared.index.write();
                for s in &staged {
                    index.push(s.offset, s.len, s.event.sequence, &s.event);
                }
            }
            self.shared.signer.committed(sequence, hash);
        }
        self.shared.stats.record_commit(staged.len());
        for s in staged {
            // No receivers is fine; a lagging receiver is told so by its own stream.
            let _ = self.shared.tail.send(s.event);
        }
        for (accepted, duplicates, reply) in outcomes {
            let _ = reply.send(Ok(RecordOutcome {
                accepted,
                duplicates,
                last_sequence: sequence,
            }));
        }
    }
}
