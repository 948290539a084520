//! The scale benchmark's driver (`flotilla-sim-load`): load through the
//! Engine API, measurements, and the printed figures.
//!
//! - [`http`]: a keep-alive Engine API client over a unix socket.
//! - [`scale`]: the run itself.
//! - [`procstat`]: RSS and CPU time of a process from /proc.
//! - [`stats`]: percentiles of latency samples.

pub mod http;
pub mod procstat;
pub mod scale;
pub mod stats;

use std::fmt::Write;

use scale::{ProcReport, ScaleReport, ScaleSpec};
use stats::{ms, percentile};

/// SwarmKit's scheduler benchmark: 100,000 tasks on 1,000 nodes (placement
/// only, in-process, no agents).
pub const SWARMKIT_ANCHOR: &str =
    "SwarmKit scheduler benchmark: 100,000 tasks placed on 1,000 nodes in 22.6 s (~4,425/s; placement only, no agents)";
/// HashiCorp's C1M: 1,000,000 containers on 5,000 nodes.
pub const NOMAD_ANCHOR: &str =
    "Nomad C1M: ~3,750 placements/s (1,000,000 containers on 5,000 nodes, 5 servers)";

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn proc_line(what: &str, r: &ProcReport) -> String {
    format!(
        "  {what:<26}pid {}: peak RSS {}, RSS at end {}, CPU {:.1} s during the run ({:.1} s since start)\n",
        r.pid,
        mib(r.peak_rss_bytes),
        mib(r.at_end.rss_bytes),
        r.cpu_during_run().as_secs_f64(),
        r.at_end.cpu.as_secs_f64(),
    )
}

