//! Convergence display for `service create/update/scale/rollback/restart`
//! and `stack deploy`, after docker/cli's service/progress package (its
//! updaters for replicated, global, replicated-job and global-job
//! services) and the jsonmessage renderer it feeds: on a terminal, one
//! line per id redrawn in place with progress bars; piped, only the lines
//! without a bar, each printed as it comes. Status lines ("job complete")
//! are printed where the cursor is.

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use bollard::models::{Node, Service, Task};

use crate::client::{add_filter, encode, filters_pair, query, CliError, Client, Filters, Result};
use crate::format::{enum_text, truncate_id};

const POLL_INTERVAL: Duration = Duration::from_millis(200);
const DEFAULT_MONITOR: Duration = Duration::from_secs(5);
const MAX_PROGRESS: i64 = 9;
const MAX_PROGRESS_BARS: usize = 20;
const MAX_JOB_PROGRESS: i64 = 10;

/// Task states in order; the numbers drive the bars.
fn state_number(state: &str) -> i64 {
    match state {
        "new" => 1,
        "allocated" => 2,
        "pending" => 3,
        "assigned" => 4,
        "accepted" => 5,
        "preparing" => 6,
        "ready" => 7,
        "starting" => 8,
        "running" => 9,
        "complete" => 10,
        "shutdown" => 11,
        "failed" => 12,
        "rejected" => 13,
        _ => 0,
    }
}

fn terminal_state(state: &str) -> bool {
    state_number(state) > state_number("running")
}

/// Longest non-terminal state name ("preparing"), plus "complete" for jobs.
const LONGEST_STATE: usize = 9;

/// One progress message, as docker's progress.Progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub action: String,
    /// (current, total) when the message draws a bar.
    pub bar: Option<(i64, i64)>,
    /// The unit counted after the bar ("1/2 nodes"); `None` hides the
    /// counts (docker's HideCounts, as the service bars do).
    pub units: Option<&'static str>,
    /// A status line (docker's progress.Message) rather than a progress
    /// update: printed where the cursor is, never redrawn, and it ends the
    /// block of lines redrawn in place.
    pub plain: bool,
}

pub(crate) fn msg(id: &str, action: impl Into<String>) -> Message {
    Message {
        id: id.to_string(),
        action: action.into(),
        bar: None,
        units: None,
        plain: false,
    }
}

/// docker's progress.Message: a status line, not a progress update.
pub(crate) fn status_line(id: &str, text: impl Into<String>) -> Message {
    Message {
        plain: true,
        ..msg(id, text)
    }
}

/// A progress update that draws a bar of `current` out of `total`.
fn bar(id: &str, action: impl Into<String>, current: i64, total: i64) -> Message {
    Message {
        bar: Some((current, total)),
        ..msg(id, action)
    }
}

/// A bar of `current` out of `total` followed by the counts in `units`
/// ("1/2 nodes"), as the swarm CA rotation draws them.
pub(crate) fn counted_bar(
    id: &str,
    action: impl Into<String>,
    current: i64,
    total: i64,
    units: &'static str,
) -> Message {
    Message {
        units: Some(units),
        ..bar(id, action, current, total)
    }
}

/// Renders messages like jsonmessage.DisplayJSONMessagesStream.
pub struct Display<W: Write> {
    out: W,
    tty: bool,
    width: usize,
    lines: HashMap<String, usize>,
}

impl<W: Write> Display<W> {
    pub fn new(out: W, tty: bool, width: usize) -> Self {
        Display {
            out,
            tty,
            width,
            lines: HashMap::new(),
        }
    }

    pub fn show(&mut self, message: &Message) {
        if message.plain {
            // jsonmessage: no progress, so no line to redraw; what was
            // drawn before stays as it is.
            self.lines.clear();
            if message.id.is_empty() {
                let _ = writeln!(self.out, "{}", message.action);
            } else {
                let _ = writeln!(self.out, "{}: {}", message.id, message.action);
            }
            let _ = self.out.flush();
            return;
        }
        if !self.tty {
            // Without a terminal docker drops every message that would draw a bar.
            let draws_bar = message
                .bar
                .is_some_and(|(current, total)| current > 0 || total > 0);
            if !draws_bar && message.id.is_empty() {
                let _ = writeln!(self.out, "{}", message.action);
            } else if !draws_bar {
                let _ = writeln!(self.out, "{}: {}", message.id, message.action);
            }
            let _ = self.out.flush();
            return;
        }
        let bar_text = match (message.bar, message.units) {
            (Some((current, total)), Some(units)) => self.counted(current, total, units),
            (Some((current, total)), None) => self.bar(current, total),
            (None, _) => String::new(),
        };
        let count = self.lines.len();
        let line = *self.lines.entry(message.id.clone()).or_insert(count);
        if line == count {
            let _ = writeln!(self.out);
        }
        let diff = self.lines.len() - line;
        let _ = write!(
            self.out,
            "\x1b[{diff}A\x1b[2K\r{}: {} {}\r",
            message.id, message.action, bar_text
        );
        let _ = write!(self.out, "\x1b[{diff}B");
        let _ = self.out.flush();
    }

