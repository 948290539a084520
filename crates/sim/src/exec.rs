//! The `sim` executor: runs nothing. Every step succeeds (after an optional
//! delay, to model a slow engine); a started task "runs" until the worker
//! shuts it down, so the manager sees the same state walk as with real
//! workloads while the node costs a few hundred bytes per task.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use flotilla_agent::exec::{
    ExecError, Executor, Existing, ExitStatus, LogLine, LogOptions, NodeDescription, RuntimeInfo,
    TaskFiles,
};
use flotilla_store::models::Task;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::watch;

/// What a simulated node claims to be and how slow its "engine" is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub hostname: String,
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    /// Time `prepare` takes (an image check, a container create).
    pub prepare_delay: Duration,
    /// Time `start` takes (a container start).
    pub start_delay: Duration,
}

impl SimConfig {
    /// A node like this machine's VMs: 2 CPUs, 4 GiB, no delays.
    pub fn named(hostname: impl Into<String>) -> SimConfig {
        SimConfig {
            hostname: hostname.into(),
            nano_cpus: 2_000_000_000,
            memory_bytes: 4 << 30,
            prepare_delay: Duration::ZERO,
            start_delay: Duration::ZERO,
        }
    }
}

pub struct SimExecutor {
    cfg: SimConfig,
    /// One flag per task that has a (simulated) workload: true once it was
    /// shut down, which ends its `wait`. A std Mutex: held for a map
    /// lookup only, never across an await.
    workloads: Mutex<HashMap<String, watch::Sender<bool>>>,
}

impl SimExecutor {
    pub fn new(cfg: SimConfig) -> SimExecutor {
        SimExecutor {
            cfg,
            workloads: Mutex::new(HashMap::new()),
        }
    }

    /// How many tasks have a workload here (started and not yet removed).
    pub fn workloads(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<bool>>> {
        self.workloads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stop flag of a task's workload, made on first use.
    fn stopped(&self, task: &Task) -> watch::Receiver<bool> {
        let id = task.id.clone().unwrap_or_default();
        self.lock()
            .entry(id)
            .or_insert_with(|| watch::channel(false).0)
            .subscribe()
    }
}

async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

#[async_trait]
impl Executor for SimExecutor {
    fn kind(&self) -> &'static str {
        "sim"
    }

    async fn describe(&self) -> NodeDescription {
        NodeDescription {
            hostname: self.cfg.hostname.clone(),
            os: "linux".into(),
            architecture: std::env::consts::ARCH.into(),
            nano_cpus: self.cfg.nano_cpus,
            memory_bytes: self.cfg.memory_bytes,
            engine_version: "sim".into(),
            network_plugins: Vec::new(),
            generic_resources: Vec::new(),
        }
    }

    /// The workloads of this executor: a new worker on it (an agent
    /// restarted in the same process) adopts them as a restarted daemon
    /// adopts its containers. A simulated node's process starts empty.
    async fn list(&self, _node_id: &str) -> Result<Vec<Existing>, ExecError> {
        Ok(self
            .lock()
            .iter()
            .map(|(id, stopped)| Existing {
                task_id: id.clone(),
                running: !*stopped.borrow(),
                runtime: RuntimeInfo::default(),
            })
            .collect())
    }

    async fn prepare(&self, _task: &Task, _files: &TaskFiles) -> Result<(), ExecError> {
        pause(self.cfg.prepare_delay).await;
        Ok(())
    }

    async fn start(&self, task: &Task) -> Result<RuntimeInfo, ExecError> {
        pause(self.cfg.start_delay).await;
        drop(self.stopped(task));
        Ok(RuntimeInfo::default())
    }

    async fn wait_healthy(&self, _task: &Task) -> Result<(), ExecError> {
        Ok(())
    }

    /// Never returns while the task runs; returns (exit 0) once it was
    /// shut down. The worker may call it again after each change of the
    /// task, so the flag outlives any one call.
    async fn wait(&self, task: &Task) -> Result<ExitStatus, ExecError> {
        let mut stopped = self.stopped(task);
        // An error means the executor itself is gone: wait forever.
        if stopped.wait_for(|s| *s).await.is_err() {
            futures::future::pending::<()>().await;
        }
        Ok(ExitStatus {
            code: 0,
            message: None,
        })
    }

    async fn shutdown(&self, task: &Task) -> Result<(), ExecError> {
        let id = task.id.clone().unwrap_or_default();
        if let Some(flag) = self.lock().get(&id) {
            flag.send_replace(true);
        }
        Ok(())
    }

    async fn remove(&self, task: &Task) -> Result<(), ExecError> {
        let id = task.id.clone().unwrap_or_default();
        if let Some(flag) = self.lock().remove(&id) {
            flag.send_replace(true);
        }
        Ok(())
    }

    async fn logs(
        &self,
        _task: &Task,
        _opts: LogOptions,
    ) -> Result<BoxStream<'static, LogLine>, ExecError> {
        Ok(futures::stream::empty().boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> Task {
        Task {
            id: Some(id.into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_started_task_runs_until_shut_down() {
        let exec = std::sync::Arc::new(SimExecutor::new(SimConfig::named("sim-1")));
        let t = task("t1");
        exec.prepare(&t, &TaskFiles::default()).await.unwrap();
        exec.start(&t).await.unwrap();
        exec.wait_healthy(&t).await.unwrap();
        assert_eq!(exec.workloads(), 1);

        let waiting = tokio::spawn({
            let (exec, t) = (exec.clone(), t.clone());
            async move { exec.wait(&t).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "wait returned while running");

        exec.shutdown(&t).await.unwrap();
        let exit = waiting.await.unwrap().unwrap();
        assert_eq!(exit.code, 0);
        // A later wait (the worker re-enters it after a task change) ends at once.
        assert_eq!(exec.wait(&t).await.unwrap().code, 0);

        exec.remove(&t).await.unwrap();
        assert_eq!(exec.workloads(), 0);
    }

    #[tokio::test]
    async fn describes_a_fake_node_and_has_no_logs() {
        let exec = SimExecutor::new(SimConfig::named("sim-7"));
        assert_eq!(exec.kind(), "sim");
        let d = exec.describe().await;
        assert_eq!(d.hostname, "sim-7");
        assert_eq!(d.engine_version, "sim");
        assert!(d.nano_cpus > 0 && d.memory_bytes > 0);
        assert!(exec.list("n").await.unwrap().is_empty());
        let lines: Vec<_> = exec
            .logs(&task("t"), LogOptions::default())
            .await
            .unwrap()
            .collect()
            .await;
        assert!(lines.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn delays_are_honoured() {
        let mut cfg = SimConfig::named("slow");
        cfg.prepare_delay = Duration::from_millis(300);
        cfg.start_delay = Duration::from_millis(700);
        let exec = SimExecutor::new(cfg);
        let t0 = tokio::time::Instant::now();
        exec.prepare(&task("t"), &TaskFiles::default())
            .await
            .unwrap();
        exec.start(&task("t")).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(1000));
    }
}
