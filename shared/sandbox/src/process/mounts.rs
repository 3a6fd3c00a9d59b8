//! The sandbox's file system, as a list of operations.
//!
//! The parent builds the whole list (every path as a ready `CString`, every file's bytes) before
//! `clone`; the child only walks it with raw system calls. Layout seen by the sandboxed program:
//!
//! ```text
//! /usr (and /bin, /lib*, /sbin as on the host)   read-only, nosuid, nodev bind mounts
//! /box                                           the request's files, read-only
//! /opt/…                                         extra read-only tool binds (ruff, site-packages)
//! /etc/passwd, /etc/group                        one line for the sandbox user
//! /tmp, /dev/shm                                 size-limited tmpfs
//! /dev/{null,zero,full,random,urandom}           bind mounts of the host devices
//! /proc                                          a fresh proc for the new PID namespace
//! ```
//! There is no /sys. After `pivot_root` the root itself is remounted read-only.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::path::Path;

use libc::c_ulong;

use crate::sys;

/// What to bind read-only into the sandbox in addition to the runtime trees.
#[derive(Debug, Clone)]
pub struct ExtraBind {
    /// Absolute host path (file or directory).
    pub host: std::path::PathBuf,
    /// Absolute path inside the sandbox, e.g. `/opt/ruff/ruff`.
    pub inside: String,
}

/// One file written under `/box` before the root becomes read-only.
#[derive(Debug, Clone)]
pub struct SandboxFile {
    /// Relative path below `/box`, already validated (no `..`, no absolute path).
    pub path: String,
    /// The file's bytes.
    pub contents: Vec<u8>,
}

#[derive(Debug)]
pub(super) enum MountOp {
    Mkdir {
        path: CString,
        mode: u32,
    },
    /// `keep`: flags of the source mount that the read-only remount must repeat (in a user
    /// namespace the kernel refuses to change locked ones, such as the atime mode).
    BindRo {
        src: CString,
        dst: CString,
        keep: c_ulong,
    },
    BindDevice {
        src: CString,
        dst: CString,
        keep: c_ulong,
    },
    Tmpfs {
        dst: CString,
        data: CString,
    },
    Proc {
        dst: CString,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    File {
        path: CString,
        contents: Vec<u8>,
        mode: u32,
    },
    RemountRo {
        path: CString,
        flags: c_ulong,
    },
}

/// Identifies the failing step in the child's error report.
pub(super) const STEP_MOUNT_OP: u32 = 100;

/// Host directories bound read-only when they are directories, or recreated as the same
/// symlink when they are symlinks (merged-/usr hosts).
const RUNTIME_TREES: &[&str] = &["usr", "bin", "lib", "lib64", "lib32", "libx32", "sbin"];
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];
const RO_FLAGS: c_ulong = libc::MS_NOSUID | libc::MS_NODEV;

#[derive(Debug)]
pub(super) struct PlanError(pub(super) String);

fn keep_flags(src: &CString) -> Result<c_ulong, PlanError> {
    sys::mount_flags_of(src).map_err(|e| {
        PlanError(format!(
            "statvfs {src:?}: {}",
            std::io::Error::from_raw_os_error(e)
        ))
    })
}

fn cstr(s: &str) -> Result<CString, PlanError> {
    CString::new(s).map_err(|_| PlanError(format!("path contains NUL: {s:?}")))
}

/// Inputs for one plan.
pub(super) struct PlanInput<'a> {
    /// Host path of the (empty) directory the new root tmpfs is mounted on.
    pub(super) root: &'a Path,
    pub(super) files: &'a [SandboxFile],
    pub(super) binds: &'a [ExtraBind],
    pub(super) tmp_bytes: u64,
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// Builds the operations that populate the root tmpfs (mounted by the child at `input.root`),
/// in the order the child applies them: the runtime trees, /dev, /tmp, /proc, the identity
/// files, the request's files and the extra binds.
pub(super) fn plan(input: &PlanInput<'_>) -> Result<Vec<MountOp>, PlanError> {
    let root = input
        .root
        .to_str()
        .ok_or_else(|| PlanError("root path is not UTF-8".into()))?;
    let mut planner = Planner {
        root,
        ops: Vec::with_capacity(48),
        dirs: BTreeSet::new(),
    };
    planner.runtime_trees()?;
    planner.dev(input.tmp_bytes)?;
    planner.tmp_and_proc(input.tmp_bytes)?;
    planner.identity(input.uid, input.gid)?;
    planner.box_files(input.files)?;
    planner.binds(input.binds)?;
    Ok(planner.ops)
}

/// The plan being built: operations so far and the directories they create (so each is made
/// once, parents first).
struct Planner<'a> {
    root: &'a str,
    ops: Vec<MountOp>,
    dirs: BTreeSet<String>,
}

