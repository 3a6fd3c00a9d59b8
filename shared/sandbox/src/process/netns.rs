//! One empty network namespace per slot, created once and entered by each run of the slot.
//!
//! Creating a network namespace per run is cheap on its own, but its asynchronous teardown holds
//! the rtnl lock while it waits for RCU grace periods, and the next run's creation queues behind
//! it: 5–25 ms stalls on a small VM. Reusing one namespace per slot is safe because a slot's runs
//! are strictly sequential and every process of a run is dead (its cgroup verified empty) before
//! the slot is handed out again, so no socket survives into the next run; the namespace only has
//! a loopback device that is down and that an unprivileged sandbox cannot bring up.

use std::fs::File;
use std::os::fd::OwnedFd;

use crate::sys;

/// Creates `count` empty network namespaces, returned as namespace file descriptors.
pub(super) fn create(count: usize) -> std::io::Result<Vec<OwnedFd>> {
    // unshare switches the calling thread's namespace, so do it on a throw-away thread.
    std::thread::Builder::new()
        .name("sandbox-netns".into())
        .spawn(move || {
            let mut namespaces = Vec::with_capacity(count);
            for _ in 0..count {
                sys::unshare(libc::CLONE_NEWNET).map_err(std::io::Error::from_raw_os_error)?;
                namespaces.push(OwnedFd::from(File::open("/proc/thread-self/ns/net")?));
            }
            Ok(namespaces)
        })?
        .join()
        .map_err(|_| std::io::Error::other("network namespace thread panicked"))?
}
