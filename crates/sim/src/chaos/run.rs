//! One seeded run: clients and faults together for the run's duration, then
//! every host back and the checks (see `model` and `observe`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

use super::cluster::Cluster;
use super::model::{Model, Op, Outcome};
use super::observe::{self, GEN_VAR, PREFIX, SLOT_VAR, TASK_VAR};
use super::schedule::{self, Action, Fault, Kind, Target};

pub struct Config {
    pub seed: u64,
    pub duration: Duration,
    pub kinds: Vec<Kind>,
    pub clients: usize,
    /// How long the swarm may take, once every host is back, to show every
    /// acknowledged operation and run every service's tasks.
    pub settle: Duration,
    /// The image (docker executor) tasks run; the process executor runs
    /// the command alone.
    pub image: String,
}

/// What a run found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub seed: u64,
    pub acknowledged: usize,
    pub refused: usize,
    pub indeterminate: usize,
    pub faults: usize,
    pub fault_errors: Vec<String>,
    /// Acknowledged operations a manager does not show, and the like.
    pub violations: Vec<String>,
    /// Two processes of one slot at once while one of their hosts was cut
    /// off or paused: the swarm cannot reach the old one to stop it (as in
    /// Docker Swarm), so this is reported, not counted.
    pub overlaps_while_cut_off: Vec<String>,
    /// From every host being back to every manager showing the model's
    /// state and every service running its replicas.
    pub converged_after: Option<Duration>,
    /// Nodes the managers marked down with no fault on their host then or
    /// in the [`DOWN_CAUSE`] before (also counted as violations).
    pub false_down: Vec<String>,
}

/// How long after a fault on a host a Down of its node is put down to it:
/// the longest detection (three missed heartbeats of 5 s) with a margin.
const DOWN_CAUSE: Duration = Duration::from_secs(20);

