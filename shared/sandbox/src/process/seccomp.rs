//! The seccomp-BPF policy, compiled once in the parent and installed by the child with one
//! `prctl` per program right before `execve`.
//!
//! It is a deny-list: interpreters need a broad, version-dependent set of system calls, so an
//! allow-list would break on every runtime upgrade. What is denied is what gives kernel attack
//! surface or a way out of the namespaces: mount-family calls, namespace creation and entry,
//! tracing, BPF, keyrings, io_uring, module and kexec loading, and sockets other than AF_UNIX
//! (asyncio and multiprocessing need AF_UNIX socketpairs).

use std::collections::BTreeMap;

use libc::sock_filter;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// The compiled programs, in installation order.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(super) programs: Vec<Vec<libc::sock_filter>>,
}

/// System calls refused outright with EPERM.
const DENIED: &[libc::c_long] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_pidfd_getfd,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
];

/// Namespace flags a `clone` inside the sandbox may not use.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
];

/// Errors while compiling the policy (a programming error, reported at start-up).
#[derive(Debug, thiserror::Error)]
#[error("seccomp policy does not compile: {0}")]
pub(crate) struct PolicyError(String);

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, PolicyError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| PolicyError(e.to_string()))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, PolicyError> {
    SeccompRule::new(conditions).map_err(|e| PolicyError(e.to_string()))
}

/// Builds the policy for the architecture this binary runs on.
pub(crate) fn build() -> Result<Policy, PolicyError> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| PolicyError(e.to_string()))?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in DENIED {
        // An empty rule list matches the call unconditionally.
        rules.insert(*nr, Vec::new());
    }
    // Sockets: only AF_UNIX.
    let not_unix = || -> Result<Vec<SeccompRule>, PolicyError> {
        Ok(vec![rule(vec![cond(
            0,
            SeccompCmpOp::Ne,
            libc::AF_UNIX as u64,
        )?])?])
    };
    rules.insert(libc::SYS_socket, not_unix()?);
    rules.insert(libc::SYS_socketpair, not_unix()?);
    // clone with any namespace flag (threads and plain forks stay allowed).
    let mut clone_rules = Vec::new();
    for flag in NAMESPACE_FLAGS {
        let flag = *flag as u64;
        clone_rules.push(rule(vec![cond(0, SeccompCmpOp::MaskedEq(flag), flag)?])?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    // personality: only the query and the default persona (no ADDR_NO_RANDOMIZE & co.).
    rules.insert(
        libc::SYS_personality,
        vec![rule(vec![
            cond(0, SeccompCmpOp::Ne, 0)?,
            cond(0, SeccompCmpOp::Ne, 0xffff_ffff)?,
        ])?],
    );
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| PolicyError(e.to_string()))?;
    let main: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| PolicyError(e.to_string()))?;
    let to_libc = |p: BpfProgram| -> Vec<libc::sock_filter> {
        p.into_iter()
            .map(|f| libc::sock_filter {
                code: f.code,
                jt: f.jt,
                jf: f.jf,
                k: f.k,
            })
            .collect()
    };
    Ok(Policy {
        programs: vec![to_libc(main), extra_program()],
    })
}

// Classic BPF opcodes and seccomp_data offsets used by the hand-written program.
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// A second, hand-written program for what seccompiler cannot express:
/// * `clone3` answers ENOSYS (its flags live in user memory, where BPF cannot look), which makes
///   glibc and others fall back to `clone`, whose flags the main program checks;
/// * on x86_64 every x32-ABI call number (bit 30 set) answers ENOSYS, so the deny-list cannot be
///   bypassed through the x32 aliases of the same calls.
fn extra_program() -> Vec<sock_filter> {
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let allow = libc::SECCOMP_RET_ALLOW;
    let kill = libc::SECCOMP_RET_KILL_PROCESS;
    vec![
        stmt(LD_W_ABS, OFFSET_ARCH),
        jump(JEQ_K, audit_arch(), 1, 0),
        stmt(RET_K, kill),
        stmt(LD_W_ABS, OFFSET_NR),
        jump(JGE_K, 0x4000_0000, 2, 0),
        jump(JEQ_K, libc::SYS_clone3 as u32, 1, 0),
        stmt(RET_K, allow),
        stmt(RET_K, enosys),
    ]
}

#[cfg(target_arch = "x86_64")]
fn audit_arch() -> u32 {
    0xC000_003E // AUDIT_ARCH_X86_64
}

#[cfg(target_arch = "aarch64")]
fn audit_arch() -> u32 {
    0xC000_00B7 // AUDIT_ARCH_AARCH64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_compiles_to_two_programs() {
        let policy = build().expect("policy builds");
        assert_eq!(policy.programs.len(), 2);
        assert!(
            policy.programs[0].len() > DENIED.len(),
            "every denied call has a check"
        );
        assert!(
            policy.programs.iter().all(|p| p.len() < 4096),
            "within the BPF size limit"
        );
    }
}
