//! `flotilla-chaos`: seeded fault schedules against a cluster of network-
//! namespace hosts (scripts/cluster.sh), with clients whose every answer
//! is checked against what the swarm shows once the faults heal. Each seed
//! gets a fresh cluster; the schedule and every operation go to the log, so
//! a failing seed replays with `--seed N`. Exits 1 when a run found a
//! violation.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use flotilla_sim::chaos::cluster::Cluster;
use flotilla_sim::chaos::run::{self, Config, Log, Report};
use flotilla_sim::chaos::schedule::{Hosts, Kind};

#[derive(Parser, Debug)]
#[command(
    name = "flotilla-chaos",
    about = "Seeded fault schedules against a Flotilla cluster, with the checks"
)]
struct Args {
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many seeds, from --seed on.
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// How long the faults and clients run, per seed (seconds).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Which faults: kill, partition, partition-leader, pause-leader, double,
    /// disk-full.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,partition,partition-leader,pause-leader,double,disk-full"
    )]
    faults: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    #[arg(long, default_value_t = 3)]
    managers: u32,
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// docker or process.
    #[arg(long, default_value = "process")]
    executor: String,
    /// The cluster's name for cluster.sh (and its network namespaces).
    #[arg(long, default_value = "chaos")]
    prefix: String,
    /// The cluster's /24, three octets.
    #[arg(long, default_value = "10.213.90")]
    subnet: String,
    /// How long the swarm may take to settle once every host is back (seconds).
    #[arg(long, default_value_t = 90)]
    settle: u64,
    /// Where the schedule and every operation are logged (JSON lines).
    #[arg(long, default_value = "chaos.log")]
    log: PathBuf,
    /// scripts/cluster.sh.
    #[arg(long, default_value = "scripts/cluster.sh")]
    cluster_sh: PathBuf,
    /// The image the tasks run (docker executor).
    #[arg(long, default_value = "flotilla-busybox:latest")]
    image: String,
    /// The size of each host's data directory, a filesystem of its own
    /// that the disk-full fault fills (tmpfs: it costs memory only while
    /// full).
    #[arg(long, default_value = "256m")]
    data_size: String,
    /// Leave the last cluster up.
    #[arg(long)]
    keep: bool,
}

fn hosts(managers: u32, workers: u32) -> Hosts {
    Hosts {
        managers: if managers == 1 {
            vec!["manager".into()]
        } else {
            (1..=managers).map(|i| format!("manager{i}")).collect()
        },
        workers: (1..=workers).map(|i| format!("worker{i:02}")).collect(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let kinds = match args
        .faults
        .iter()
        .map(|f| Kind::parse(f))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(k) => k,
        Err(e) => {
            eprintln!("flotilla-chaos: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let file = match std::fs::File::create(&args.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("flotilla-chaos: {}: {e}", args.log.display());
            return std::process::ExitCode::from(2);
        }
    };
    let log = Log::new(Box::new(file));
    // The daemon built with this binary, unless told otherwise: cluster.sh
    // would take target/release's first, which may be older.
    if std::env::var_os("FLOTILLA_BIN").is_none() {
        if let Some(sibling) = std::env::current_exe()
            .ok()
            .map(|p| p.with_file_name("flotilla"))
            .filter(|p| p.exists())
        {
            std::env::set_var("FLOTILLA_BIN", sibling);
        }
    }
    let cluster = Cluster {
        script: args.cluster_sh.clone(),
        prefix: args.prefix.clone(),
        hosts: hosts(args.managers, args.workers),
        state_root: std::env::var("FLOTILLA_CLUSTER_STATE")
            .unwrap_or_else(|_| "/run/flotilla-cluster".into())
            .into(),
    };
    let mut reports: Vec<Report> = Vec::new();
    for seed in args.seed..args.seed + args.runs {
        let _ = cluster.run("down", &[]).await;
        let up = cluster
            .run(
                "up",
                &[
                    "--managers",
                    &args.managers.to_string(),
                    "--workers",
                    &args.workers.to_string(),
                    "--executor",
                    &args.executor,
                    "--subnet",
                    &args.subnet,
                    "--data-size",
                    &args.data_size,
                ],
            )
            .await;
        if let Err(e) = up {
            eprintln!("flotilla-chaos: the cluster did not come up: {e}");
            return std::process::ExitCode::from(2);
        }
        let cfg = Config {
            seed,
            duration: Duration::from_secs(args.duration),
            kinds: kinds.clone(),
            clients: args.clients,
            settle: Duration::from_secs(args.settle),
            image: args.image.clone(),
        };
        let report = run::run(&cluster, &cfg, &log).await;
        println!(
            "seed {seed}: {} acknowledged, {} indeterminate, {} refused, {} faults, {} violations{}",
            report.acknowledged,
            report.indeterminate,
            report.refused,
            report.faults,
            report.violations.len(),
            report
                .converged_after
                .map(|d| format!(", settled {:.1} s after the last fault", d.as_secs_f64()))
                .unwrap_or_default()
        );
        for v in report.violations.iter().take(20) {
            println!("  violation: {v}");
        }
        for e in &report.fault_errors {
            println!("  fault not carried out: {e}");
        }
        for o in &report.overlaps_while_cut_off {
            println!("  while cut off: {o}");
        }
        reports.push(report);
    }
    if !args.keep {
        let _ = cluster.run("down", &[]).await;
    }
    summary(&reports);
    if reports.iter().any(|r| !r.violations.is_empty()) {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// The table RELIABILITY.md keeps.
fn summary(reports: &[Report]) {
    let sum = |f: fn(&Report) -> usize| reports.iter().map(f).sum::<usize>();
    let mut settled: Vec<f64> = reports
        .iter()
        .filter_map(|r| r.converged_after.map(|d| d.as_secs_f64()))
        .collect();
    settled.sort_by(|a, b| a.total_cmp(b));
    let median = settled.get(settled.len() / 2).copied().unwrap_or(f64::NAN);
    let worst = settled.last().copied().unwrap_or(f64::NAN);
    println!();
    println!("| runs | acknowledged | indeterminate | refused | faults | violations | false Down | overlaps while cut off | settled after the last fault (median / worst) |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} / {:.1} s |",
        reports.len(),
        sum(|r| r.acknowledged),
        sum(|r| r.indeterminate),
        sum(|r| r.refused),
        sum(|r| r.faults),
        sum(|r| r.violations.len()),
        sum(|r| r.false_down.len()),
        sum(|r| r.overlaps_while_cut_off.len()),
        median,
        worst
    );
}