impl Planner<'_> {
    /// `p` below the new root, on the host side (where the child mounts it before pivot_root).
    fn at(&self, p: &str) -> Result<CString, PlanError> {
        cstr(&format!("{}/{}", self.root, p.trim_start_matches('/')))
    }

    /// Creates `path` and every missing parent (like `mkdir -p`).
    fn mkdir_p(&mut self, path: &str, mode: u32) -> Result<(), PlanError> {
        let mut cur = String::new();
        for part in path.trim_matches('/').split('/').filter(|p| !p.is_empty()) {
            cur.push('/');
            cur.push_str(part);
            if self.dirs.insert(cur.clone()) {
                let path = self.at(&cur)?;
                self.ops.push(MountOp::Mkdir { path, mode });
            }
        }
        Ok(())
    }

    /// The host's runtime trees: directories bound read-only, symlinks (merged /usr) recreated.
    fn runtime_trees(&mut self) -> Result<(), PlanError> {
        for tree in RUNTIME_TREES {
            let host = Path::new("/").join(tree);
            let Ok(meta) = std::fs::symlink_metadata(&host) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&host)
                    .map_err(|e| PlanError(format!("readlink {}: {e}", host.display())))?;
                let target = target
                    .to_str()
                    .ok_or_else(|| PlanError("non-UTF-8 link".into()))?;
                let link = self.at(tree)?;
                self.ops.push(MountOp::Symlink {
                    target: cstr(target)?,
                    link,
                });
            } else if meta.is_dir() {
                self.mkdir_p(tree, 0o755)?;
                let src = cstr(&format!("/{tree}"))?;
                let dst = self.at(tree)?;
                self.ops.push(MountOp::BindRo {
                    keep: keep_flags(&src)?,
                    src,
                    dst,
                });
            }
        }
        Ok(())
    }

    /// /dev: a small tmpfs with the harmless devices, the stdio links and /dev/shm, then
    /// read-only (only /dev/shm below it stays writable).
    fn dev(&mut self, tmp_bytes: u64) -> Result<(), PlanError> {
        self.mkdir_p("dev", 0o755)?;
        let dst = self.at("dev")?;
        self.ops.push(MountOp::Tmpfs {
            dst,
            data: cstr("size=64k,nr_inodes=64,mode=0755")?,
        });
        for dev in DEVICES {
            let dst = self.at(&format!("dev/{dev}"))?;
            self.ops.push(MountOp::File {
                path: dst.clone(),
                contents: Vec::new(),
                mode: 0o666,
            });
            let src = cstr(&format!("/dev/{dev}"))?;
            self.ops.push(MountOp::BindDevice {
                keep: keep_flags(&src)?,
                src,
                dst,
            });
        }
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            let link = self.at(&format!("dev/{name}"))?;
            self.ops.push(MountOp::Symlink {
                target: cstr(target)?,
                link,
            });
        }
        let shm = self.at("dev/shm")?;
        self.ops.push(MountOp::Mkdir {
            path: shm.clone(),
            mode: 0o755,
        });
        self.ops.push(MountOp::Tmpfs {
            dst: shm,
            data: sized(tmp_bytes)?,
        });
        let path = self.at("dev")?;
        self.ops.push(MountOp::RemountRo {
            path,
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        });
        Ok(())
    }

    /// /tmp (the only writable place besides /dev/shm) and a fresh /proc for the new PID
    /// namespace.
    fn tmp_and_proc(&mut self, tmp_bytes: u64) -> Result<(), PlanError> {
        self.mkdir_p("tmp", 0o755)?;
        let dst = self.at("tmp")?;
        self.ops.push(MountOp::Tmpfs {
            dst,
            data: sized(tmp_bytes)?,
        });
        self.mkdir_p("proc", 0o555)?;
        let dst = self.at("proc")?;
        self.ops.push(MountOp::Proc { dst });
        Ok(())
    }

    /// Identity files, so tools that look up the current user get an answer.
    fn identity(&mut self, uid: u32, gid: u32) -> Result<(), PlanError> {
        self.mkdir_p("etc", 0o755)?;
        let passwd = format!("sandbox:x:{uid}:{gid}:sandbox:/tmp:/bin/sh\n");
        let group = format!("sandbox:x:{gid}:\n");
        for (name, contents) in [("etc/passwd", passwd), ("etc/group", group)] {
            let path = self.at(name)?;
            self.ops.push(MountOp::File {
                path,
                contents: contents.into_bytes(),
                mode: 0o644,
            });
        }
        Ok(())
    }

    /// The request's files under /box (paths checked to stay below it).
    fn box_files(&mut self, files: &[SandboxFile]) -> Result<(), PlanError> {
        self.mkdir_p("box", 0o755)?;
        for file in files {
            let rel = checked_relative(&file.path)?;
            if let Some((parent, _)) = rel.rsplit_once('/') {
                self.mkdir_p(&format!("box/{parent}"), 0o755)?;
            }
            let path = self.at(&format!("box/{rel}"))?;
            self.ops.push(MountOp::File {
                path,
                contents: file.contents.clone(),
                mode: 0o644,
            });
        }
        Ok(())
    }

    /// Extra read-only binds (tools); a file bind needs an empty file to mount over.
    fn binds(&mut self, binds: &[ExtraBind]) -> Result<(), PlanError> {
        for bind in binds {
            let inside = checked_absolute(&bind.inside)?;
            let meta = std::fs::metadata(&bind.host)
                .map_err(|e| PlanError(format!("bind source {}: {e}", bind.host.display())))?;
            let host = bind
                .host
                .to_str()
                .ok_or_else(|| PlanError("non-UTF-8 bind".into()))?;
            if meta.is_dir() {
                self.mkdir_p(inside, 0o755)?;
            } else {
                if let Some((parent, _)) = inside.rsplit_once('/') {
                    self.mkdir_p(parent, 0o755)?;
                }
                let path = self.at(inside)?;
                self.ops.push(MountOp::File {
                    path,
                    contents: Vec::new(),
                    mode: 0o644,
                });
            }
            let src = cstr(host)?;
            let dst = self.at(inside)?;
            self.ops.push(MountOp::BindRo {
                keep: keep_flags(&src)?,
                src,
                dst,
            });
        }
        Ok(())
    }
}