    /// jsonmessage's JSONProgress.String with HideCounts: a 50-wide bar when
    /// the terminal is wider than 110 columns, else nothing.
    fn bar(&self, current: i64, total: i64) -> String {
        if current <= 0 && total <= 0 {
            return String::new();
        }
        if self.width <= 110 || total <= 0 {
            return String::new();
        }
        let percentage = ((current as f64 / total as f64 * 100.0) as i64 / 2).min(50) as usize;
        format!(
            "[{}>{}] ",
            "=".repeat(percentage),
            " ".repeat(50 - percentage)
        )
    }

    /// jsonmessage's JSONProgress.String with Units: the bar when the
    /// terminal is wider than 110 columns, then "current/total units"
    /// ("current units" when current passed total or there is no total).
    fn counted(&self, current: i64, total: i64, units: &str) -> String {
        if current <= 0 && total <= 0 {
            return String::new();
        }
        if total <= 0 {
            return format!("{current} {units}");
        }
        let percentage = ((current as f64 / total as f64 * 100.0) as i64 / 2).min(50);
        let mut text = String::new();
        if self.width > 110 {
            let filled = percentage.max(0) as usize;
            text = format!("[{}>{}] ", "=".repeat(filled), " ".repeat(50 - filled));
        }
        if current > total {
            text.push_str(&format!("{current} {units}"));
        } else {
            text.push_str(&format!("{current}/{total} {units}"));
        }
        text
    }
}

pub(crate) fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ only writes into the winsize struct we pass.
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        // As moby/term: a terminal that reports 0 columns is 0 wide (no bars).
        if libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) == 0 {
            return size.ws_col as usize;
        }
    }
    200
}

/// Polls until the service converges (docker's ServiceProgress + WaitOnService).
pub async fn wait_on_service(client: &Client, service_id: &str, quiet: bool) -> Result<()> {
    let stdout = std::io::stdout();
    let tty = stdout.is_terminal();
    let mut display = Display::new(stdout, tty, terminal_width());
    let mut sink = Display::new(std::io::sink(), false, 0);
    let display: &mut dyn Shower = if quiet { &mut sink } else { &mut display };
    tokio::select! {
        result = service_progress(client, service_id, display) => result,
        _ = tokio::signal::ctrl_c() => {
            if !quiet {
                println!("Operation continuing in background.");
                println!("Use `{} service ps {service_id}` to check progress.", crate::PROGRAM);
            }
            Ok(())
        }
    }
}

/// Object-safe view of a Display, so quiet mode can swap in a sink.
trait Shower: Send {
    fn show(&mut self, message: &Message);
}

impl<W: Write + Send> Shower for Display<W> {
    fn show(&mut self, message: &Message) {
        Display::show(self, message)
    }
}

