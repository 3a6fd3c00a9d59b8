//! The signing thread: signs the head every `every_events` events, or `interval` after the
//! first commit not yet covered, whichever comes first, and once more at shutdown. It runs
//! beside the writer rather than in it because a signature is cheap but the fsyncs of its file
//! are not: the commit path only records the new head and wakes this thread when a count is
//! due. An idle log is not re-signed.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::signed::{CheckpointKey, SignedCheckpoint, write_signed};

/// What the thread knows about the log.
#[derive(Debug)]
struct State {
    head_sequence: u64,
    head_hash: [u8; 32],
    signed: u64,
    /// When the oldest commit not yet signed was noticed.
    pending_since: Option<Instant>,
    stopping: bool,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Signer {
    key: CheckpointKey,
    dir: PathBuf,
    every_events: u64,
    interval: Duration,
    state: Mutex<State>,
    wake: Condvar,
    latest: RwLock<Option<SignedCheckpoint>>,
}

impl Signer {
    /// A signer whose latest checkpoint (from the file) is `latest`, for a log whose head is
    /// `head`.
    pub(crate) fn new(
        key: CheckpointKey,
        dir: PathBuf,
        every_events: u64,
        interval: Duration,
        latest: Option<SignedCheckpoint>,
        head: (u64, [u8; 32]),
    ) -> Self {
        Self {
            key,
            dir,
            every_events: every_events.max(1),
            interval,
            state: Mutex::new(State {
                head_sequence: head.0,
                head_hash: head.1,
                signed: latest.map_or(0, |cp| cp.sequence),
                pending_since: None,
                stopping: false,
            }),
            wake: Condvar::new(),
            latest: RwLock::new(latest),
        }
    }

    pub(crate) fn key(&self) -> &CheckpointKey {
        &self.key
    }

    /// The latest checkpoint this service signed (or found valid at start-up).
    pub(crate) fn latest(&self) -> Option<SignedCheckpoint> {
        *self.latest.read()
    }

    /// Signs `sequence`/`hash` now and stores it durably.
    ///
    /// # Errors
    /// Writing the checkpoint failed; the previous one stays.
    pub(crate) fn sign_now(&self, sequence: u64, hash: [u8; 32]) -> std::io::Result<()> {
        let cp = self.key.sign(sequence, hash, SystemTime::now());
        write_signed(&self.dir, &cp)?;
        *self.latest.write() = Some(cp);
        tracing::debug!(sequence, key_id = %self.key.key_id(), "audit checkpoint signed");
        Ok(())
    }

    /// Called by the writer after each durable commit.
    pub(crate) fn committed(&self, sequence: u64, hash: [u8; 32]) {
        let mut state = self.state.lock();
        state.head_sequence = sequence;
        state.head_hash = hash;
        // Wake the thread when a period starts (it then sleeps until its end) or the count is
        // reached; other commits only update the head.
        let starts = state.pending_since.is_none();
        state.pending_since.get_or_insert_with(Instant::now);
        if starts || sequence.saturating_sub(state.signed) >= self.every_events {
            self.wake.notify_one();
        }
    }

    /// Signs what is pending, then returns from [`Self::run`].
    pub(crate) fn stop(&self) {
        self.state.lock().stopping = true;
        self.wake.notify_one();
    }

    /// The thread's loop, until [`Self::stop`].
    pub(crate) fn run(&self) {
        let mut state = self.state.lock();
        loop {
            let pending = state.head_sequence > state.signed;
            let due = state.stopping
                || state.head_sequence.saturating_sub(state.signed) >= self.every_events
                || state
                    .pending_since
                    .is_some_and(|t| t.elapsed() >= self.interval);
            if pending && due {
                let (sequence, hash) = (state.head_sequence, state.head_hash);
                drop(state);
                let signed = self.sign_now(sequence, hash);
                state = self.state.lock();
                match signed {
                    Ok(()) => {
                        state.signed = sequence;
                        // Commits made while signing start a new period.
                        state.pending_since = (state.head_sequence > sequence).then(Instant::now);
                    }
                    Err(e) => {
                        // Commits go on (the MAC'd checkpoint still guards the log); try
                        // again one interval later.
                        tracing::error!(error = %e, sequence, "signing an audit checkpoint failed");
                        state.pending_since = Some(Instant::now());
                        if state.stopping {
                            break;
                        }
                    }
                }
                continue;
            }
            if state.stopping {
                break;
            }
            match state.pending_since {
                Some(since) => {
                    self.wake.wait_until(&mut state, since + self.interval);
                }
                None => self.wake.wait(&mut state),
            }
        }
        tracing::info!(signed = state.signed, "audit checkpoint signer stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signed::{SIGNED_FILE, SignedState, read_signed};
    use std::sync::Arc;

    fn start(dir: &std::path::Path, every: u64, interval: Duration) -> Arc<Signer> {
        let signer = Arc::new(Signer::new(
            CheckpointKey::from_seed([5; 32]),
            dir.to_path_buf(),
            every,
            interval,
            None,
            (0, [0; 32]),
        ));
        let thread = Arc::clone(&signer);
        std::thread::spawn(move || thread.run());
        signer
    }

    fn wait_for(signer: &Signer, sequence: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if signer.latest().is_some_and(|cp| cp.sequence == sequence) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn signs_after_n_events_after_t_and_at_stop() {
        let dir = tempfile::tempdir().unwrap();
        // By count: the interval is far away.
        let signer = start(dir.path(), 3, Duration::from_secs(3600));
        signer.committed(2, [2; 32]);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(signer.latest(), None, "not due yet");
        signer.committed(3, [3; 32]);
        assert!(wait_for(&signer, 3));
        // At stop: whatever is pending.
        signer.committed(4, [4; 32]);
        signer.stop();
        assert!(wait_for(&signer, 4));
        let vk = signer.key().verifying_key();
        let SignedState::Valid(cp) = read_signed(&dir.path().join(SIGNED_FILE), &vk).unwrap()
        else {
            panic!("no valid checkpoint on disk")
        };
        assert_eq!((cp.sequence, cp.hash), (4, [4; 32]));

        // By time: one event, far below the count.
        let dir = tempfile::tempdir().unwrap();
        let signer = start(dir.path(), 1000, Duration::from_millis(100));
        // Let the thread go to sleep with nothing pending first.
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        signer.committed(1, [1; 32]);
        assert!(wait_for(&signer, 1));
        assert!(started.elapsed() >= Duration::from_millis(100));
        signer.stop();
    }
}
