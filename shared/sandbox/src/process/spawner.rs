//! One long-lived spawner thread per slot; every clone of the slot happens on it.
//!
//! * The parent-death signal of a child fires when the *thread* that cloned it exits. Spawner
//!   threads live as long as the sandbox, so if the service dies, the kernel SIGKILLs every
//!   sandbox it started.
//! * On cgroup v1 a single thread can belong to a cgroup: the spawner sits in its slot's
//!   cgroups and children inherit them at clone. Moving each child instead takes the global
//!   threadgroup rwsem for writing, which waits for an RCU grace period (5–15 ms stalls in about
//!   a third of the runs on a small VM).
//! * The clone (namespace creation, page-table copy) stays off the async workers.

use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::child::{self, ChildPlan, Started};
use crate::sys;

struct Job {
    plan: ChildPlan,
    reply: oneshot::Sender<std::io::Result<Started>>,
}

#[derive(Debug)]
pub(super) struct Spawner {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// Kernel thread id, for cgroup v1 `tasks` files.
    pub(super) tid: libc::pid_t,
}

impl Spawner {
    pub(super) fn start(slot: usize) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (tid_tx, tid_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("sandbox-slot-{slot}"))
            // The child runs child_main on a copy of this stack; it needs little.
            .stack_size(256 * 1024)
            .spawn(move || {
                let _ = tid_tx.send(sys::gettid());
                for job in rx {
                    let result = child::spawn(&job.plan);
                    // Dropping the plan closes the parent's copies of the child's descriptors.
                    drop(job.plan);
                    let _ = job.reply.send(result);
                }
            })?;
        let tid = tid_rx
            .recv()
            .map_err(|_| std::io::Error::other("spawner thread died at start"))?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
            tid,
        })
    }

    /// Clones the child described by `plan` on this slot's thread.
    pub(super) async fn spawn(&self, plan: ChildPlan) -> std::io::Result<Started> {
        let (reply, answer) = oneshot::channel();
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| std::io::Error::other("spawner stopped"))?;
        jobs.send(Job { plan, reply })
            .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
        answer
            .await
            .map_err(|_| std::io::Error::other("spawner thread stopped"))?
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; joining makes sure it has left its
        // cgroups before they are removed.
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
