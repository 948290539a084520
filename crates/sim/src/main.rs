//! `flotilla-sim`: joins N simulated worker nodes to a swarm from one
//! process and keeps their agents running until SIGINT or SIGTERM.
//!
//!     flotilla-sim --manager 127.0.0.1:2377 --token SWMTKN-1-… --nodes 1000

use std::io::Write;
use std::time::Duration;

use clap::Parser;
use flotilla_sim::{Fleet, FleetSpec, Progress, SimConfig};

#[derive(Parser)]
#[command(
    name = "flotilla-sim",
    version,
    about = "Simulated Flotilla worker nodes"
)]
struct Args {
    /// A manager's cluster address (host:port)
    #[arg(long)]
    manager: String,
    /// A worker join token
    #[arg(long, env = "FLOTILLA_SIM_TOKEN")]
    token: String,
    /// How many nodes to join
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Hostname prefix: nodes are <prefix>-0001, <prefix>-0002, …
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// The address the nodes advertise
    #[arg(long, default_value = "127.0.0.1")]
    addr: String,
    /// Joins in flight at once
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Time a task's prepare takes, e.g. 50ms
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    prepare_delay: Duration,
    /// Time a task's start takes, e.g. 200ms
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    start_delay: Duration,
    /// Log filter (tracing's syntax)
    #[arg(long, env = "FLOTILLA_LOG", default_value = "warn")]
    log: String,
}

/// `250ms`, `2s`, `1m`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration {s:?}: use e.g. 250ms, 2s or 1m");
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

fn main() {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flotilla-sim: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    std::process::exit(runtime.block_on(run(args)));
}

async fn run(args: Args) -> i32 {
    let spec = FleetSpec {
        prefix: args.prefix.clone(),
        addr: args.addr.clone(),
        concurrency: args.concurrency,
        sim: SimConfig {
            prepare_delay: args.prepare_delay,
            start_delay: args.start_delay,
            ..SimConfig::named("")
        },
        ..FleetSpec::new(&args.manager, &args.token, args.nodes)
    };
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("flotilla-sim: cannot watch signals: {e}");
            return 1;
        }
    };
    let total = args.nodes;
    let mut last = 0;
    let report = move |p: Progress| {
        let done = p.joined + p.failed;
        // A line per tenth (and the last), so a log shows the join rate.
        let step = (total / 10).max(1);
        if done / step != last / step || done == total {
            eprintln!(
                "flotilla-sim: joined {}/{} ({} failed) in {:.1} s",
                p.joined,
                p.total,
                p.failed,
                p.elapsed.as_secs_f64()
            );
        }
        last = done;
    };
    let fleet = tokio::select! {
        f = Fleet::join(spec, report) => f,
        _ = signals.recv() => {
            eprintln!("flotilla-sim: interrupted while joining");
            return 130;
        }
    };
    if let Some(e) = fleet.failures.first() {
        eprintln!(
            "flotilla-sim: {} node(s) could not join; first: {e}",
            fleet.failures.len()
        );
    }
    if fleet.nodes.is_empty() {
        return 1;
    }
    eprintln!(
        "flotilla-sim: {} nodes running (ready for tasks); stop with SIGINT or SIGTERM",
        fleet.nodes.len()
    );
    let _ = std::io::stderr().flush();
    // What reached the nodes, beside what the managers' API says is
    // RUNNING: the gap is status reports not yet written.
    let started = std::time::Instant::now();
    let running = || -> usize { fleet.nodes.iter().map(|n| n.exec.workloads()).sum() };
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut last = usize::MAX;
    loop {
        tokio::select! {
            _ = signals.recv() => break,
            _ = tick.tick() => {
                let now = running();
                if now != last {
                    eprintln!(
                        "flotilla-sim: {:7.1} s  {now} tasks started on the simulated nodes",
                        started.elapsed().as_secs_f64()
                    );
                    last = now;
                }
            }
        }
    }
    eprintln!(
        "flotilla-sim: {:7.1} s  {} tasks started on the simulated nodes; stopping",
        started.elapsed().as_secs_f64(),
        running()
    );
    // Simulated nodes leave nothing behind: give the agents a moment to
    // stop, but do not wait on a manager too busy to notice.
    let _ = tokio::time::timeout(Duration::from_secs(2), fleet.stop()).await;
    0
}

/// SIGINT and SIGTERM, whichever comes first.
struct Signals {
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = self.term.recv() => {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
