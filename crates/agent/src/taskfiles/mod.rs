//! A task's secrets and configs as files. What each file holds and where
//! it goes is decided here from the task, the node and the objects the
//! dispatcher sent ([`files_for`], which does no I/O); [`tmpfs`] writes
//! them where nothing reaches a disk, and executors put them in the task
//! (the docker executor bind-mounts each file read-only; the process
//! executor points its process at the directory).

use flotilla_store::models::Task;
use flotilla_store::secrets::{DataKind, NodeData};

pub mod tmpfs;

pub use crate::templates::NodeInfo;
pub use tmpfs::{PlacedFile, TaskFiles, TmpfsRoot};

/// Where Docker puts a secret whose target is a bare name.
const SECRETS_DIR: &str = "/run/secrets";

/// One file of a task, decided but not written.
#[derive(Clone, PartialEq, Eq)]
pub struct TaskFile {
    pub kind: DataKind,
    /// The secret's or config's name (for messages).
    pub name: String,
    /// The absolute path in the task's filesystem.
    pub target: String,
    pub data: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

// Never print a secret's bytes.
impl std::fmt::Debug for TaskFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFile")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("target", &self.target)
            .field("bytes", &self.data.len())
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// The file a reference asks for, before its data is read.
struct Wanted<'a> {
    kind: DataKind,
    id: &'a str,
    name: &'a str,
    file: Option<FileRef<'a>>,
}

/// A reference's file (bollard has one type per kind for the same fields).
struct FileRef<'a> {
    name: &'a str,
    uid: Option<&'a str>,
    gid: Option<&'a str>,
    mode: Option<u32>,
}

/// The task's files, templates expanded, or why the task cannot have them
/// (a message for the task's error: the task is rejected).
pub fn files_for(task: &Task, node: &NodeInfo, data: &NodeData) -> Result<Vec<TaskFile>, String> {
    let Some(container) = task.spec.as_ref().and_then(|s| s.container_spec.as_ref()) else {
        return Ok(Vec::new());
    };
    let secrets = container.secrets.iter().flatten().map(|r| Wanted {
        kind: DataKind::Secret,
        id: r.secret_id.as_deref().unwrap_or_default(),
        name: r.secret_name.as_deref().unwrap_or_default(),
        file: r.file.as_ref().map(|f| FileRef {
            name: f.name.as_deref().unwrap_or_default(),
            uid: f.uid.as_deref(),
            gid: f.gid.as_deref(),
            mode: f.mode,
        }),
    });
    let configs = container.configs.iter().flatten().map(|r| Wanted {
        kind: DataKind::Config,
        id: r.config_id.as_deref().unwrap_or_default(),
        name: r.config_name.as_deref().unwrap_or_default(),
        file: r.file.as_ref().map(|f| FileRef {
            name: f.name.as_deref().unwrap_or_default(),
            uid: f.uid.as_deref(),
            gid: f.gid.as_deref(),
            mode: f.mode,
        }),
    });
    let mut files = Vec::new();
    for wanted in secrets.chain(configs) {
        let what = wanted.kind.name();
        let Some(file) = wanted.file else {
            // A Runtime config target (Windows credential specs): no file.
            continue;
        };
        let object = data
            .get(wanted.kind, wanted.id)
            .ok_or_else(|| format!("{what} {} not found on this node", wanted.name))?;
        let raw = object
            .bytes()
            .map_err(|e| format!("{what} {}: its data is not base64: {e}", wanted.name))?;
        let data = match object.templating.as_deref() {
            None | Some("") => raw,
            Some("golang") => crate::templates::expand_payload(&raw, task, node, data)
                .map_err(|e| format!("{what} {}: expanding its template: {e}", wanted.name))?
                .into_bytes(),
            Some(other) => {
                return Err(format!(
                    "{what} {}: unrecognized template type {other}",
                    wanted.name
                ))
            }
        };
        let target = target_path(wanted.kind, file.name)?;
        files.push(TaskFile {
            kind: wanted.kind,
            name: wanted.name.to_string(),
            target,
            data,
            uid: id_number(file.uid, "uid", wanted.name)?,
            gid: id_number(file.gid, "gid", wanted.name)?,
            // Docker's CLI and docker-py always send a mode; a request
            // without one gets their default rather than an unreadable file.
            mode: file.mode.map_or(0o444, |m| m & 0o7777),
        });
    }
    Ok(files)
}

/// Where a reference's file goes in the task (moby's rule): an absolute
/// target as it is, a secret's bare name under /run/secrets, a config's
/// under /.
fn target_path(kind: DataKind, name: &str) -> Result<String, String> {
    let joined = if name.starts_with('/') {
        name.to_string()
    } else {
        match kind {
            DataKind::Secret => format!("{SECRETS_DIR}/{name}"),
            DataKind::Config => format!("/{name}"),
        }
    };
    // Clean it as Go's filepath.Clean does for what matters here: no `..`
    // may climb out, no empty or `.` parts.
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(format!(
            "{} target {name:?} is not a file path",
            kind.name()
        ));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// A numeric UID or GID as the reference gives it ("0" when absent, as
/// Docker's clients send).
fn id_number(value: Option<&str>, what: &str, name: &str) -> Result<u32, String> {
    match value.unwrap_or_default() {
        "" => Ok(0),
        v => v
            .parse()
            .map_err(|_| format!("{name}: invalid {what} {v:?}: it must be a number")),
    }
}

#[cfg(test)]
mod tests;