/// Writes the run's log: one JSON object a line, with the time since start.
#[derive(Clone)]
pub struct Log {
    start: Instant,
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl Log {
    pub fn new(out: Box<dyn Write + Send>) -> Log {
        Log {
            start: Instant::now(),
            out: Arc::new(Mutex::new(out)),
        }
    }

    pub fn event(&self, kind: &str, detail: Value) {
        let line = json!({
            "t": format!("{:.3}", self.start.elapsed().as_secs_f64()),
            "event": kind,
            "detail": detail,
        });
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The hosts cut off, stopped or paused (a full disk cuts nobody off):
/// how many such faults each has now (a host may be hit again before the
/// last one's grace is over), and when its last one ended.
#[derive(Clone, Default)]
struct Faults(Arc<Mutex<BTreeMap<String, HostFaults>>>);

#[derive(Default)]
struct HostFaults {
    active: usize,
    ended: Option<Instant>,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, HostFaults>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(&self, host: &str) {
        self.lock().entry(host.to_string()).or_default().active += 1;
    }

    /// The fault on `host` ended now; it still counts as cut off for
    /// `grace` (the time a returning node takes to stop stale tasks).
    fn end(&self, host: &str, grace: Duration) {
        self.lock().entry(host.to_string()).or_default().ended = Some(Instant::now());
        let (faults, host) = (self.clone(), host.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(h) = faults.lock().get_mut(&host) {
                h.active = h.active.saturating_sub(1);
            }
        });
    }

    fn cut_off(&self, host: &str) -> bool {
        self.lock().get(host).is_some_and(|h| h.active > 0)
    }

    /// Cut off now, or a fault of its ended less than `within` ago.
    fn recently(&self, host: &str, within: Duration) -> bool {
        self.lock()
            .get(host)
            .is_some_and(|h| h.active > 0 || h.ended.is_some_and(|t| t.elapsed() < within))
    }
}

pub async fn run(cluster: &Cluster, cfg: &Config, log: &Log) -> Report {
    let mut report = Report {
        seed: cfg.seed,
        ..Default::default()
    };
    let faults = schedule::plan(cfg.seed, cfg.duration, &cfg.kinds, &cluster.hosts);
    log.event("schedule", json!({ "seed": cfg.seed, "faults": faults }));
    let model = Arc::new(Mutex::new(Model::default()));
    let faulted = Faults::default();
    let deadline = Instant::now() + cfg.duration;

    let clients: Vec<_> = (0..cfg.clients)
        .map(|i| {
            tokio::spawn(client(
                i,
                cfg.seed,
                deadline,
                cluster.hosts.managers.clone(),
                cluster_sockets(cluster),
                cfg.image.clone(),
                model.clone(),
                log.clone(),
            ))
        })
        .collect();
    let sampler = tokio::spawn(sample(
        deadline,
        cluster.prefix.clone(),
        faulted.clone(),
        log.clone(),
    ));

    let nodes = tokio::spawn(watch_nodes(
        deadline,
        cluster_sockets(cluster),
        faulted.clone(),
        log.clone(),
    ));
    let (injected, fault_errors) = inject(cluster, &faults, &faulted, log, deadline).await;
    report.faults = injected;
    let mut counts = (0, 0, 0);
    for c in clients {
        if let Ok((a, r, i)) = c.await {
            counts = (counts.0 + a, counts.1 + r, counts.2 + i);
        }
    }
    (report.acknowledged, report.refused, report.indeterminate) = counts;
    let (overlaps, cut_off) = sampler.await.unwrap_or_default();
    report.violations.extend(overlaps);
    report.overlaps_while_cut_off = cut_off;
    report.false_down = nodes.await.unwrap_or_default();
    report.violations.extend(report.false_down.iter().cloned());
    report.fault_errors = fault_errors;

    let back = Instant::now();
    let healed_errors = cluster.heal_all().await;
    report.fault_errors.extend(healed_errors);
    log.event("healed", json!({}));
    let model = model.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match settle(cluster, &model, cfg.settle).await {
        Ok(()) => report.converged_after = Some(back.elapsed()),
        Err(v) => report.violations.extend(v),
    }
    report.violations.extend(processes_match(cluster).await);
    log.event("report", json!(&report));
    report
}

fn cluster_sockets(cluster: &Cluster) -> BTreeMap<String, String> {
    cluster
        .hosts
        .managers
        .iter()
        .map(|m| (m.clone(), cluster.socket(m)))
        .collect()
}

/// Carries out the schedule until `deadline`; returns how many faults it
/// injected and what could not be done.
///
/// The cluster's own commands take time (a docker host needs seconds to
/// boot again), so the rest of the schedule moves back by however late a
/// group ends: every fault lasts as long as planned, measured from when it
/// took effect, and the quiet gaps between faults stay as long too.
async fn inject(
    cluster: &Cluster,
    faults: &[Fault],
    faulted: &Faults,
    log: &Log,
    deadline: Instant,
) -> (usize, Vec<String>) {
    let start = Instant::now();
    let mut lag = Duration::ZERO;
    let mut errors = Vec::new();
    let mut injected = 0;
    // Faults that start together (a double fault) run together.
    for group in faults.chunk_by(|a, b| a.at == b.at) {
        let at = start + group[0].at + lag;
        if at >= deadline {
            log.event(
                "faults-dropped",
                json!({ "count": faults.len() - injected, "behind_s": lag.as_secs_f64() }),
            );
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let mut targets = Vec::new();
        for f in group {
            match &f.target {
                Target::Host(h) => targets.push((f, h.clone())),
                Target::Leader => match cluster.leader().await {
                    Some(h) => targets.push((f, h)),
                    None => errors.push(format!("{:?}: no leader to hit", f.action)),
                },
            }
        }
        let started = join_all(targets.into_iter().map(|(f, host)| async move {
            log.event(
                "fault",
                json!({ "action": f.action, "host": host, "for_s": f.lasts.as_secs_f64() }),
            );
            // A full disk cuts nobody off: it excuses no overlap.
            if f.action != Action::Fill {
                faulted.start(&host);
            }
            let result = cluster.start_fault(f.action, &host).await;
            (f, host, result)
        }))
        .await;
        let in_effect = Instant::now();
        let mut hit = Vec::new();
        for (f, host, result) in started {
            injected += 1;
            match result {
                Ok(()) => hit.push((f, host)),
                Err(e) => errors.push(e),
            }
        }
        let ended = join_all(hit.iter().map(|(f, host)| async move {
            tokio::time::sleep_until((in_effect + f.lasts).into()).await;
            log.event("fault-end", json!({ "action": f.action, "host": host }));
            let result = cluster.end_fault(f.action, host).await;
            // A killed host's tasks go with it; a healed or resumed one's
            // stale tasks take the agent a moment to stop: the overlap
            // check gives it the time to learn.
            match f.action {
                Action::Fill => {}
                Action::Kill => faulted.end(host, Duration::ZERO),
                Action::Partition | Action::Pause => faulted.end(host, Duration::from_secs(5)),
            }
            result
        }))
        .await;
        errors.extend(ended.into_iter().filter_map(Result::err));
        let longest = group.iter().map(|f| f.lasts).max().unwrap_or_default();
        let planned_end = start + group[0].at + longest;
        lag = Instant::now().saturating_duration_since(planned_end);
    }
    (injected, errors)
}

/// One client: creates, updates, scales and removes its own services
/// through random managers until `deadline`. Returns (acknowledged,
/// refused, indeterminate).
#[allow(clippy::too_many_arguments)]
async fn client(
    id: usize,
    seed: u64,
    deadline: Instant,
    managers: Vec<String>,
    sockets: BTreeMap<String, String>,
    image: String,
    model: Arc<Mutex<Model>>,
    log: Log,
) -> (usize, usize, usize) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(id as u64));
    let mut mine: Vec<String> = Vec::new();
    let mut made = 0u64;
    let mut generation = 0u64;
    let mut counts = (0, 0, 0);
    while Instant::now() < deadline {
        let manager = &managers[rng.random_range(0..managers.len())];
        let mut http = crate::load::http::Client::new(&sockets[manager]);
        let (service, op) = if mine.len() < 2 || rng.random_range(0..5) == 0 {
            made += 1;
            let name = format!("{PREFIX}c{id}-{made}");
            mine.push(name.clone());
            (
                name,
                Op::Create {
                    replicas: rng.random_range(1..4),
                },
            )
        } else {
            let name = mine[rng.random_range(0..mine.len())].clone();
            let op = match rng.random_range(0..10) {
                0 => Op::Remove,
                1..=4 => {
                    generation += 1;
                    Op::Update { generation }
                }
                _ => Op::Scale {
                    replicas: rng.random_range(0..5),
                },
            };
            if op == Op::Remove {
                mine.retain(|n| *n != name);
            }
            (name, op)
        };
        let outcome = match tokio::time::timeout(
            Duration::from_secs(10),
            send(&mut http, &service, op, &image),
        )
        .await
        {
            Ok(Some(o)) => o,
            // The service could not be read first: nothing was asked.
            Ok(None) => continue,
            Err(_) => (Outcome::Indeterminate, "no answer within 10 s".to_string()),
        };
        log.event(
            "op",
            json!({ "client": id, "via": manager, "service": service, "op": op,
                    "outcome": outcome.0, "answer": outcome.1 }),
        );
        model
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(&service, op, outcome.0);
        match outcome.0 {
            Outcome::Acknowledged => counts.0 += 1,
            Outcome::Refused => counts.1 += 1,
            Outcome::Indeterminate => counts.2 += 1,
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
    }
    counts
}

/// The request for `op`, and how its answer reads: None when the service
/// could not be read for an update (nothing was asked).
async fn send(
    http: &mut crate::load::http::Client,
    service: &str,
    op: Op,
    image: &str,
) -> Option<(Outcome, String)> {
    let answer = match op {
        Op::Create { replicas } => {
            let spec = json!({
                "Name": service,
                "TaskTemplate": {
                    "ContainerSpec": {
                        "Image": image,
                        "Command": ["sleep", "100000"],
                        "Env": [
                            format!("{GEN_VAR}=0"),
                            format!("{SLOT_VAR}={{{{.Service.Name}}}}.{{{{.Task.Slot}}}}"),
                            format!("{TASK_VAR}={{{{.Task.ID}}}}"),
                        ],
                        "StopGracePeriod": 1_000_000_000u64,
                    },
                    "RestartPolicy": {"Condition": "any", "Delay": 1_000_000_000u64},
                },
                "Mode": {"Replicated": {"Replicas": replicas}},
            });
            http.raw("POST", "/services/create", Some(&spec)).await
        }
        Op::Remove => {
            http.raw("DELETE", &format!("/services/{service}"), None)
                .await
        }
        Op::Update { .. } | Op::Scale { .. } => {
            let current = http
                .json("GET", &format!("/services/{service}"), None)
                .await
                .ok()?;
            let version = current["Version"]["Index"].as_u64()?;
            let mut spec = current["Spec"].clone();
            match op {
                Op::Update { generation } => {
                    let env = spec["TaskTemplate"]["ContainerSpec"]["Env"].as_array_mut()?;
                    env.retain(|e| !e.as_str().is_some_and(|e| e.starts_with(GEN_VAR)));
                    env.push(json!(format!("{GEN_VAR}={generation}")));
                }
                Op::Scale { replicas } => {
                    spec["Mode"]["Replicated"]["Replicas"] = json!(replicas);
                }
                _ => {}
            }
            let path = format!("/services/{service}/update?version={version}");
            http.raw("POST", &path, Some(&spec)).await
        }
    };
    Some(match answer {
        Ok((status, body)) => {
            let text = String::from_utf8_lossy(&body).trim().to_string();
            (outcome(status, &text), text)
        }
        Err(e) => {
            let text = e.to_string();
            // No daemon on the socket: nothing was sent.
            let unsent = text.contains("Connection refused") || text.contains("No such file");
            let o = if unsent {
                Outcome::Refused
            } else {
                Outcome::Indeterminate
            };
            (o, text)
        }
    })
}

/// Docker's answers, read as the client must: a 2xx happened; a 4xx, or
/// "no leader" (nothing was sent to one), or a manager that cannot write
/// its disk (it refuses before proposing), did not; anything else may have.
pub fn outcome(status: u16, body: &str) -> Outcome {
    match status {
        200..=299 => Outcome::Acknowledged,
        400..=499 => Outcome::Refused,
        503 if body.contains("cannot write to its data directory") => Outcome::Refused,
        503 if body.contains("The swarm does not have a leader")
            && !body.contains("not confirmed")
            && !body.contains("does not answer") =>
        {
            Outcome::Refused
        }
        _ => Outcome::Indeterminate,
    }
}

/// Samples the task processes every half second until `deadline`: two
/// processes of one slot at once is an overlap (the update order is
/// stop-first), counted unless one of them runs on a host cut off then.
/// Each overlap is logged when it starts and when it ends.
async fn sample(
    deadline: Instant,
    prefix: String,
    faulted: Faults,
    log: Log,
) -> (Vec<String>, Vec<String>) {
    let mut open: BTreeMap<(String, BTreeSet<String>), (Instant, String)> = BTreeMap::new();
    let (mut counted, mut excused) = (Vec::new(), Vec::new());
    while Instant::now() < deadline {
        let prefix2 = prefix.clone();
        let procs = tokio::task::spawn_blocking(move || observe::processes(&prefix2))
            .await
            .unwrap_or_default();
        let mut by_slot: BTreeMap<&str, Vec<&observe::TaskProcess>> = BTreeMap::new();
        for p in &procs {
            by_slot.entry(p.slot.as_str()).or_default().push(p);
        }
        let mut now_open = BTreeSet::new();
        for (slot, ps) in by_slot.into_iter().filter(|(_, ps)| ps.len() > 1) {
            let tasks: BTreeSet<String> = ps.iter().map(|p| p.task.clone()).collect();
            if tasks.len() < 2 {
                continue;
            }
            let key = (slot.to_string(), tasks);
            now_open.insert(key.clone());
            if open.contains_key(&key) {
                continue;
            }
            let where_: Vec<String> = ps
                .iter()
                .map(|p| format!("{} on {}", p.task, p.host.as_deref().unwrap_or("?")))
                .collect();
            let line = format!("slot {slot} ran twice at once: {}", where_.join(", "));
            let excuse = ps
                .iter()
                .any(|p| p.host.as_deref().is_some_and(|h| faulted.cut_off(h)));
            log.event("overlap", json!({ "what": line, "while_cut_off": excuse }));
            if excuse {
                excused.push(line.clone());
            } else {
                counted.push(line.clone());
            }
            open.insert(key, (Instant::now(), line));
        }
        open.retain(|key, (since, line)| {
            let still = now_open.contains(key);
            if !still {
                log.event(
                    "overlap-end",
                    json!({ "what": line, "lasted_s": since.elapsed().as_secs_f64() }),
                );
            }
            still
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    (counted, excused)
}

/// Watches the nodes' states through any manager that answers until
/// `deadline`; returns each move to down of a node whose host had no fault
/// then nor in the [`DOWN_CAUSE`] before.
async fn watch_nodes(
    deadline: Instant,
    managers: BTreeMap<String, String>,
    faulted: Faults,
    log: Log,
) -> Vec<String> {
    let start = Instant::now();
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let mut false_down = Vec::new();
    while Instant::now() < deadline {
        let mut nodes = None;
        for socket in managers.values() {
            let mut c = crate::load::http::Client::new(socket);
            if let Ok(Ok(list)) =
                tokio::time::timeout(Duration::from_secs(1), c.json("GET", "/nodes", None)).await
            {
                nodes = Some(list);
                break;
            }
        }
        for n in nodes
            .as_ref()
            .and_then(|n| n.as_array())
            .into_iter()
            .flatten()
        {
            let (Some(host), Some(state)) = (
                n["Description"]["Hostname"].as_str(),
                n["Status"]["State"].as_str(),
            ) else {
                continue;
            };
            let before = last.insert(host.to_string(), state.to_string());
            if state != "down" || before.is_none() || before.as_deref() == Some("down") {
                continue;
            }
            let caused = faulted.recently(host, DOWN_CAUSE);
            log.event("node-down", json!({ "host": host, "fault": caused }));
            if !caused {
                false_down.push(format!(
                    "{host} marked down at {:.1} s with no fault on it",
                    start.elapsed().as_secs_f64()
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false_down
}

/// Waits until every manager shows a state the model allows for every
/// service, and every service runs its replicas; the violations left at
/// the end of `bound` otherwise.
async fn settle(cluster: &Cluster, model: &Model, bound: Duration) -> Result<(), Vec<String>> {
    let deadline = Instant::now() + bound;
    loop {
        let mut problems = Vec::new();
        for m in &cluster.hosts.managers {
            let mut c = cluster.client(m);
            match c.json("GET", "/services", None).await {
                Ok(list) => {
                    for v in model.check(&observe::services(&list)) {
                        problems.push(format!(
                            "{m} shows {} as {:?}, which no acknowledged history allows ({:?})",
                            v.service, v.observed, v.possible
                        ));
                    }
                }
                Err(e) => problems.push(format!("{m} does not answer: {e}")),
            }
        }
        if problems.is_empty() {
            problems.extend(unconverged(cluster).await);
        }
        if problems.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(problems);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Services (through the leader) whose running tasks are not their
/// replicas of their current generation.
async fn unconverged(cluster: &Cluster) -> Vec<String> {
    let Some(leader) = cluster.leader().await else {
        return vec!["no leader".into()];
    };
    let mut c = cluster.client(&leader);
    let (Ok(services), Ok(tasks)) = (
        c.json("GET", "/services", None).await,
        c.json("GET", "/tasks", None).await,
    ) else {
        return vec![format!("{leader} does not list services and tasks")];
    };
    let mut running: BTreeMap<&str, usize> = BTreeMap::new();
    // What the tasks wanted running but not running are doing: the
    // violation says it, for whoever must find why.
    let mut pending: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for t in tasks.as_array().into_iter().flatten() {
        let service = t["ServiceID"].as_str().unwrap_or_default();
        // Desired ready: a replacement waiting for its slot to be free.
        if t["DesiredState"] != "running" && t["DesiredState"] != "ready" {
            continue;
        }
        if t["Status"]["State"] == "running" && t["DesiredState"] == "running" {
            *running.entry(service).or_default() += 1;
        } else {
            pending.entry(service).or_default().push(format!(
                "task {} (slot {}, desired {}) on {}: {} ({}) since {}",
                t["ID"].as_str().unwrap_or_default(),
                t["Slot"],
                t["DesiredState"].as_str().unwrap_or_default(),
                t["NodeID"].as_str().unwrap_or("no node"),
                t["Status"]["State"].as_str().unwrap_or_default(),
                t["Status"]["Err"]
                    .as_str()
                    .or(t["Status"]["Message"].as_str())
                    .unwrap_or_default(),
                t["Status"]["Timestamp"].as_str().unwrap_or_default(),
            ));
        }
    }
    let mut out = Vec::new();
    for s in services.as_array().into_iter().flatten() {
        let Some(name) = s["Spec"]["Name"].as_str().filter(|n| n.starts_with(PREFIX)) else {
            continue;
        };
        let want = s["Spec"]["Mode"]["Replicated"]["Replicas"]
            .as_u64()
            .unwrap_or(0) as usize;
        let have = running
            .get(s["ID"].as_str().unwrap_or_default())
            .copied()
            .unwrap_or(0);
        if have != want {
            let id = s["ID"].as_str().unwrap_or_default();
            let others = pending.get(id).map(|p| p.join("; ")).unwrap_or_default();
            out.push(format!(
                "{name}: {have} of {want} tasks running; update {}; {others}",
                s["UpdateStatus"]["State"].as_str().unwrap_or("none")
            ));
        }
    }
    out
}

/// Once settled: each running task has exactly one process, and no chaos
/// process runs that the swarm does not want.
async fn processes_match(cluster: &Cluster) -> Vec<String> {
    let Some(leader) = cluster.leader().await else {
        return vec!["no leader for the process check".into()];
    };
    let Ok(tasks) = cluster.client(&leader).json("GET", "/tasks", None).await else {
        return vec!["no task list for the process check".into()];
    };
    let wanted: BTreeSet<String> = tasks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["Status"]["State"] == "running" && t["DesiredState"] == "running")
        .filter_map(|t| t["ID"].as_str().map(str::to_string))
        .collect();
    // A stopping task is given its grace period (a container's stop and
    // removal can take a few seconds more on a busy engine): look again
    // for up to half a minute.
    let mut problems = Vec::new();
    for _ in 0..30 {
        let procs = observe::processes(&cluster.prefix);
        // Each task's processes, and the host of its first.
        let mut found: BTreeMap<&str, (Vec<u32>, Option<&str>)> = BTreeMap::new();
        for p in &procs {
            let (pids, host) = found.entry(p.task.as_str()).or_default();
            pids.push(p.pid);
            host.get_or_insert(p.host.as_deref().unwrap_or("no host of the cluster"));
        }
        problems = Vec::new();
        for (task, (pids, host)) in &found {
            if !wanted.contains(*task) {
                problems.push(format!(
                    "process {pids:?} of task {task} on {}, which the swarm does not run",
                    host.unwrap_or_default()
                ));
            } else if pids.len() > 1 {
                problems.push(format!("task {task} has {} processes", pids.len()));
            }
        }
        for t in &wanted {
            if !found.contains_key(t.as_str()) {
                problems.push(format!("task {t} is running but has no process"));
            }
        }
        if problems.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::super::model::State;
    use super::*;

    #[test]
    fn answers_read_as_a_client_must() {
        assert_eq!(outcome(201, "{}"), Outcome::Acknowledged);
        assert_eq!(outcome(409, "name conflicts"), Outcome::Refused);
        let no_leader = "{\"message\":\"rpc error: code = Unknown desc = The swarm does not have a leader. It's possible…\"}";
        assert_eq!(outcome(503, no_leader), Outcome::Refused);
        let unconfirmed = "{\"message\":\"the write was not confirmed by a majority of managers within 10s. rpc error: code = Unknown desc = The swarm does not have a leader.\"}";
        assert_eq!(outcome(503, unconfirmed), Outcome::Indeterminate);
        assert_eq!(outcome(500, "boom"), Outcome::Indeterminate);
        let full = "{\"message\":\"this manager cannot write to its data directory (I/O error: No space left on device (os error 28)): it refuses writes until it can, and catches up by itself\"}";
        assert_eq!(outcome(503, full), Outcome::Refused);
    }

    #[test]
    fn the_model_states_are_what_the_check_compares() {
        // A create the model records is a state the observer reads back.
        let mut m = Model::default();
        m.record(
            "chaos-c0-1",
            Op::Create { replicas: 2 },
            Outcome::Acknowledged,
        );
        assert_eq!(
            m.possible("chaos-c0-1"),
            [State::Present {
                replicas: 2,
                generation: 0
            }]
        );
    }
}
