//! `flotilla-sim-load`: the scale benchmark's driver. Waits for the
//! simulated nodes, creates the services through the Engine API, polls
//! until every task runs, samples the managers, and prints the figures.
//! `bench/scale.sh` starts the cluster and calls it.

use std::time::Duration;

use clap::Parser;
use flotilla_sim::load::{self, scale::ScaleSpec};

#[derive(Parser)]
#[command(name = "flotilla-sim-load", version, about = "Scale benchmark driver")]
struct Args {
    /// A manager's API socket (unix:///path); repeat for several managers:
    /// the creating clients take them in turn
    #[arg(short = 'H', long = "host", required = true)]
    hosts: Vec<String>,
    /// Simulated nodes to wait for (Ready) before the run
    #[arg(long)]
    nodes: usize,
    /// Hostname prefix of the simulated nodes
    #[arg(long, default_value = "sim")]
    node_prefix: String,
    #[arg(long, default_value_t = 1000)]
    services: usize,
    #[arg(long, default_value_t = 100)]
    replicas: u64,
    /// Concurrent API clients creating services
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long, default_value = "scale")]
    service_prefix: String,
    /// Manager PID to sample (RSS, CPU); repeat for several
    #[arg(long = "manager-pid")]
    manager_pids: Vec<u32>,
    /// The flotilla-sim process, sampled too
    #[arg(long)]
    sim_pid: Option<u32>,
    /// Seconds to wait for the nodes
    #[arg(long, default_value_t = 600)]
    nodes_timeout: u64,
    /// Seconds from the first create before giving up on convergence
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Milliseconds between polls of the RUNNING count (default: 50, 200
    /// from 1,000 tasks, 1000 from 10,000: each poll costs the manager a
    /// pass over every task)
    #[arg(long)]
    poll_ms: Option<u64>,
    /// Milliseconds between probe writes while converging
    #[arg(long, default_value_t = 500)]
    probe_ms: u64,
    /// Manager count, for the printed figures
    #[arg(long, default_value_t = 1)]
    managers: usize,
}

fn main() {
    let a = Args::parse();
    let default_poll = match a.services as u64 * a.replicas {
        0..1_000 => 50,
        1_000..10_000 => 200,
        _ => 1000,
    };
    let spec = ScaleSpec {
        hosts: a.hosts,
        nodes: a.nodes,
        node_prefix: a.node_prefix,
        services: a.services,
        replicas: a.replicas,
        concurrency: a.concurrency.max(1),
        service_prefix: a.service_prefix,
        manager_pids: a.manager_pids,
        sim_pid: a.sim_pid,
        nodes_timeout: Duration::from_secs(a.nodes_timeout),
        run_timeout: Duration::from_secs(a.timeout),
        poll_every: Duration::from_millis(a.poll_ms.unwrap_or(default_poll).max(10)),
        probe_every: Duration::from_millis(a.probe_ms.max(10)),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flotilla-sim-load: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let log = |line: &str| eprintln!("flotilla-sim-load: {line}");
    match runtime.block_on(load::scale::run(&spec, &log)) {
        Ok(report) => {
            print!("{}", load::render(&spec, a.managers, &report));
            println!("{}", load::figures_line(&spec, a.managers, &report));
            std::process::exit(if report.converged.is_some() { 0 } else { 2 });
        }
        Err(e) => {
            eprintln!("flotilla-sim-load: {e}");
            std::process::exit(1);
        }
    }
}