/// Mount data of a size-limited, world-writable tmpfs (/tmp, /dev/shm).
fn sized(bytes: u64) -> Result<CString, PlanError> {
    cstr(&format!("size={bytes},nr_inodes=16384,mode=1777"))
}

/// Every segment a plain name: no empty segment, no `.` or `..` (Path::components would
/// silently normalise `a/./b`, so the check works on the string).
fn plain_segments(path: &str) -> bool {
    path.split('/')
        .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

pub(super) fn checked_relative(path: &str) -> Result<&str, PlanError> {
    if !path.is_empty() && plain_segments(path) {
        Ok(path)
    } else {
        Err(PlanError(format!("unsafe file path {path:?}")))
    }
}

fn checked_absolute(path: &str) -> Result<&str, PlanError> {
    match path.strip_prefix('/') {
        Some(rest) if !rest.is_empty() && plain_segments(rest) => Ok(path),
        _ => Err(PlanError(format!("unsafe bind target {path:?}"))),
    }
}

/// Applies one operation. Runs in the clone child: raw system calls only, no allocation.
pub(super) fn apply(op: &MountOp) -> sys::SysResult {
    match op {
        MountOp::Mkdir { path, mode } => sys::mkdir(path, *mode),
        MountOp::BindRo { src, dst, keep } => {
            // Not recursive: a read-only remount covers only the top mount, so a host submount
            // below a bound tree would stay writable; without MS_REC it shows as an empty dir.
            sys::mount(Some(src), dst, None, libc::MS_BIND, None)?;
            // A bind mount ignores MS_RDONLY on creation; read-only needs a remount.
            let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | RO_FLAGS | *keep;
            sys::mount(None, dst, None, flags, None)
        }
        MountOp::BindDevice { src, dst, keep } => {
            sys::mount(Some(src), dst, None, libc::MS_BIND, None)?;
            let flags =
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NOEXEC | *keep;
            sys::mount(None, dst, None, flags, None)
        }
        MountOp::Tmpfs { dst, data } => {
            sys::mount(Some(c"tmpfs"), dst, Some(c"tmpfs"), RO_FLAGS, Some(data))
        }
        MountOp::Proc { dst } => {
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            sys::mount(Some(c"proc"), dst, Some(c"proc"), flags, None)
        }
        MountOp::Symlink { target, link } => sys::symlink(target, link),
        MountOp::File {
            path,
            contents,
            mode,
        } => {
            let fd = sys::create_file(path, *mode)? as i32;
            let written = sys::write_all(fd, contents);
            let _ = sys::close(fd);
            written
        }
        MountOp::RemountRo { path, flags } => {
            let all = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | *flags;
            sys::mount(None, path, None, all, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_must_stay_below_box() {
        assert!(checked_relative("pkg/mod.py").is_ok());
        for bad in ["", "/etc/passwd", "../x.py", "a/../../x", "a/./b", "dir/"] {
            assert!(checked_relative(bad).is_err(), "{bad:?} accepted");
        }
        assert!(checked_absolute("/opt/ruff/ruff").is_ok());
        for bad in ["opt/x", "/", "/opt/../etc"] {
            assert!(checked_absolute(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn plan_has_no_sys_and_mounts_proc_tmp_and_box_files() {
        let files = [SandboxFile {
            path: "a/b.py".into(),
            contents: b"x".to_vec(),
        }];
        let ops = plan(&PlanInput {
            root: Path::new("/r"),
            files: &files,
            binds: &[],
            tmp_bytes: 1 << 20,
            uid: 60001,
            gid: 60001,
        })
        .expect("plan");
        let text = format!("{ops:?}");
        assert!(!text.contains("\"/r/sys\""), "no /sys");
        assert!(text.contains("\"/r/proc\""));
        assert!(text.contains("\"/r/box/a/b.py\""));
        assert!(text.contains("size=1048576"));
        let passwd = ops.iter().find_map(|op| match op {
            MountOp::File { path, contents, .. } if path.to_bytes().ends_with(b"etc/passwd") => {
                Some(contents)
            }
            _ => None,
        });
        assert!(
            String::from_utf8_lossy(passwd.expect("passwd written"))
                .contains("sandbox:x:60001:60001")
        );
    }
}
