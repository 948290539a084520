//! The scale benchmark's run, through the Engine API only: wait for the
//! simulated nodes to be Ready, create S services of R replicas with C
//! concurrent clients (each create timed), keep writing a probe service
//! while the cluster converges (write latency under load), and poll
//! `GET /services?status=true` until every task is RUNNING. Beside it,
//! /proc samples of the manager processes (and of the sim process).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;

use super::http::{Client, HttpError};
use super::procstat::{self, ProcSample};

/// What to run.
#[derive(Debug, Clone)]
pub struct ScaleSpec {
    /// API sockets (`unix:///…`); the creating clients take them in turn,
    /// the probe and the polls use the first.
    pub hosts: Vec<String>,
    /// Simulated nodes to wait for, and their hostname prefix.
    pub nodes: usize,
    pub node_prefix: String,
    pub services: usize,
    pub replicas: u64,
    /// Clients creating services at once.
    pub concurrency: usize,
    /// Services are `<prefix>-<n>`; the probe is `<prefix>-probe`.
    pub service_prefix: String,
    /// Processes to sample (the managers), and the sim process.
    pub manager_pids: Vec<u32>,
    pub sim_pid: Option<u32>,
    pub nodes_timeout: Duration,
    pub run_timeout: Duration,
    pub poll_every: Duration,
    /// Period of the probe's writes while the cluster converges.
    pub probe_every: Duration,
}

impl ScaleSpec {
    pub fn tasks(&self) -> u64 {
        self.services as u64 * self.replicas
    }

    fn service_name(&self, n: usize) -> String {
        let width = self.services.to_string().len().max(4);
        format!("{}-{n:0width$}", self.service_prefix)
    }

    fn probe_name(&self) -> String {
        format!("{}-probe", self.service_prefix)
    }
}

/// Where a sampled process stood at the start of the run and at its end.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcReport {
    pub pid: u32,
    pub at_start: ProcSample,
    pub at_end: ProcSample,
    pub peak_rss_bytes: u64,
}

impl ProcReport {
    /// CPU time spent between the first create and convergence.
    pub fn cpu_during_run(&self) -> Duration {
        self.at_end.cpu.saturating_sub(self.at_start.cpu)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ScaleReport {
    pub nodes_ready: usize,
    pub nodes_wait: Duration,
    pub tasks: u64,
    /// From the first create call to the last create's answer.
    pub creates_took: Duration,
    pub create_latencies: Vec<Duration>,
    /// Failed create attempts (503s while the manager cannot commit in
    /// time); each was retried.
    pub create_errors: Vec<String>,
    /// Creates that failed but took effect later (no latency recorded).
    pub creates_late: usize,
    /// Services given up on after 5 attempts.
    pub creates_abandoned: usize,
    pub probe_latencies: Vec<Duration>,
    pub probe_errors: usize,
    /// From the first create call to all tasks RUNNING; `None` on timeout.
    pub converged: Option<Duration>,
    /// RUNNING tasks at the last poll.
    pub running: u64,
    /// (time since the first create, RUNNING tasks) at each poll.
    pub timeline: Vec<(Duration, u64)>,
    pub managers: Vec<ProcReport>,
    pub sim: Option<ProcReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error("{ready} of {want} simulated nodes Ready after {waited:?}")]
    NodesNotReady {
        ready: usize,
        want: usize,
        waited: Duration,
    },
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("unexpected answer to {what}: {detail}")]
    Shape { what: String, detail: String },
    #[error("no API socket given")]
    NoHost,
}