/// One line of `key=value` figures for scripts (bench/scale.sh turns the
/// runs' lines into medians): times in seconds, latencies in
/// milliseconds, memory in MiB. A run that timed out has `converged=0`,
/// `total_s` the time it gave up and `tasks_per_s` the rate so far.
pub fn figures_line(spec: &ScaleSpec, managers: usize, r: &ScaleReport) -> String {
    let total = r
        .converged
        .or_else(|| r.timeline.last().map(|(t, _)| *t))
        .unwrap_or_default()
        .as_secs_f64();
    let done = if r.converged.is_some() {
        r.tasks
    } else {
        r.running
    };
    let ms = |v: &[std::time::Duration], q| {
        percentile(v, q).map_or("-".to_string(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
    };
    let mib = |b: u64| format!("{:.0}", b as f64 / (1024.0 * 1024.0));
    let peak = r
        .managers
        .iter()
        .map(|m| m.peak_rss_bytes)
        .max()
        .unwrap_or(0);
    let cpu: f64 = r
        .managers
        .iter()
        .map(|m| m.cpu_during_run().as_secs_f64())
        .sum();
    let mut out = format!(
        "SCALE nodes={} managers={managers} services={} replicas={} tasks={} converged={} \
         total_s={total:.1} running={} tasks_per_s={:.0} creates={} create_errors={} creates_s={:.1} \
         create_p50_ms={} create_p99_ms={} probe_writes={} probe_p50_ms={} probe_p99_ms={} \
         manager_peak_rss_mib={} manager_cpu_s={cpu:.1} nodes_ready_s={:.1}",
        r.nodes_ready,
        spec.services,
        spec.replicas,
        r.tasks,
        u8::from(r.converged.is_some()),
        r.running,
        done as f64 / total.max(0.001),
        r.create_latencies.len(),
        r.create_errors.len(),
        r.creates_took.as_secs_f64(),
        ms(&r.create_latencies, 50.0),
        ms(&r.create_latencies, 99.0),
        r.probe_latencies.len(),
        ms(&r.probe_latencies, 50.0),
        ms(&r.probe_latencies, 99.0),
        mib(peak),
        r.nodes_wait.as_secs_f64(),
    );
    if let Some(s) = &r.sim {
        let _ = write!(
            out,
            " sim_peak_rss_mib={} sim_cpu_s={:.1}",
            mib(s.peak_rss_bytes),
            s.cpu_during_run().as_secs_f64()
        );
    }
    out
}

/// The figures as text: a block for people, then one Markdown table row
/// (the BENCHMARKS.md columns).
pub fn render(spec: &ScaleSpec, managers: usize, r: &ScaleReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scale: {} simulated nodes, {} manager{}, {} services x {} replicas = {} tasks",
        r.nodes_ready,
        managers,
        if managers == 1 { "" } else { "s" },
        spec.services,
        spec.replicas,
        r.tasks
    );
    let _ = writeln!(
        out,
        "  {:<26}{:.1} s",
        "nodes Ready after",
        r.nodes_wait.as_secs_f64()
    );
    let p = |v: &[std::time::Duration], q| ms(percentile(v, q));
    let _ = writeln!(
        out,
        "  {:<26}{} in {:.1} s ({} clients), p50 {}, p99 {}, max {}; {} failed attempts (retried), {} took effect late, {} abandoned",
        "service creates",
        r.create_latencies.len(),
        r.creates_took.as_secs_f64(),
        spec.concurrency,
        p(&r.create_latencies, 50.0),
        p(&r.create_latencies, 99.0),
        p(&r.create_latencies, 100.0),
        r.create_errors.len(),
        r.creates_late,
        r.creates_abandoned
    );
    if let Some(e) = r.create_errors.first() {
        let _ = writeln!(out, "  {:<26}{e}", "first create error");
    }
    let _ = writeln!(
        out,
        "  {:<26}{} writes, p50 {}, p99 {}, max {}, {} errors",
        "probe updates meanwhile",
        r.probe_latencies.len(),
        p(&r.probe_latencies, 50.0),
        p(&r.probe_latencies, 99.0),
        p(&r.probe_latencies, 100.0),
        r.probe_errors
    );
    match r.converged {
        Some(t) => {
            let _ = writeln!(
                out,
                "  {:<26}{:.1} s after the first create: {:.0} tasks/s",
                "all tasks RUNNING",
                t.as_secs_f64(),
                r.tasks as f64 / t.as_secs_f64()
            );
        }
        None => {
            let at = r
                .timeline
                .last()
                .map(|(t, _)| t.as_secs_f64())
                .unwrap_or(0.0);
            let _ = writeln!(
                out,
                "  {:<26}NOT REACHED: {}/{} RUNNING after {at:.0} s ({:.0} tasks/s so far)",
                "all tasks RUNNING",
                r.running,
                r.tasks,
                r.running as f64 / at.max(0.001)
            );
        }
    }
    for m in &r.managers {
        out.push_str(&proc_line("manager", m));
    }
    if let Some(s) = &r.sim {
        out.push_str(&proc_line("flotilla-sim (all nodes)", s));
    }
    let _ = writeln!(out, "  anchors: {SWARMKIT_ANCHOR}");
    let _ = writeln!(out, "           {NOMAD_ANCHOR}");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| nodes | managers | tasks | to all RUNNING | tasks/s | create p50 | create p99 | write p50 / p99 while converging | manager peak RSS | manager CPU |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let (total, rate) = match r.converged {
        Some(t) => (
            format!("{:.1} s", t.as_secs_f64()),
            format!("{:.0}", r.tasks as f64 / t.as_secs_f64()),
        ),
        None => {
            let at = r
                .timeline
                .last()
                .map(|(t, _)| t.as_secs_f64())
                .unwrap_or(0.0);
            (
                format!("not reached: {}/{} after {at:.0} s", r.running, r.tasks),
                format!("({:.0})", r.running as f64 / at.max(0.001)),
            )
        }
    };
    let peak = r
        .managers
        .iter()
        .map(|m| m.peak_rss_bytes)
        .max()
        .unwrap_or(0);
    let cpu: f64 = r
        .managers
        .iter()
        .map(|m| m.cpu_during_run().as_secs_f64())
        .sum();
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {:.1} s |",
        r.nodes_ready,
        managers,
        r.tasks,
        total,
        rate,
        p(&r.create_latencies, 50.0),
        p(&r.create_latencies, 99.0),
        p(&r.probe_latencies, 50.0),
        p(&r.probe_latencies, 99.0),
        mib(peak),
        cpu
    );
    out
}
