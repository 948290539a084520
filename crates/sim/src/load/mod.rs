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
        "  {:<26}{} in {:.1} s ({} clients), p50 {}, p99 {}, max {}, {} errors",
        "service creates",
        r.create_latencies.len(),
        r.creates_took.as_secs_f64(),
        spec.concurrency,
        p(&r.create_latencies, 50.0),
        p(&r.create_latencies, 99.0),
        p(&r.create_latencies, 100.0),
        r.create_errors.len()
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
