//! `exec` in a task's container: the engine's own exec API (create,
//! start attached, resize, inspect for the exit code), so a command that
//! cannot run gets dockerd's 126 or 127 and its message, as with `docker exec`.

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use flotilla_store::exec::ExecSpec;
use flotilla_store::models::Task;
use futures::StreamExt;

use super::{failed, DockerExecutor};
use crate::exec::{ExecControl, ExecError, ExecProcess, LogStream};

pub(super) async fn run(
    executor: &DockerExecutor,
    task: &Task,
    spec: &ExecSpec,
) -> Result<ExecProcess, ExecError> {
    let container = executor.find_container(task).await?.ok_or_else(|| {
        ExecError::NotFound(format!("task {} has no container here", task_name(task)))
    })?;
    let running = executor
        .inspect(&container)
        .await?
        .and_then(|c| c.state)
        .is_some_and(|s| s.running == Some(true));
    if !running {
        return Err(ExecError::Failed(format!(
            "container {container} of task {} is not running",
            task_name(task)
        )));
    }
    let docker = executor.docker.clone();
    let options = CreateExecOptions {
        attach_stdin: Some(spec.attach_stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(spec.tty),
        env: (!spec.env.is_empty()).then(|| spec.env.clone()),
        cmd: Some(spec.cmd.clone()),
        user: spec.user.clone(),
        working_dir: spec.working_dir.clone(),
        ..Default::default()
    };
    let id = docker
        .create_exec(&container, options)
        .await
        .map_err(|e| failed("creating the exec", &e))?
        .id;
    let start = StartExecOptions {
        detach: false,
        tty: spec.tty,
        output_capacity: None,
    };
    let StartExecResults::Attached { output, input } = docker
        .start_exec(&id, Some(start))
        .await
        .map_err(|e| failed("starting the exec", &e))?
    else {
        return Err(ExecError::Failed("the engine detached the exec".into()));
    };
    let control = EngineExec {
        docker,
        id: id.clone(),
    };
    if let Some([rows, cols]) = spec.console_size {
        let _ = control.resize(rows, cols).await;
    }
    let output = output
        .take_while(|item| futures::future::ready(item.is_ok()))
        .filter_map(|item| {
            futures::future::ready(match item {
                Ok(LogOutput::StdErr { message }) => Some((LogStream::Stderr, message)),
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    Some((LogStream::Stdout, message))
                }
                _ => None,
            })
        })
        .boxed();
    Ok(ExecProcess {
        id,
        output,
        stdin: spec.attach_stdin.then_some(input),
        control: Box::new(control),
    })
}

fn task_name(task: &Task) -> &str {
    task.id.as_deref().unwrap_or_default()
}

struct EngineExec {
    docker: Docker,
    id: String,
}

#[async_trait]
impl ExecControl for EngineExec {
    async fn resize(&self, rows: u16, cols: u16) -> Result<(), ExecError> {
        let size = ResizeExecOptions {
            height: rows,
            width: cols,
        };
        self.docker
            .resize_exec(&self.id, size)
            .await
            .map_err(|e| failed("resizing the exec", &e))
    }

    /// The engine records the code a moment after the output ends: asked
    /// again until it has one.
    async fn exit_code(&self) -> Result<i64, ExecError> {
        for _ in 0..50 {
            let inspect = self
                .docker
                .inspect_exec(&self.id)
                .await
                .map_err(|e| failed("inspecting the exec", &e))?;
            if inspect.running != Some(true) {
                if let Some(code) = inspect.exit_code {
                    return Ok(code);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(ExecError::Failed(format!(
            "exec {} has no exit code after its output ended",
            self.id
        )))
    }

    /// The engine has no call to end an exec: its process (a host pid, as
    /// the engine reports it) is killed here, on the engine's host.
    async fn kill(&self) {
        let Ok(inspect) = self.docker.inspect_exec(&self.id).await else {
            return;
        };
        if let (Some(true), Some(pid)) = (inspect.running, inspect.pid) {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                if pid > 1 {
                    // SAFETY: kill(2) with a pid and a signal number has no
                    // memory effects.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}