/// Runs the benchmark; `log` gets a line at each step and progress poll.
pub async fn run(spec: &ScaleSpec, log: &(dyn Fn(&str) + Sync)) -> Result<ScaleReport, ScaleError> {
    let first = spec.hosts.first().ok_or(ScaleError::NoHost)?;
    let mut api = Client::new(first);
    let mut report = ScaleReport {
        tasks: spec.tasks(),
        ..Default::default()
    };

    let waited = Instant::now();
    report.nodes_ready = wait_for_nodes(&mut api, spec, log).await?;
    report.nodes_wait = waited.elapsed();
    log(&format!(
        "{} simulated nodes Ready after {:.1} s",
        report.nodes_ready,
        report.nodes_wait.as_secs_f64()
    ));

    let sampler = Sampler::start(spec);
    let (done_tx, done) = watch::channel(false);
    let probe_spec = service_spec(&spec.probe_name(), 0, 0);
    let probe = match create_once(&mut api, &probe_spec, &mut 0).await {
        Some(id) => tokio::spawn(probe_writes(
            Client::new(first),
            id,
            spec.probe_name(),
            spec.probe_every,
            done.clone(),
        )),
        None => {
            log("cannot create the probe service: no write latency while converging");
            tokio::spawn(async { (Vec::new(), 0) })
        }
    };

    let t0 = Instant::now();
    log(&format!(
        "creating {} services x {} replicas with {} clients",
        spec.services, spec.replicas, spec.concurrency
    ));
    let creates: Arc<Mutex<Creates>> = Default::default();
    let creating = tokio::spawn(create_all(spec.clone(), t0, creates.clone()));
    let converged = poll_until_running(&mut api, spec, t0, &mut report, log).await;
    // On a timeout the creates still queued are abandoned.
    creating.abort();
    let _ = creating.await;
    let c = std::mem::take(&mut *creates.lock().unwrap_or_else(|p| p.into_inner()));
    report.create_latencies = c.latencies;
    report.create_errors = c.errors;
    report.creates_late = c.late;
    report.creates_abandoned = c.abandoned;
    report.creates_took = c.took.unwrap_or_else(|| t0.elapsed());
    report.converged = converged?;

    done_tx.send_replace(true);
    let (probe_latencies, probe_errors) = probe.await.unwrap_or_default();
    report.probe_latencies = probe_latencies;
    report.probe_errors = probe_errors;
    let (managers, sim) = sampler.finish().await;
    report.managers = managers;
    report.sim = sim;
    Ok(report)
}

/// A service of `replicas` tasks that the sim executor "runs".
pub fn service_spec(name: &str, replicas: u64, generation: u64) -> Value {
    json!({
        "Name": name,
        "Labels": {"com.flotilla.bench": "scale", "generation": generation.to_string()},
        "TaskTemplate": {
            "ContainerSpec": {"Image": "flotilla-sim:scale", "Command": ["sleep", "infinity"]},
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
    })
}

/// Creates a service as a patient client would: a write that failed (the
/// manager too busy to commit within its timeout, say) is tried again, up
/// to 5 times, unless it took effect after all. Returns the service's ID
/// and the latency of the create that succeeded (none when an earlier
/// attempt turned out to have taken effect); `errors` counts the failures.
async fn create_retrying(
    api: &mut Client,
    spec: &Value,
    errors: &mut Vec<String>,
) -> Option<(String, Option<Duration>)> {
    let name = spec.get("Name").and_then(Value::as_str).unwrap_or_default();
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Ok(v) = api.json("GET", &format!("/services/{name}"), None).await {
                if let Some(id) = v.get("ID").and_then(Value::as_str) {
                    return Some((id.to_string(), None));
                }
            }
        }
        let started = Instant::now();
        match create(api, spec).await {
            Ok(id) => return Some((id, Some(started.elapsed()))),
            Err(e) => errors.push(e.to_string()),
        }
    }
    None
}

/// [`create_retrying`] for a setup step: the ID, counting failures.
async fn create_once(api: &mut Client, spec: &Value, failures: &mut usize) -> Option<String> {
    let mut errors = Vec::new();
    let r = create_retrying(api, spec, &mut errors).await;
    *failures += errors.len();
    r.map(|(id, _)| id)
}

