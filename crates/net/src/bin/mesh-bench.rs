//! mesh-bench: what the routing mesh costs, against a direct connection,
//! in one run with one load generator. Loopback only, bounded in time.
//!
//! Three targets are measured in turn: the backend directly, the backend
//! through the mesh with splice(2), and through the mesh with the user-space
//! copy. Each gets the same scenarios:
//! - request/response over persistent connections (N clients, each sending
//!   a message and reading its echo, over and over): requests/s, p50, p99;
//! - a new connection per request (connect, message, echo, close):
//!   connections/s, p50, p99, which shows the connection setup the mesh adds;
//! - bulk download (the backend streams for as long as the client reads,
//!   the client reads for the scenario's duration): MiB/s.
//!
//! Backend, mesh and load generator share one process and the machine's
//! cores, so the ratios, not the absolute figures, are what carries over.
//!
//! Usage: mesh-bench [--seconds S] [--clients N] [--size BYTES]

use std::error::Error;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use flotilla_net::{Endpoint, Mesh, MeshConfig, MeshTable, Protocol, PublishedPort};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Most requests one client makes in one scenario, whatever the duration:
/// bounds the samples kept and the connections left in TIME_WAIT.
const MAX_REQUESTS_PER_CLIENT: usize = 200_000;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

struct Args {
    duration: Duration,
    clients: usize,
    size: usize,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut args = Args {
            duration: Duration::from_secs(5),
            clients: 16,
            size: 1024,
        };
        let mut given = std::env::args().skip(1);
        while let Some(flag) = given.next() {
            let value = given
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?;
            let number: u64 = value
                .parse()
                .map_err(|_| format!("{flag}: not a number: {value}"))?;
            match flag.as_str() {
                "--seconds" => args.duration = Duration::from_secs(number.clamp(1, 60)),
                "--clients" => args.clients = (number as usize).clamp(1, 256),
                "--size" => args.size = (number as usize).clamp(1, 1 << 20),
                _ => return Err(format!("unknown flag {flag}").into()),
            }
        }
        Ok(args)
    }
}

fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!(
                "mesh-bench: {e}\nusage: mesh-bench [--seconds S] [--clients N] [--size BYTES]"
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mesh-bench: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where one target's echo and bulk backends are reached.
struct Target {
    name: &'static str,
    echo: SocketAddr,
    bulk: SocketAddr,
}

#[derive(Default)]
struct Figures {
    persistent: Rate,
    new_connection: Rate,
    bulk_mib_s: f64,
}

#[derive(Default)]
struct Rate {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

async fn run(args: Args) -> Result<()> {
    let mut backends = JoinSet::new();
    let echo = start_backend(&mut backends, Backend::Echo).await?;
    let bulk = start_backend(&mut backends, Backend::Source).await?;

    let splice = mesh_to(echo, bulk, true).await?;
    let copy = mesh_to(echo, bulk, false).await?;
    let targets = [
        Target {
            name: "direct",
            echo,
            bulk,
        },
        Target {
            name: "mesh (splice)",
            echo: splice.1,
            bulk: splice.2,
        },
        Target {
            name: "mesh (copy)",
            echo: copy.1,
            bulk: copy.2,
        },
    ];

    let mut results = Vec::new();
    for target in &targets {
        eprintln!("measuring {} ...", target.name);
        results.push(measure(target, &args).await?);
    }
    print_table(&args, &targets, &results);
    splice.0.shutdown().await;
    copy.0.shutdown().await;
    backends.shutdown().await;
    Ok(())
}

async fn measure(target: &Target, args: &Args) -> Result<Figures> {
    Ok(Figures {
        persistent: load(target.echo, args, false).await?,
        new_connection: load(target.echo, args, true).await?,
        bulk_mib_s: download(target.bulk, args.duration).await?,
    })
}

/// A mesh with two published ports in front of the two backends.
async fn mesh_to(
    echo: SocketAddr,
    bulk: SocketAddr,
    zero_copy: bool,
) -> Result<(Mesh, SocketAddr, SocketAddr)> {
    let config = MeshConfig {
        zero_copy,
        ..MeshConfig::default()
    };
    let mesh = Mesh::with_config(LOCALHOST, config);
    let (echo_port, bulk_port) = (free_port()?, free_port()?);
    let mut table = MeshTable::new();
    for (service, port, backend) in [("echo", echo_port, echo), ("bulk", bulk_port, bulk)] {
        let published = PublishedPort {
            service_id: service.into(),
            protocol: Protocol::Tcp,
            published: port,
            target: backend.port(),
        };
        let endpoint = Endpoint {
            task_id: format!("{service}-1"),
            addr: backend,
            healthy: true,
        };
        table.insert(published, vec![endpoint])?;
    }
    mesh.apply(table).await?;
    Ok((
        mesh,
        (LOCALHOST, echo_port).into(),
        (LOCALHOST, bulk_port).into(),
    ))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind((LOCALHOST, 0))?
        .local_addr()?
        .port())
}

#[derive(Clone, Copy)]
enum Backend {
    /// Echoes whatever it reads.
    Echo,
    /// Sends until the client goes away.
    Source,
}

async fn start_backend(tasks: &mut JoinSet<()>, kind: Backend) -> Result<SocketAddr> {
    let listener = TcpListener::bind((LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tasks.spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => if let Ok((stream, _)) = accepted {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve(stream, kind));
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    });
    Ok(addr)
}

async fn serve(mut stream: TcpStream, kind: Backend) {
    match kind {
        Backend::Echo => {
            let (mut read, mut write) = stream.split();
            let _ = tokio::io::copy(&mut read, &mut write).await;
        }
        Backend::Source => {
            let chunk = vec![0x5a_u8; 1 << 20];
            while stream.write_all(&chunk).await.is_ok() {}
        }
    }
}

/// N clients doing request/response round trips until the deadline.
async fn load(addr: SocketAddr, args: &Args, new_connection: bool) -> Result<Rate> {
    let deadline = Instant::now() + args.duration;
    let started = Instant::now();
    let mut clients = JoinSet::new();
    for _ in 0..args.clients {
        clients.spawn(client(addr, args.size, deadline, new_connection));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(done) = clients.join_next().await {
        let (samples, failed) = done?;
        latencies.extend(samples);
        errors += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(Rate {
        per_second: latencies.len() as f64 / elapsed,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        errors,
    })
}

/// One client's round trips: the latency of each success and the count of
/// failures.
async fn client(
    addr: SocketAddr,
    size: usize,
    deadline: Instant,
    new_connection: bool,
) -> (Vec<Duration>, usize) {
    let message = vec![0xab_u8; size];
    let mut reply = vec![0u8; size];
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut persistent: Option<TcpStream> = None;
    while Instant::now() < deadline && latencies.len() < MAX_REQUESTS_PER_CLIENT {
        let start = Instant::now();
        let stream = match persistent.take() {
            Some(stream) => Ok(stream),
            None => connect(addr).await,
        };
        let outcome = match stream {
            Ok(mut stream) => {
                let result = round_trip(&mut stream, &message, &mut reply).await;
                if result.is_ok() && !new_connection {
                    persistent = Some(stream);
                }
                result
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => latencies.push(start.elapsed()),
            Err(_) => errors += 1,
        }
    }
    (latencies, errors)
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn round_trip(
    stream: &mut TcpStream,
    message: &[u8],
    reply: &mut [u8],
) -> std::io::Result<()> {
    stream.write_all(message).await?;
    stream.read_exact(reply).await?;
    Ok(())
}

/// Reads one bulk stream for `duration`: MiB/s.
async fn download(addr: SocketAddr, duration: Duration) -> Result<f64> {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0usize;
    while start.elapsed() < duration {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err("bulk stream ended early".into());
        }
        total += n;
    }
    Ok(total as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

fn print_table(args: &Args, targets: &[Target], results: &[Figures]) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "mesh-bench: {} clients, {}-byte messages, {} s per scenario, loopback, {} CPUs",
        args.clients,
        args.size,
        args.duration.as_secs(),
        cpus
    );
    let mut header = format!("{:<30} {:<8}", "scenario", "metric");
    for (i, target) in targets.iter().enumerate() {
        header += &format!(" {:>14}", target.name);
        if i > 0 {
            header += &format!(" {:>7}", "ratio");
        }
    }
    println!("{header}");
    let rows: [Row; 7] = [
        ("request/response, persistent", "req/s", |f| {
            f.persistent.per_second
        }),
        ("", "p50 µs", |f| micros(f.persistent.p50)),
        ("", "p99 µs", |f| micros(f.persistent.p99)),
        ("new connection per request", "conn/s", |f| {
            f.new_connection.per_second
        }),
        ("", "p50 µs", |f| micros(f.new_connection.p50)),
        ("", "p99 µs", |f| micros(f.new_connection.p99)),
        ("bulk download, 1 stream", "MiB/s", |f| f.bulk_mib_s),
    ];
    for (scenario, metric, value) in rows {
        let direct = value(&results[0]);
        let mut line = format!("{scenario:<30} {metric:<8}");
        for (i, figures) in results.iter().enumerate() {
            line += &format!(" {:>14.1}", value(figures));
            if i > 0 {
                line += &format!(" {:>7.2}", value(figures) / direct);
            }
        }
        println!("{line}");
    }
    let errors: Vec<String> = targets
        .iter()
        .zip(results)
        .map(|(t, f)| {
            format!(
                "{} {}",
                t.name,
                f.persistent.errors + f.new_connection.errors
            )
        })
        .collect();
    println!("failed requests: {}", errors.join(", "));
}

/// One line of the table: scenario, metric, and where to find its value.
type Row = (&'static str, &'static str, fn(&Figures) -> f64);

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
