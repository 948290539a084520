//! `exec` in a process task: the command runs on the task's node as a host
//! process with the task's environment (its spec's variables, PATH, HOME,
//! ports, files), working dir and user (the spec's, or `-u`), in the network
//! namespace of the task's process, in a session of its own; with a TTY, on
//! a pty whose size follows the client's. A command that cannot be started
//! gets Docker's 127 (not found) or 126 (cannot run) and a line on stderr.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Mutex;

use async_trait::async_trait;
use bollard::models::TaskSpecContainerSpec;
use bytes::Bytes;
use flotilla_store::exec::{cannot_run_code, ExecSpec};
use flotilla_store::models::Task;
use futures::stream::{BoxStream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{container_spec, credentials, environment, work_dir, ProcessExecutor};
use crate::exec::{ExecControl, ExecError, ExecProcess, LogStream};

pub(super) async fn run(
    executor: &ProcessExecutor,
    task: &Task,
    spec: &ExecSpec,
) -> Result<ExecProcess, ExecError> {
    let task_id = task.id.as_deref().unwrap_or_default();
    let dir = executor.task_dir(task)?;
    let record = executor
        .read_record(task)
        .map_err(|_| ExecError::NotFound(format!("task {task_id} has no process here")))?;
    let pid = match record.pid {
        Some(pid) if executor.ended(&dir, &record).is_none() => pid,
        _ => {
            return Err(ExecError::Failed(format!(
                "the process of task {task_id} is not running"
            )))
        }
    };
    let task_spec = container_spec(task);
    let credentials = match spec.user.as_deref().filter(|u| !u.is_empty()) {
        Some(user) => credentials(Some(&TaskSpecContainerSpec {
            user: Some(user.to_string()),
            ..Default::default()
        })),
        None => credentials(task_spec),
    }
    .map_err(|e| ExecError::Failed(e.to_string()))?;
    let mut env = environment(task, credentials.as_ref(), &record);
    for entry in &spec.env {
        if let Some((name, value)) = entry.split_once('=') {
            env.retain(|(n, _)| n != name);
            env.push((name.to_string(), value.to_string()));
        }
    }
    let cwd = match spec.working_dir.as_deref().filter(|d| !d.is_empty()) {
        Some(d) => std::path::PathBuf::from(d),
        None => work_dir(task_spec),
    };
    // The task's network namespace, joined between fork and exec.
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| ExecError::Failed(format!("task {task_id}'s network namespace: {e}")))?;
    let pty = spec.tty.then(|| open_pty(spec.console_size)).transpose()?;

    // Looked up here, as runc does: execvp would say "permission denied"
    // for a command it did not find when a directory of the daemon's PATH
    // is closed to the task's user.
    let path = env
        .iter()
        .find(|(n, _)| n == "PATH")
        .map(|(_, v)| v.clone());
    let Some(program) = find_program(&spec.cmd[0], path.as_deref().unwrap_or_default()) else {
        let e = std::io::Error::from(std::io::ErrorKind::NotFound);
        return Ok(cannot_start(&spec.cmd[0], &e));
    };
    let mut command = tokio::process::Command::new(program);
    command.arg0(&spec.cmd[0]);
    command
        .args(&spec.cmd[1..])
        .env_clear()
        .envs(env)
        .current_dir(&cwd)
        .kill_on_drop(false);
    match &pty {
        Some((_, slave)) => {
            let stdio = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
            let failed = |e: std::io::Error| ExecError::Failed(format!("pty: {e}"));
            command
                .stdin(stdio(slave).map_err(failed)?)
                .stdout(stdio(slave).map_err(failed)?)
                .stderr(stdio(slave).map_err(failed)?);
        }
        None => {
            command
                .stdin(if spec.attach_stdin {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
    }
    let netns_fd = netns.as_raw_fd();
    let tty = pty.is_some();
    let ids = credentials.as_ref().map(|c| (c.uid, c.gid));
    // SAFETY: only async-signal-safe calls between fork and exec: setns,
    // setsid, ioctl, and the user switched last (Command's own uid/gid
    // switch comes before this hook, and setns needs the daemon's rights).
    unsafe {
        command.pre_exec(move || {
            let check = |r: libc::c_int| {
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            check(libc::setns(netns_fd, libc::CLONE_NEWNET))?;
            check(libc::setsid())?;
            if tty {
                check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
            }
            if let Some((uid, gid)) = ids {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
            }
            Ok(())
        });
    }
    let spawned = command.spawn();
    drop(command);
    drop(netns);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Ok(cannot_start(&spec.cmd[0], &e)),
    };
    let id = child.id().unwrap_or_default();
    let (output, stdin, master) = match pty {
        Some((master, slave)) => {
            // The child has its own copies: ours would keep the pty open.
            drop(slave);
            let failed = |e: std::io::Error| ExecError::Failed(format!("pty: {e}"));
            let reader =
                tokio::fs::File::from_std(std::fs::File::from(master.try_clone().map_err(failed)?));
            let writer =
                tokio::fs::File::from_std(std::fs::File::from(master.try_clone().map_err(failed)?));
            let input: Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>> =
                spec.attach_stdin.then(|| Box::pin(writer) as _);
            (chunks(reader, LogStream::Stdout), input, Some(master))
        }
        None => {
            let out = child.stdout.take().map(|o| chunks(o, LogStream::Stdout));
            let err = child.stderr.take().map(|e| chunks(e, LogStream::Stderr));
            let output = futures::stream::select(
                out.unwrap_or_else(|| futures::stream::empty().boxed()),
                err.unwrap_or_else(|| futures::stream::empty().boxed()),
            )
            .boxed();
            let input: Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>> =
                child.stdin.take().map(|i| Box::pin(i) as _);
            (output, input, None)
        }
    };
    Ok(ExecProcess {
        id: id.to_string(),
        output,
        stdin,
        control: Box::new(HostExec {
            pid: id,
            child: tokio::sync::Mutex::new(Some(child)),
            master: Mutex::new(master),
        }),
    })
}

/// `name` as a path: itself when it has a slash, else the first file of
/// that name in `path`'s directories.
fn find_program(name: &str, path: &str) -> Option<std::path::PathBuf> {
    if name.contains('/') {
        return Some(name.into());
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// A stream of what `reader` gives, as it comes; it ends at EOF or an
/// error (a pty's master reads EIO once the command and its children close it).
fn chunks<R: AsyncRead + Send + Unpin + 'static>(
    reader: R,
    stream: LogStream,
) -> BoxStream<'static, (LogStream, Bytes)> {
    futures::stream::unfold(reader, move |mut r| async move {
        let mut buf = vec![0u8; 16 << 10];
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some(((stream, Bytes::from(buf)), r))
            }
        }
    })
    .boxed()
}

/// A pty (master, slave) of the given `[rows, columns]`.
fn open_pty(size: Option<[u16; 2]>) -> Result<(OwnedFd, OwnedFd), ExecError> {
    let (mut master, mut slave) = (-1, -1);
    let ws = winsize(size.unwrap_or([24, 80]));
    // SAFETY: openpty writes two descriptors and reads the winsize given.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if r < 0 {
        return Err(ExecError::Failed(format!(
            "openpty: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: openpty succeeded: both are open descriptors owned here alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) })
}

fn winsize([rows, cols]: [u16; 2]) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// A command that could not be started, shown as `docker exec` shows one.
fn cannot_start(program: &str, e: &std::io::Error) -> ExecProcess {
    let not_found = e.kind() == std::io::ErrorKind::NotFound;
    let line = if not_found {
        format!("exec: \"{program}\": executable file not found in $PATH\n")
    } else {
        format!("exec: \"{program}\": {e}\n")
    };
    ExecProcess {
        id: String::new(),
        output: futures::stream::iter([(LogStream::Stderr, Bytes::from(line))]).boxed(),
        stdin: None,
        control: Box::new(NeverStarted(cannot_run_code(not_found))),
    }
}

struct HostExec {
    pid: u32,
    child: tokio::sync::Mutex<Option<tokio::process::Child>>,
    master: Mutex<Option<OwnedFd>>,
}

#[async_trait]
impl ExecControl for HostExec {
    async fn resize(&self, rows: u16, cols: u16) -> Result<(), ExecError> {
        let master = self.master.lock().unwrap_or_else(|p| p.into_inner());
        let Some(fd) = master.as_ref() else {
            return Ok(());
        };
        let ws = winsize([rows, cols]);
        // SAFETY: TIOCSWINSZ reads one winsize; the pty's foreground group
        // gets SIGWINCH from the kernel.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
            return Err(ExecError::Failed(format!(
                "resizing the pty: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    async fn exit_code(&self) -> Result<i64, ExecError> {
        let Some(mut child) = self.child.lock().await.take() else {
            return Err(ExecError::Failed("the exit code was taken already".into()));
        };
        let status = child
            .wait()
            .await
            .map_err(|e| ExecError::Failed(format!("waiting for the command: {e}")))?;
        Ok(super::exit_status(status).code)
    }

    /// The command's whole session (it leads its own group).
    async fn kill(&self) {
        super::kill_group(self.pid, libc::SIGKILL);
    }
}

struct NeverStarted(i64);

#[async_trait]
impl ExecControl for NeverStarted {
    async fn resize(&self, _rows: u16, _cols: u16) -> Result<(), ExecError> {
        Ok(())
    }

    async fn exit_code(&self) -> Result<i64, ExecError> {
        Ok(self.0)
    }

    async fn kill(&self) {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn programs_are_found_in_path_as_runc_finds_them() {
        let found = super::find_program("sh", "/nonexistent:/bin:/usr/bin");
        assert!(found.is_some_and(|p| p.ends_with("sh")));
        assert_eq!(super::find_program("nosuchcommand", "/bin:/usr/bin"), None);
        assert_eq!(
            super::find_program("./x", ""),
            Some(std::path::PathBuf::from("./x"))
        );
    }
}