async fn create(api: &mut Client, spec: &Value) -> Result<String, ScaleError> {
    let v = api.json("POST", "/services/create", Some(spec)).await?;
    v.get("ID")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ScaleError::Shape {
            what: "POST /services/create".into(),
            detail: v.to_string(),
        })
}

/// Polls `GET /nodes` until `spec.nodes` simulated nodes are Ready.
async fn wait_for_nodes(
    api: &mut Client,
    spec: &ScaleSpec,
    log: &(dyn Fn(&str) + Sync),
) -> Result<usize, ScaleError> {
    let start = Instant::now();
    let prefix = format!("{}-", spec.node_prefix);
    let mut last_log = Instant::now();
    loop {
        let nodes = match api.json("GET", "/nodes", None).await {
            Ok(v) => v,
            Err(e) if start.elapsed() < spec.nodes_timeout => {
                log(&format!("GET /nodes failed: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let ready = nodes
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| {
                let host = n.pointer("/Description/Hostname").and_then(Value::as_str);
                let state = n.pointer("/Status/State").and_then(Value::as_str);
                host.is_some_and(|h| h.starts_with(&prefix)) && state == Some("ready")
            })
            .count();
        if ready >= spec.nodes {
            return Ok(ready);
        }
        if start.elapsed() > spec.nodes_timeout {
            return Err(ScaleError::NodesNotReady {
                ready,
                want: spec.nodes,
                waited: start.elapsed(),
            });
        }
        if last_log.elapsed() >= Duration::from_secs(5) {
            log(&format!("{ready}/{} simulated nodes Ready", spec.nodes));
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the creating clients measured so far.
#[derive(Debug, Default)]
struct Creates {
    latencies: Vec<Duration>,
    /// Every failed attempt (each was retried).
    errors: Vec<String>,
    /// Creates whose failed attempt took effect after all.
    late: usize,
    /// Services never created (5 failed attempts).
    abandoned: usize,
    /// From `t0` to the last create's answer, once all were answered.
    took: Option<Duration>,
}

/// Creates every service with `spec.concurrency` clients, each on its own
/// connection, recording each create's latency into `out`.
async fn create_all(spec: ScaleSpec, t0: Instant, out: Arc<Mutex<Creates>>) {
    let next = Arc::new(AtomicUsize::new(1));
    let spec = Arc::new(spec);
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..spec.concurrency.max(1) {
        let host = spec.hosts[c % spec.hosts.len()].clone();
        let (next, out, spec) = (next.clone(), out.clone(), spec.clone());
        clients.spawn(async move {
            let mut api = Client::new(&host);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n > spec.services {
                    return;
                }
                let body = service_spec(&spec.service_name(n), spec.replicas, 0);
                let mut errors = Vec::new();
                let r = create_retrying(&mut api, &body, &mut errors).await;
                let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                out.errors.append(&mut errors);
                match r {
                    Some((_, Some(took))) => out.latencies.push(took),
                    Some((_, None)) => out.late += 1,
                    None => out.abandoned += 1,
                }
            }
        });
    }
    while clients.join_next().await.is_some() {}
    out.lock().unwrap_or_else(|p| p.into_inner()).took = Some(t0.elapsed());
}

/// Polls the services' RUNNING counts until all of the run's tasks run
/// (`Some(time since t0)`) or the run times out (`None`).
async fn poll_until_running(
    api: &mut Client,
    spec: &ScaleSpec,
    t0: Instant,
    report: &mut ScaleReport,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Option<Duration>, ScaleError> {
    let want = spec.tasks();
    let prefix = format!("{}-", spec.service_prefix);
    let probe = spec.probe_name();
    let mut last_log = Instant::now();
    loop {
        tokio::time::sleep(spec.poll_every).await;
        let services = match api.json("GET", "/services?status=true", None).await {
            Ok(v) => v,
            // A manager too busy to answer is a finding, not the end of the run.
            Err(e) => {
                log(&format!("poll failed: {e}"));
                continue;
            }
        };
        let mut seen = 0usize;
        let mut running = 0u64;
        for s in services.as_array().into_iter().flatten() {
            let name = s.pointer("/Spec/Name").and_then(Value::as_str);
            if !name.is_some_and(|n| n.starts_with(&prefix) && n != probe) {
                continue;
            }
            seen += 1;
            running += s
                .pointer("/ServiceStatus/RunningTasks")
                .and_then(Value::as_u64)
                .unwrap_or(0);
        }
        let at = t0.elapsed();
        report.running = running;
        report.timeline.push((at, running));
        if seen == spec.services && running >= want {
            log(&format!(
                "{:7.1} s  all {want} tasks RUNNING",
                at.as_secs_f64()
            ));
            return Ok(Some(at));
        }
        if last_log.elapsed() >= Duration::from_secs(5) {
            log(&format!(
                "{:7.1} s  {seen}/{} services, {running}/{want} tasks RUNNING",
                at.as_secs_f64(),
                spec.services
            ));
            last_log = Instant::now();
        }
        if at > spec.run_timeout {
            log(&format!(
                "timed out after {:.0} s with {running}/{want} tasks RUNNING",
                at.as_secs_f64()
            ));
            return Ok(None);
        }
    }
}

/// Updates the probe service's labels every `every` until `done`: the
/// latency of a small write while the cluster is busy converging.
async fn probe_writes(
    mut api: Client,
    id: String,
    name: String,
    every: Duration,
    mut done: watch::Receiver<bool>,
) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut generation = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {},
            _ = done.changed() => return (latencies, errors),
        }
        let version = match api.json("GET", &format!("/services/{id}"), None).await {
            Ok(v) => v.pointer("/Version/Index").and_then(Value::as_u64),
            Err(_) => None,
        };
        let Some(version) = version else {
            errors += 1;
            continue;
        };
        generation += 1;
        let path = format!("/services/{id}/update?version={version}");
        let body = service_spec(&name, 0, generation);
        let started = Instant::now();
        match api.json("POST", &path, Some(&body)).await {
            Ok(_) => latencies.push(started.elapsed()),
            Err(_) => errors += 1,
        }
    }
}

/// Samples the managers and the sim process twice a second, keeping the
/// first sample (the run's start), the last, and the peak RSS.
struct Sampler {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<HashMap<u32, ProcReport>>,
    managers: Vec<u32>,
    sim: Option<u32>,
}

impl Sampler {
    fn start(spec: &ScaleSpec) -> Sampler {
        let pids: Vec<u32> = spec
            .manager_pids
            .iter()
            .copied()
            .chain(spec.sim_pid)
            .collect();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut reports: HashMap<u32, ProcReport> = HashMap::new();
            loop {
                for &pid in &pids {
                    let Some(s) = procstat::sample(pid) else {
                        continue;
                    };
                    let r = reports.entry(pid).or_insert(ProcReport {
                        pid,
                        at_start: s,
                        ..Default::default()
                    });
                    r.at_end = s;
                    r.peak_rss_bytes = r.peak_rss_bytes.max(s.peak_rss_bytes);
                }
                if *stopped.borrow() {
                    return reports;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {},
                    _ = stopped.changed() => {},
                }
            }
        });
        Sampler {
            stop,
            task,
            managers: spec.manager_pids.clone(),
            sim: spec.sim_pid,
        }
    }

    async fn finish(self) -> (Vec<ProcReport>, Option<ProcReport>) {
        self.stop.send_replace(true);
        let reports = self.task.await.unwrap_or_default();
        let managers = self
            .managers
            .iter()
            .filter_map(|p| reports.get(p).copied())
            .collect();
        let sim = self.sim.and_then(|p| reports.get(&p).copied());
        (managers, sim)
    }
}