async fn service_progress(
    client: &Client,
    service_id: &str,
    display: &mut dyn Shower,
) -> Result<()> {
    let mut updater: Option<Updater> = None;
    let mut converged = false;
    let mut converged_at: Option<Instant> = None;
    let mut rollback = false;
    let mut final_message: Option<Message> = None;
    loop {
        let service: Service = client
            .get(&format!("/services/{}", encode(service_id)))
            .await?;
        let monitor = monitor_period(&service);
        let updater = updater.get_or_insert(Updater::for_service(&service)?);
        if let Some(status) = &service.update_status {
            let message = status.message.clone().unwrap_or_default();
            match enum_text(&status.state).as_str() {
                "updating" => rollback = false,
                "completed" if !converged => return Ok(()),
                "paused" => {
                    return Err(CliError::Other(format!("service update paused: {message}")))
                }
                "rollback_started" => {
                    if !rollback && !message.is_empty() {
                        display.show(&msg("rollback", message));
                    }
                    rollback = true;
                }
                "rollback_paused" => {
                    return Err(CliError::Other(format!(
                        "service rollback paused: {message}"
                    )))
                }
                "rollback_completed" => {
                    if !converged {
                        final_message = Some(status_line("rollback", message));
                    }
                    rollback = true;
                }
                _ => {}
            }
        }
        if let (true, Some(at)) = (converged, converged_at) {
            if at.elapsed() >= monitor {
                display.show(&msg("verify", format!("Service {service_id} converged")));
                if let Some(message) = &final_message {
                    display.show(message);
                }
                return Ok(());
            }
        }
        let tasks = up_to_date_tasks(client, &service).await?;
        let active = active_nodes(client).await?;
        let (now_converged, messages) = updater.update(&service, &tasks, &active, rollback)?;
        for message in &messages {
            display.show(message);
        }
        converged = now_converged;
        // Only jobs have a JobStatus; they stay done once done, so there is
        // nothing to verify.
        if converged && service.job_status.is_some() {
            display.show(&status_line("", "job complete"));
            return Ok(());
        }
        if converged {
            let at = *converged_at.get_or_insert_with(Instant::now);
            if let Some(wait) = monitor.checked_sub(at.elapsed()) {
                let seconds = wait.as_secs() + 1;
                display.show(&msg(
                    "verify",
                    format!("Waiting {seconds} seconds to verify that tasks are stable..."),
                ));
            }
        } else {
            if converged_at.is_some() {
                display.show(&msg("verify", "Detected task failure"));
            }
            converged_at = None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn monitor_period(service: &Service) -> Duration {
    service
        .spec
        .as_ref()
        .and_then(|s| s.update_config.as_ref())
        .and_then(|u| u.monitor)
        .filter(|m| *m > 0)
        .map_or(DEFAULT_MONITOR, |m| Duration::from_nanos(m as u64))
}

async fn up_to_date_tasks(client: &Client, service: &Service) -> Result<Vec<Task>> {
    let mut filters = Filters::new();
    add_filter(
        &mut filters,
        "service",
        service.id.as_deref().unwrap_or_default(),
    );
    add_filter(&mut filters, "_up-to-date", "true");
    let path = format!(
        "/tasks{}",
        query(&filters_pair(&filters).into_iter().collect::<Vec<_>>())
    );
    client.get(&path).await
}

async fn active_nodes(client: &Client) -> Result<HashSet<String>> {
    let nodes: Vec<Node> = client.get("/nodes").await?;
    Ok(nodes
        .into_iter()
        .filter(|n| enum_text(&n.status.as_ref().and_then(|s| s.state)) != "down")
        .filter_map(|n| n.id)
        .collect())
}

/// The per-mode progress bookkeeping of docker's progressUpdaters.
pub enum Updater {
    Replicated {
        slots: HashMap<i64, usize>,
        initialized: bool,
        done: bool,
    },
    Global {
        initialized: bool,
        done: bool,
    },
    /// docker's replicatedJobProgressUpdater: the tasks of the job's
    /// iteration when the display started, by slot.
    ReplicatedJob {
        iteration: u64,
        concurrent: i64,
        total: i64,
        initialized: bool,
        progress_digits: usize,
        active_digits: usize,
    },
    /// docker's globalJobProgressUpdater: the nodes that had a task when
    /// the display started (later ones are not waited for).
    GlobalJob {
        initialized: bool,
        total: usize,
        progress_digits: usize,
        nodes: HashSet<String>,
    },
}

/// A task that completed and that its restart policy will not start again
/// (condition none or on-failure) has converged: docker waits for it to be
/// running and so never returns on a one-shot service (docker/cli#5299).
fn finished_one_shot(service: &Service, task: &TaskView) -> bool {
    let condition = service
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.restart_policy.as_ref())
        .map(|r| enum_text(&r.condition))
        .unwrap_or_default();
    task.state == "complete" && (condition == "none" || condition == "on-failure")
}

#[derive(Default, Clone)]
struct TaskView {
    slot: i64,
    node: String,
    desired: String,
    state: String,
    err: String,
    /// The job iteration the task belongs to; None for a service's task.
    iteration: Option<u64>,
}

fn view(task: &Task) -> TaskView {
    let status = task.status.clone().unwrap_or_default();
    TaskView {
        slot: task.slot.unwrap_or(0),
        node: task.node_id.clone().unwrap_or_default(),
        desired: enum_text(&task.desired_state),
        state: enum_text(&status.state),
        err: status.err.unwrap_or_default(),
        iteration: task.job_iteration.as_ref().map(|v| v.index.unwrap_or(0)),
    }
}

/// The service's current job iteration (0 when it has none).
fn job_iteration(service: &Service) -> u64 {
    service
        .job_status
        .as_ref()
        .and_then(|j| j.job_iteration.as_ref())
        .and_then(|v| v.index)
        .unwrap_or(0)
}

/// How many characters `n` takes printed (Go's len(strconv.Itoa(n))).
fn digits(n: i64) -> usize {
    n.to_string().len()
}

impl Updater {
    pub fn for_service(service: &Service) -> Result<Updater> {
        let mode = service
            .spec
            .as_ref()
            .and_then(|s| s.mode.clone())
            .unwrap_or_default();
        if mode
            .replicated
            .as_ref()
            .is_some_and(|r| r.replicas.is_some())
        {
            Ok(Updater::Replicated {
                slots: HashMap::new(),
                initialized: false,
                done: false,
            })
        } else if mode.global.is_some() {
            Ok(Updater::Global {
                initialized: false,
                done: false,
            })
        } else if let Some(job) = &mode.replicated_job {
            // The daemon fills both in at create; its defaults otherwise.
            let concurrent = job.max_concurrent.unwrap_or(1);
            let total = job.total_completions.unwrap_or(concurrent);
            Ok(Updater::ReplicatedJob {
                iteration: job_iteration(service),
                concurrent,
                total,
                initialized: false,
                progress_digits: digits(total),
                active_digits: digits(concurrent),
            })
        } else if mode.global_job.is_some() {
            Ok(Updater::GlobalJob {
                initialized: false,
                total: 0,
                progress_digits: 0,
                nodes: HashSet::new(),
            })
        } else {
            Err("unrecognized service mode".into())
        }
    }

    /// One poll: returns whether the service converged (a job: completed),
    /// and the messages to show.
    pub fn update(
        &mut self,
        service: &Service,
        tasks: &[Task],
        active: &HashSet<String>,
        rollback: bool,
    ) -> Result<(bool, Vec<Message>)> {
        let mut views: Vec<TaskView> = tasks.iter().map(view).collect();
        match self {
            Updater::ReplicatedJob {
                iteration,
                concurrent,
                total,
                initialized,
                progress_digits,
                active_digits,
            } => {
                let job = ReplicatedJob {
                    iteration: *iteration,
                    concurrent: *concurrent,
                    total: *total,
                    progress_digits: *progress_digits,
                    active_digits: *active_digits,
                };
                Ok(job.update(initialized, &views))
            }
            Updater::GlobalJob {
                initialized,
                total,
                progress_digits,
                nodes,
            } => Ok(update_global_job(
                job_iteration(service),
                initialized,
                total,
                progress_digits,
                nodes,
                &views,
                active,
            )),
            Updater::Replicated {
                slots,
                initialized,
                done,
            } => {
                for task in views.iter_mut() {
                    if finished_one_shot(service, task) {
                        task.state = "running".into();
                        task.desired = "running".into();
                    }
                }
                let replicas = service
                    .spec
                    .as_ref()
                    .and_then(|s| s.mode.as_ref())
                    .and_then(|m| m.replicated.as_ref())
                    .and_then(|r| r.replicas)
                    .ok_or("no replica count")? as usize;
                Ok(update_replicated(
                    slots,
                    initialized,
                    done,
                    replicas,
                    &views,
                    active,
                    rollback,
                ))
            }
            Updater::Global { initialized, done } => {
                for task in views.iter_mut() {
                    if finished_one_shot(service, task) {
                        task.state = "running".into();
                        task.desired = "running".into();
                    }
                }
                Ok(update_global(initialized, done, &views, active, rollback))
            }
        }
    }
}

/// The fixed numbers of docker's replicatedJobProgressUpdater.
struct ReplicatedJob {
    iteration: u64,
    concurrent: i64,
    total: i64,
    progress_digits: usize,
    active_digits: usize,
}

impl ReplicatedJob {
    /// "job progress" (completed out of TotalCompletions, with a bar), then
    /// "active tasks": those not yet complete out of the fewer of
    /// MaxConcurrent and the completions still to go.
    fn overall(&self, active: i64, completed: i64) -> Vec<Message> {
        let desired = (self.total - completed).min(self.concurrent);
        let (pd, ad) = (self.progress_digits, self.active_digits);
        vec![
            bar(
                "job progress",
                format!("{completed:>pd$} out of {} complete", self.total),
                completed,
                self.total,
            ),
            msg(
                "active tasks",
                format!("{active:>ad$} out of {desired:>ad$} tasks"),
            ),
        ]
    }

    fn task(&self, task: &TaskView) -> Option<Message> {
        if self.total > MAX_PROGRESS_BARS as i64 {
            return None;
        }
        let id = format!("{}/{}", task.slot + 1, self.total);
        if !task.err.is_empty() {
            return Some(msg(&id, trunc_error(&task.err)));
        }
        Some(bar(
            &id,
            format!("{:<LONGEST_STATE$}", task.state),
            state_number(&task.state),
            MAX_JOB_PROGRESS,
        ))
    }

    fn update(&self, initialized: &mut bool, tasks: &[TaskView]) -> (bool, Vec<Message>) {
        let mut messages = Vec::new();
        if !*initialized {
            messages.extend(self.overall(0, 0));
            if self.total <= MAX_PROGRESS_BARS as i64 {
                for i in 1..=self.total {
                    messages.push(msg(&format!("{i}/{}", self.total), " "));
                }
            }
            *initialized = true;
        }
        // Per slot, the task of this iteration in the lowest state.
        let mut by_slot: HashMap<i64, &TaskView> = HashMap::new();
        for task in tasks {
            if task.iteration != Some(self.iteration) {
                continue;
            }
            if state_number(&task.desired) == 0 || state_number(&task.state) == 0 {
                continue;
            }
            match by_slot.get(&task.slot) {
                Some(existing) if state_number(&existing.state) <= state_number(&task.state) => {}
                _ => {
                    by_slot.insert(task.slot, task);
                }
            }
        }
        let (mut active, mut complete) = (0, 0);
        // As docker: slots 0 to len-1, a missing one read as an empty task.
        let empty = TaskView::default();
        for slot in 0..by_slot.len() as i64 {
            let task = by_slot.get(&slot).copied().unwrap_or(&empty);
            messages.extend(self.task(task));
            if state_number(&task.state) < state_number("complete") {
                active += 1;
            }
            if task.state == "complete" {
                complete += 1;
            }
        }
        messages.extend(self.overall(active, complete));
        (complete == self.total, messages)
    }
}

/// docker's globalJobProgressUpdater: waits for the first tasks, then
/// counts the completed ones among the nodes seen then.
fn update_global_job(
    iteration: u64,
    initialized: &mut bool,
    total: &mut usize,
    progress_digits: &mut usize,
    nodes: &mut HashSet<String>,
    tasks: &[TaskView],
    active: &HashSet<String>,
) -> (bool, Vec<Message>) {
    let overall = |complete: usize, total: usize, digits: usize| {
        bar(
            "job progress",
            format!("{complete:>digits$} out of {total} complete"),
            complete as i64,
            total as i64,
        )
    };
    let mut messages = Vec::new();
    if !*initialized {
        if tasks.is_empty() && !active.is_empty() {
            return (false, vec![msg("job progress", "waiting for tasks")]);
        }
        *nodes = tasks
            .iter()
            .filter(|t| t.iteration == Some(iteration))
            .map(|t| t.node.clone())
            .collect();
        *total = nodes.len();
        *progress_digits = digits(*total as i64);
        messages.push(overall(0, *total, *progress_digits));
        *initialized = true;
    }
    let mut by_node: std::collections::BTreeMap<&str, &TaskView> = Default::default();
    for task in tasks {
        if task.iteration != Some(iteration) || !nodes.contains(&task.node) {
            continue;
        }
        match by_node.get(task.node.as_str()) {
            Some(existing) if state_number(&existing.state) <= state_number(&task.state) => {}
            _ => {
                by_node.insert(&task.node, task);
            }
        }
    }
    let mut complete = 0;
    for (node, task) in &by_node {
        if *total <= MAX_PROGRESS_BARS {
            // docker shows the whole node ID here.
            messages.push(if task.err.is_empty() {
                bar(
                    node,
                    format!("{:<LONGEST_STATE$}", task.state),
                    state_number(&task.state),
                    MAX_JOB_PROGRESS,
                )
            } else {
                msg(node, trunc_error(&task.err))
            });
        }
        if task.state == "complete" {
            complete += 1;
        }
    }
    messages.push(overall(complete, *total, *progress_digits));
    (complete == *total, messages)
}

fn overall(running: usize, total: usize, rollback: bool) -> Message {
    if rollback {
        msg(
            "overall progress",
            format!("rolling back update: {running} out of {total} tasks"),
        )
    } else {
        msg(
            "overall progress",
            format!("{running} out of {total} tasks"),
        )
    }
}

/// Prefers, per key, the task with the lowest desired state, then the lowest
/// observed state (docker's tasksBySlot / tasksByNode).
fn better(existing: &TaskView, candidate: &TaskView) -> bool {
    let (ed, cd) = (
        state_number(&existing.desired),
        state_number(&candidate.desired),
    );
    !(ed < cd || (ed == cd && state_number(&existing.state) <= state_number(&candidate.state)))
}

fn update_replicated(
    slots: &mut HashMap<i64, usize>,
    initialized: &mut bool,
    done: &mut bool,
    replicas: usize,
    tasks: &[TaskView],
    active: &HashSet<String>,
    rollback: bool,
) -> (bool, Vec<Message>) {
    let mut messages = Vec::new();
    if !*initialized {
        messages.push(overall(0, replicas, rollback));
        if replicas <= MAX_PROGRESS_BARS {
            for i in 1..=replicas {
                messages.push(msg(&format!("{i}/{replicas}"), " "));
            }
        }
        *initialized = true;
    }
    let mut by_slot: std::collections::BTreeMap<i64, &TaskView> = Default::default();
    for task in tasks {
        if state_number(&task.desired) == 0 || state_number(&task.state) == 0 {
            continue;
        }
        if by_slot
            .get(&task.slot)
            .is_some_and(|existing| !better(existing, task))
        {
            continue;
        }
        if !task.node.is_empty() && !active.contains(&task.node) {
            continue;
        }
        by_slot.insert(task.slot, task);
    }
    if *done && by_slot.values().any(|t| t.state != "running") {
        *done = false;
    }
    let mut running = 0;
    for task in by_slot.values() {
        let next = slots.len() + 1;
        let mapped = *slots.entry(task.slot).or_insert(next);
        if !terminal_state(&task.desired) && task.state == "running" {
            running += 1;
        }
        if !*done && replicas <= MAX_PROGRESS_BARS && mapped <= replicas {
            messages.extend(task_message(&format!("{mapped}/{replicas}"), task));
        }
    }
    if !*done {
        messages.push(overall(running, replicas, rollback));
        if running == replicas {
            *done = true;
        }
    }
    (running == replicas, messages)
}

fn update_global(
    initialized: &mut bool,
    done: &mut bool,
    tasks: &[TaskView],
    active: &HashSet<String>,
    rollback: bool,
) -> (bool, Vec<Message>) {
    let mut messages = Vec::new();
    let mut by_node: std::collections::BTreeMap<&str, &TaskView> = Default::default();
    for task in tasks {
        if state_number(&task.desired) == 0 || state_number(&task.state) == 0 {
            continue;
        }
        if by_node
            .get(task.node.as_str())
            .is_some_and(|existing| !better(existing, task))
        {
            continue;
        }
        by_node.insert(&task.node, task);
    }
    let node_count = by_node.len();
    if !*initialized {
        if node_count == 0 {
            return (
                false,
                vec![msg("overall progress", "waiting for new tasks")],
            );
        }
        messages.push(overall(0, node_count, rollback));
        *initialized = true;
    }
    if *done && by_node.values().any(|t| t.state != "running") {
        *done = false;
    }
    let mut running = 0;
    for task in by_node.values().filter(|t| active.contains(&t.node)) {
        if !terminal_state(&task.desired) && task.state == "running" {
            running += 1;
        }
        if !*done && node_count <= MAX_PROGRESS_BARS {
            messages.extend(task_message(&truncate_id(&task.node), task));
        }
    }
    if !*done {
        messages.push(overall(running, node_count, rollback));
        if running == node_count {
            *done = true;
        }
    }
    (running == node_count, messages)
}

/// A task's line: its error, or its state with a bar.
fn task_message(id: &str, task: &TaskView) -> Option<Message> {
    if !task.err.is_empty() {
        return Some(msg(id, trunc_error(&task.err)));
    }
    if terminal_state(&task.desired) || terminal_state(&task.state) {
        return None;
    }
    Some(bar(
        id,
        format!("{:<LONGEST_STATE$}", task.state),
        state_number(&task.state),
        MAX_PROGRESS,
    ))
}

fn trunc_error(err: &str) -> String {
    let err = err.replace('\n', " ");
    if err.len() > 75 {
        let cut: String = err.chars().take(74).collect();
        format!("{cut}…")
    } else {
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(replicas: i64) -> Service {
        serde_json::from_value(
            json!({"ID": "s1", "Spec": {"Mode": {"Replicated": {"Replicas": replicas}}}}),
        )
        .unwrap()
    }

    fn task(slot: i64, state: &str) -> Task {
        serde_json::from_value(json!({"Slot": slot, "NodeID": "n1", "DesiredState": "running", "Status": {"State": state}})).unwrap()
    }

    fn piped(messages: &[Message]) -> String {
        let mut display = Display::new(Vec::new(), false, 0);
        for m in messages {
            display.show(m);
        }
        String::from_utf8(display.out).unwrap()
    }

    #[test]
    fn replicated_progress_when_piped() {
        let svc = service(2);
        let mut updater = Updater::for_service(&svc).unwrap();
        let active: HashSet<String> = ["n1".to_string()].into();
        let (done, first) = updater
            .update(
                &svc,
                &[task(1, "preparing"), task(2, "running")],
                &active,
                false,
            )
            .unwrap();
        assert!(!done);
        assert_eq!(piped(&first), "overall progress: 0 out of 2 tasks\n1/2:  \n2/2:  \noverall progress: 1 out of 2 tasks\n");
        let (done, second) = updater
            .update(
                &svc,
                &[task(1, "running"), task(2, "running")],
                &active,
                false,
            )
            .unwrap();
        assert!(done);
        assert_eq!(piped(&second), "overall progress: 2 out of 2 tasks\n");
    }

    #[test]
    fn tty_draws_bars_in_place() {
        let mut display = Display::new(Vec::new(), true, 120);
        display.show(&msg("overall progress", "0 out of 1 tasks"));
        display.show(&bar("1/1", "running  ", 9, 9));
        let text = String::from_utf8(display.out).unwrap();
        assert_eq!(
            text,
            format!(
                "\n\x1b[1A\x1b[2K\roverall progress: 0 out of 1 tasks \r\x1b[1B\n\x1b[1A\x1b[2K\r1/1: running   [{}>] \r\x1b[1B",
                "=".repeat(50)
            )
        );
    }

    #[test]
    fn errors_are_shown_instead_of_bars() {
        let mut t = task(1, "rejected");
        if let Some(status) = t.status.as_mut() {
            status.err = Some("No such image: x".into());
        }
        let view = view(&t);
        assert_eq!(
            task_message("1/1", &view),
            Some(msg("1/1", "No such image: x"))
        );
    }

    fn job_task(slot: i64, node: &str, state: &str, iteration: i64) -> Task {
        serde_json::from_value(json!({
            "Slot": slot, "NodeID": node, "DesiredState": "complete",
            "Status": {"State": state}, "JobIteration": {"Index": iteration}
        }))
        .unwrap()
    }

    fn poll(updater: &mut Updater, svc: &Service, tasks: &[Task]) -> (bool, String) {
        let active: HashSet<String> = ["n1".to_string(), "n2".to_string()].into();
        let (done, messages) = updater.update(svc, tasks, &active, false).unwrap();
        (done, piped(&messages))
    }

    #[test]
    fn replicated_job_progress_as_docker_prints_it_piped() {
        let svc: Service = serde_json::from_value(json!({
            "ID": "j1",
            "Spec": {"Mode": {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 3}}},
            "JobStatus": {"JobIteration": {"Index": 1}}
        }))
        .unwrap();
        let mut updater = Updater::for_service(&svc).unwrap();
        // The lines docker 28 printed for this job, poll by poll.
        assert_eq!(
            poll(&mut updater, &svc, &[]),
            (
                false,
                "active tasks: 0 out of 2 tasks\n1/3:  \n2/3:  \n3/3:  \nactive tasks: 0 out of 2 tasks\n"
                    .to_string()
            )
        );
        // A task of the previous iteration does not count.
        let old = job_task(0, "n1", "complete", 0);
        assert_eq!(
            poll(
                &mut updater,
                &svc,
                &[
                    old.clone(),
                    job_task(0, "n1", "running", 1),
                    job_task(1, "n1", "starting", 1)
                ]
            ),
            (false, "active tasks: 2 out of 2 tasks\n".to_string())
        );
        assert_eq!(
            poll(
                &mut updater,
                &svc,
                &[
                    job_task(0, "n1", "complete", 1),
                    job_task(1, "n1", "complete", 1),
                    job_task(2, "n1", "running", 1)
                ]
            ),
            (false, "active tasks: 1 out of 1 tasks\n".to_string())
        );
        let all: Vec<Task> = (0..3).map(|s| job_task(s, "n1", "complete", 1)).collect();
        assert_eq!(
            poll(&mut updater, &svc, &all),
            (true, "active tasks: 0 out of 0 tasks\n".to_string())
        );
        // A failed task shows its error instead of a bar.
        let mut failed = job_task(1, "n1", "failed", 1);
        if let Some(status) = failed.status.as_mut() {
            status.err = Some("task: non-zero exit (1)".into());
        }
        let (done, text) = poll(&mut updater, &svc, &[all[0].clone(), failed]);
        assert!(!done);
        assert_eq!(
            text,
            "2/3: task: non-zero exit (1)\nactive tasks: 0 out of 2 tasks\n"
        );
    }

    #[test]
    fn replicated_job_counts_are_padded_and_bars_drawn() {
        let svc: Service = serde_json::from_value(json!({
            "ID": "j1",
            "Spec": {"Mode": {"ReplicatedJob": {"MaxConcurrent": 10, "TotalCompletions": 12}}},
            "JobStatus": {"JobIteration": {}}
        }))
        .unwrap();
        let mut updater = Updater::for_service(&svc).unwrap();
        let active = HashSet::new();
        let (_, messages) = updater
            .update(&svc, &[job_task(0, "n1", "running", 0)], &active, false)
            .unwrap();
        assert_eq!(
            messages[0],
            bar("job progress", " 0 out of 12 complete", 0, 12)
        );
        assert_eq!(messages[1], msg("active tasks", " 0 out of 10 tasks"));
        assert_eq!(messages[2], msg("1/12", " "));
        let tail = &messages[messages.len() - 3..];
        assert_eq!(tail[0], bar("1/12", "running  ", 9, 10));
        assert_eq!(tail[2], msg("active tasks", " 1 out of 10 tasks"));
        // More than 20 completions: no line per task.
        let svc: Service = serde_json::from_value(json!({
            "ID": "j1",
            "Spec": {"Mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 21}}},
            "JobStatus": {"JobIteration": {}}
        }))
        .unwrap();
        let mut updater = Updater::for_service(&svc).unwrap();
        let (_, messages) = updater
            .update(&svc, &[job_task(0, "n1", "running", 0)], &active, false)
            .unwrap();
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "job progress",
                "active tasks",
                "job progress",
                "active tasks"
            ]
        );
    }

    #[test]
    fn global_job_progress() {
        let svc: Service = serde_json::from_value(json!({
            "ID": "g1",
            "Spec": {"Mode": {"GlobalJob": {}}},
            "JobStatus": {"JobIteration": {"Index": 2}}
        }))
        .unwrap();
        let mut updater = Updater::for_service(&svc).unwrap();
        assert_eq!(
            poll(&mut updater, &svc, &[]),
            (false, "job progress: waiting for tasks\n".to_string())
        );
        let active = HashSet::from(["n1".to_string(), "n2".to_string()]);
        let (done, messages) = updater
            .update(
                &svc,
                &[
                    job_task(0, "n1", "running", 2),
                    job_task(0, "n2", "preparing", 2),
                    job_task(0, "n2", "complete", 1),
                ],
                &active,
                false,
            )
            .unwrap();
        assert!(!done);
        assert_eq!(
            messages,
            [
                bar("job progress", "0 out of 2 complete", 0, 2),
                bar("n1", "running  ", 9, 10),
                bar("n2", "preparing", 6, 10),
                bar("job progress", "0 out of 2 complete", 0, 2),
            ]
        );
        // Piped, every line draws a bar: nothing is printed.
        assert_eq!(piped(&messages), "");
        // A node that shows up later is not waited for.
        let (done, messages) = updater
            .update(
                &svc,
                &[
                    job_task(0, "n1", "complete", 2),
                    job_task(0, "n2", "complete", 2),
                    job_task(0, "n3", "running", 2),
                ],
                &active,
                false,
            )
            .unwrap();
        assert!(done);
        assert_eq!(
            messages.last(),
            Some(&bar("job progress", "2 out of 2 complete", 2, 2))
        );
    }

    #[test]
    fn status_lines_are_printed_where_the_cursor_is() {
        let mut display = Display::new(Vec::new(), true, 120);
        display.show(&bar("job progress", "1 out of 1 complete", 1, 1));
        display.show(&status_line("", "job complete"));
        // After a status line, a progress id starts a new block.
        display.show(&msg("job progress", "x"));
        let text = String::from_utf8(display.out).unwrap();
        assert_eq!(
            text,
            format!(
                "\n\x1b[1A\x1b[2K\rjob progress: 1 out of 1 complete [{}>] \r\x1b[1Bjob complete\n\n\x1b[1A\x1b[2K\rjob progress: x \r\x1b[1B",
                "=".repeat(50)
            )
        );
        let mut display = Display::new(Vec::new(), false, 0);
        display.show(&status_line("rollback", "rolled back"));
        display.show(&status_line("", "job complete"));
        assert_eq!(
            String::from_utf8(display.out).unwrap(),
            "rollback: rolled back\njob complete\n"
        );
    }
}
