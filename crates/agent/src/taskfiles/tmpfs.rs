//! Where a node keeps its tasks' secret and config files: a tmpfs of its
//! own, so they live in memory and never reach a disk, outside the data
//! directory (which holds only sealed state). One directory per task,
//! holding each file at its target path; removed with the task.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::TaskFile;

/// statfs's f_type of a tmpfs, and of a ramfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;
/// The most the tmpfs may hold. Pages are used only as files are written.
const TMPFS_SIZE: &str = "256m";

/// A task's files once written, for its executor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFiles {
    /// The task's directory: its files sit there at their target paths
    /// (`<dir>/run/secrets/db`). None when the task has no files.
    pub dir: Option<PathBuf>,
    pub files: Vec<PlacedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedFile {
    /// Where it is on this host.
    pub host: PathBuf,
    /// Where it goes in the task.
    pub target: String,
}

/// The node's tmpfs for task files.
#[derive(Debug, Clone)]
pub struct TmpfsRoot {
    dir: PathBuf,
    /// The mount's source, which names the node's data directory: what
    /// `/proc/mounts` shows, so a test harness can tell whose it is.
    source: String,
}

impl TmpfsRoot {
    /// The tmpfs of the node whose data directory is `data_dir`: under
    /// /run/flotilla (or $XDG_RUNTIME_DIR/flotilla when /run is not
    /// writable), named after the directory so that two nodes of one host
    /// never share it and a restarted daemon finds its own again.
    pub fn for_data_dir(data_dir: &Path) -> TmpfsRoot {
        let name = format!(
            "files-{:016x}",
            fnv1a(data_dir.as_os_str().as_encoded_bytes())
        );
        let base = match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(run) if !is_root() => PathBuf::from(run).join("flotilla"),
            _ => PathBuf::from("/run/flotilla"),
        };
        TmpfsRoot {
            dir: base.join(name),
            source: format!("flotilla:{}", data_dir.display()),
        }
    }

    /// A root at `dir` (tests).
    pub fn at(dir: PathBuf, source: &str) -> TmpfsRoot {
        TmpfsRoot {
            dir,
            source: source.to_string(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a task's files (again: what is there already is rewritten
    /// only if it differs) and says where they are.
    pub fn place(&self, task_id: &str, files: &[TaskFile]) -> Result<TaskFiles, String> {
        if files.is_empty() {
            return Ok(TaskFiles::default());
        }
        self.ensure()?;
        let task_dir = self.task_dir(task_id)?;
        make_dir(&task_dir, 0o711)?;
        let mut placed = Vec::with_capacity(files.len());
        for file in files {
            let host = task_dir.join(file.target.trim_start_matches('/'));
            if let Some(parent) = host.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            write_file(&host, file)?;
            placed.push(PlacedFile {
                host,
                target: file.target.clone(),
            });
        }
        Ok(TaskFiles {
            dir: Some(task_dir),
            files: placed,
        })
    }

    /// Drops a task's files.
    pub fn remove(&self, task_id: &str) {
        let Ok(dir) = self.task_dir(task_id) else {
            return;
        };
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("removing the files of task {task_id}: {e}"),
        }
    }

    /// Drops the files of every task `keep` says no to (tasks gone while
    /// the daemon was down).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if let Some(task_id) = name.to_str().filter(|id| !keep(id)) {
                self.remove(task_id);
            }
        }
    }

    /// Drops everything and unmounts the tmpfs (the node leaves the swarm).
    pub fn clear(&self) {
        self.retain(|_| false);
        if is_tmpfs_mount_point(&self.dir) {
            let path = c_path(&self.dir);
            // SAFETY: a plain syscall on a NUL-terminated path we own.
            if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
                tracing::warn!(
                    "unmounting {}: {}",
                    self.dir.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }

    fn task_dir(&self, task_id: &str) -> Result<PathBuf, String> {
        let plain = !task_id.is_empty()
            && task_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !plain {
            return Err(format!("task ID {task_id:?} cannot name a directory"));
        }
        Ok(self.dir.join(task_id))
    }

    /// The directory exists and is a tmpfs: one is mounted there unless
    /// the directory already is on one.
    fn ensure(&self) -> Result<(), String> {
        make_dir(&self.dir, 0o711)?;
        if on_tmpfs(&self.dir) {
            return Ok(());
        }
        let target = c_path(&self.dir);
        let source = c_path(Path::new(&self.source));
        let options = std::ffi::CString::new(format!("mode=0711,size={TMPFS_SIZE}"))
            .map_err(|e| e.to_string())?;
        // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
        let mounted = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                options.as_ptr().cast(),
            )
        };
        if mounted != 0 {
            return Err(format!(
                "secrets and configs are kept only in memory, and {} is not a tmpfs: mounting one there failed: {}",
                self.dir.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))
}

/// Writes `file` at `path` with its owner and mode, unless it is there
/// already as it should be. A new version replaces the old one whole.
fn write_file(path: &Path, file: &TaskFile) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(meta), Ok(current)) = (std::fs::metadata(path), std::fs::read(path)) {
        if current == file.data
            && meta.uid() == file.uid
            && meta.gid() == file.gid
            && meta.mode() & 0o7777 == file.mode
        {
            return Ok(());
        }
    }
    let what = || format!("{} {}", file.kind.name(), file.name);
    let tmp = path.with_extension("flotilla-new");
    let _ = std::fs::remove_file(&tmp);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: writing {}: {e}", what(), tmp.display()))?;
    out.write_all(&file.data)
        .map_err(|e| format!("{}: writing {}: {e}", what(), tmp.display()))?;
    drop(out);
    let owned = std::os::unix::fs::chown(&tmp, Some(file.uid), Some(file.gid));
    if let Err(e) = owned {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "{}: giving it to uid {} gid {}: {e}",
            what(),
            file.uid,
            file.gid
        ));
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(file.mode))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{}: placing {}: {e}", what(), path.display())
        })
}

fn c_path(path: &Path) -> std::ffi::CString {
    std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .unwrap_or_else(|_| std::ffi::CString::from(c"/nonexistent"))
}

fn on_tmpfs(path: &Path) -> bool {
    let p = c_path(path);
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs fills the struct we pass; the path is NUL-terminated.
    if unsafe { libc::statfs(p.as_ptr(), &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)]
    let kind = st.f_type as i64;
    kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
}

/// Whether a tmpfs is mounted right at `dir` (not merely one above it).
fn is_tmpfs_mount_point(dir: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let dir = dir.to_string_lossy();
    mounts.lines().any(|line| {
        let mut fields = line.split(' ');
        let (_, point, kind) = (fields.next(), fields.next(), fields.next());
        point == Some(&*dir) && kind == Some("tmpfs")
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// FNV-1a: a hash that stays the same across Rust releases, so a daemon
/// built later finds the directory an earlier build made.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
