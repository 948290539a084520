//! mesh-bench: what the routing mesh costs, against a direct connection,
//! in one run with one load generator, bounded in time.
//!
//! Every target gets the same scenarios:
//! - request/response over persistent connections (N clients, each sending
//!   a message and reading its echo, over and over): requests/s, p50, p99;
//! - a new connection per request (connect, message, echo, close):
//!   connections/s, p50, p99, which shows the connection setup the mesh adds;
//! - bulk download (the backend streams for as long as the client reads,
//!   the client reads for the scenario's duration): MiB/s.
//!
//! One backend serves both kinds of connection on one port, so that one
//! published port is enough: a client's first byte says which it wants
//! (`E`: echo everything that follows; `B`: stream until the client goes
//! away). The echo client sends it in the same write as its first message.
//!
//! Modes:
//! - `mesh-bench [--seconds S] [--clients N] [--size BYTES]` (the default):
//!   backend, the mesh library (with splice(2), then with the user-space
//!   copy) and load generator in this one process, on loopback. They share
//!   the machine's cores, so the ratios, not the absolute figures, are what
//!   carries over.
//! - `mesh-bench serve [--port P]`: the backend alone, on 0.0.0.0:P (P from
//!   $PORT when --port is absent, as the process executor sets it), until
//!   killed. No signal handler is installed: SIGTERM and SIGINT end it at
//!   once.
//! - `mesh-bench against --direct ADDR --mesh [NAME=]ADDR... [--seconds S]
//!   [--clients N] [--size BYTES]`: the load generator alone, against a
//!   `serve` backend reached directly and through real daemons' routing
//!   meshes (`--mesh` once per mesh: the user-space proxy, the kernel's
//!   NAT), in this order, in one run (bench/mesh.sh sets this up). After
//!   the table, one `ratios NAME rr=… conn=… bulk=…` line per mesh.

use std::error::Error;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
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

/// A connection's first byte: echo what follows.
const ECHO: u8 = b'E';
/// A connection's first byte: stream until the client goes away.
const BULK: u8 = b'B';

/// How long `against` waits for a target to answer an echo before it gives
/// up (the mesh may not route to a task that just started yet).
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

const USAGE: &str = "usage: mesh-bench [--seconds S] [--clients N] [--size BYTES]
       mesh-bench serve [--port P]            (P from $PORT when absent)
       mesh-bench against --direct ADDR --mesh [NAME=]ADDR... [--seconds S] [--clients N] [--size BYTES]";

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// How hard and how long each scenario loads a target.
struct Load {
    duration: Duration,
    clients: usize,
    size: usize,
}

enum Mode {
    /// Backend, mesh library and load generator in this process.
    InProcess(Load),
    /// The backend alone on 0.0.0.0:port.
    Serve { port: u16 },
    /// The load generator against a direct address and meshes' ones.
    Against {
        direct: SocketAddr,
        meshes: Vec<(String, SocketAddr)>,
        load: Load,
    },
}

impl Mode {
    fn parse(given: impl IntoIterator<Item = String>) -> Result<Mode> {
        let mut given = given.into_iter().peekable();
        let command = match given.peek().map(String::as_str) {
            Some("serve" | "against") => given.next(),
            _ => None,
        };
        let mut load = Load {
            duration: Duration::from_secs(5),
            clients: 16,
            size: 1024,
        };
        let (mut port, mut direct, mut meshes) = (None, None, Vec::new());
        while let Some(flag) = given.next() {
            let value = given
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?;
            let number = || -> Result<u64> {
                value
                    .parse()
                    .map_err(|_| format!("{flag}: not a number: {value}").into())
            };
            match (command.as_deref(), flag.as_str()) {
                (None | Some("against"), "--seconds") => {
                    load.duration = Duration::from_secs(number()?.clamp(1, 60))
                }
                (None | Some("against"), "--clients") => {
                    load.clients = (number()? as usize).clamp(1, 256)
                }
                (None | Some("against"), "--size") => {
                    load.size = (number()? as usize).clamp(1, 1 << 20)
                }
                (Some("serve"), "--port") => port = Some(port_number(&flag, &value)?),
                (Some("against"), "--direct") => direct = Some(address(&flag, &value)?),
                (Some("against"), "--mesh") => {
                    let (name, addr) = match value.split_once('=') {
                        Some((name, addr)) => (name.to_string(), addr),
                        None => ("mesh (daemon)".to_string(), value.as_str()),
                    };
                    meshes.push((name, address(&flag, addr)?));
                }
                _ => return Err(format!("unknown flag {flag}").into()),
            }
        }
        match command.as_deref() {
            None => Ok(Mode::InProcess(load)),
            Some("serve") => {
                let port = match port {
                    Some(port) => port,
                    None => {
                        let value = std::env::var("PORT")
                            .map_err(|_| "serve needs --port or $PORT".to_string())?;
                        port_number("$PORT", &value)?
                    }
                };
                Ok(Mode::Serve { port })
            }
            _ if meshes.is_empty() => Err("against needs --mesh ADDR".into()),
            _ => Ok(Mode::Against {
                direct: direct.ok_or("against needs --direct ADDR")?,
                meshes,
                load,
            }),
        }
    }
}

fn port_number(what: &str, value: &str) -> Result<u16> {
    value
        .parse()
        .map_err(|_| format!("{what}: not a port: {value}").into())
}

fn address(what: &str, value: &str) -> Result<SocketAddr> {
    value
        .to_socket_addrs()
        .map_err(|e| format!("{what}: {value}: {e}"))?
        .next()
        .ok_or_else(|| format!("{what}: {value}: no address").into())
}

fn main() -> ExitCode {
    let mode = match Mode::parse(std::env::args().skip(1)) {
        Ok(mode) => mode,
        Err(e) => {
            eprintln!("mesh-bench: {e}\n{USAGE}");
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
    let outcome = runtime.block_on(async move {
        match mode {
            Mode::InProcess(load) => in_process(load).await,
            Mode::Serve { port } => serve_forever(port).await,
            Mode::Against {
                direct,
                meshes,
                load,
            } => against(direct, meshes, load).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where one target's backend is reached.
struct Target {
    name: String,
    addr: SocketAddr,
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

async fn in_process(load: Load) -> Result<()> {
    let mut backends = JoinSet::new();
    let backend = start_backend(&mut backends, LOCALHOST, 0).await?;

    let splice = mesh_to(backend, true).await?;
    let copy = mesh_to(backend, false).await?;
    let targets = [
        Target {
            name: "direct".into(),
            addr: backend,
        },
        Target {
            name: "mesh (splice)".into(),
            addr: splice.1,
        },
        Target {
            name: "mesh (copy)".into(),
            addr: copy.1,
        },
    ];
    let results = measure_all(&targets, &load).await?;
    println!(
        "mesh-bench: {} clients, {}-byte messages, {} s per scenario, loopback, \
         backend, mesh library and load in one process, {} CPUs",
        load.clients,
        load.size,
        load.duration.as_secs(),
        cpus()
    );
    print_table(&targets, &results);
    splice.0.shutdown().await;
    copy.0.shutdown().await;
    backends.shutdown().await;
    Ok(())
}

/// The backend alone, until the process is killed.
async fn serve_forever(port: u16) -> Result<()> {
    let mut backends = JoinSet::new();
    let addr = start_backend(&mut backends, IpAddr::V4(Ipv4Addr::UNSPECIFIED), port).await?;
    eprintln!("mesh-bench: serving echo and bulk on {addr}");
    while backends.join_next().await.is_some() {}
    Err("the backend stopped".into())
}

async fn against(direct: SocketAddr, meshes: Vec<(String, SocketAddr)>, load: Load) -> Result<()> {
    let mut targets = vec![Target {
        name: "direct".into(),
        addr: direct,
    }];
    targets.extend(meshes.into_iter().map(|(name, addr)| Target { name, addr }));
    let through: Vec<String> = targets[1..]
        .iter()
        .map(|t| format!("{} {}", t.name, t.addr))
        .collect();
    for target in &targets {
        probe(target, load.size).await?;
    }
    let results = measure_all(&targets, &load).await?;
    println!(
        "mesh-bench: {} clients, {}-byte messages, {} s per scenario, direct {direct} \
         against {}, {} CPUs",
        load.clients,
        load.size,
        load.duration.as_secs(),
        through.join(", "),
        cpus()
    );
    print_table(&targets, &results);
    Ok(())
}

/// Waits until one echo through the target comes back: a mesh that just
/// learned of its task may refuse or drop the first connections.
async fn probe(target: &Target, size: usize) -> Result<()> {
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut message = vec![ECHO];
    message.resize(size + 1, 0xab);
    let mut reply = vec![0u8; size];
    loop {
        let attempt = async {
            let mut stream = connect(target.addr).await?;
            round_trip(&mut stream, &message, &mut reply).await
        };
        let error = match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no echo within 2 s".to_string(),
        };
        if Instant::now() > deadline {
            return Err(format!(
                "{} ({}): no echo backend answers within {PROBE_TIMEOUT:?}: {error}",
                target.name, target.addr
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each scenario on every target before the next scenario: the targets
/// of one scenario are measured seconds apart, so a change in the
/// machine's load (it is shared) skews their ratios less.
async fn measure_all(targets: &[Target], load: &Load) -> Result<Vec<Figures>> {
    let mut results: Vec<Figures> = targets.iter().map(|_| Figures::default()).collect();
    for (target, figures) in targets.iter().zip(results.iter_mut()) {
        eprintln!(
            "measuring {} ({}): request/response ...",
            target.name, target.addr
        );
        figures.persistent = run_clients(target.addr, load, false).await?;
    }
    for (target, figures) in targets.iter().zip(results.iter_mut()) {
        eprintln!(
            "measuring {} ({}): new connections ...",
            target.name, target.addr
        );
        figures.new_connection = run_clients(target.addr, load, true).await?;
    }
    for (target, figures) in targets.iter().zip(results.iter_mut()) {
        eprintln!("measuring {} ({}): bulk ...", target.name, target.addr);
        figures.bulk_mib_s = download(target.addr, load.duration).await?;
    }
    Ok(results)
}

/// A mesh with one published port in front of the backend.
async fn mesh_to(backend: SocketAddr, zero_copy: bool) -> Result<(Mesh, SocketAddr)> {
    let config = MeshConfig {
        zero_copy,
        ..MeshConfig::default()
    };
    let mesh = Mesh::with_config(LOCALHOST, config);
    let port = free_port()?;
    let mut table = MeshTable::new();
    let published = PublishedPort {
        service_id: "bench".into(),
        protocol: Protocol::Tcp,
        published: port,
        target: backend.port(),
    };
    let endpoint = Endpoint {
        task_id: "bench-1".into(),
        addr: backend,
        healthy: true,
    };
    table.insert(published, vec![endpoint])?;
    mesh.apply(table).await?;
    Ok((mesh, (LOCALHOST, port).into()))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind((LOCALHOST, 0))?
        .local_addr()?
        .port())
}

async fn start_backend(tasks: &mut JoinSet<()>, ip: IpAddr, port: u16) -> Result<SocketAddr> {
    let listener = TcpListener::bind((ip, port))
        .await
        .map_err(|e| format!("cannot listen on {ip}:{port}: {e}"))?;
    let addr = listener.local_addr()?;
    tasks.spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => if let Ok((stream, _)) = accepted {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve(stream));
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    });
    Ok(addr)
}

/// One backend connection: its first byte says echo or bulk.
async fn serve(mut stream: TcpStream) {
    let Ok(kind) = stream.read_u8().await else {
        return;
    };
    match kind {
        ECHO => {
            let (mut read, mut write) = stream.split();
            let _ = tokio::io::copy(&mut read, &mut write).await;
        }
        BULK => {
            let chunk = vec![0x5a_u8; 1 << 20];
            while stream.write_all(&chunk).await.is_ok() {}
        }
        _ => {}
    }
}

/// N clients doing request/response round trips until the deadline.
async fn run_clients(addr: SocketAddr, load: &Load, new_connection: bool) -> Result<Rate> {
    let deadline = Instant::now() + load.duration;
    let started = Instant::now();
    let mut clients = JoinSet::new();
    for _ in 0..load.clients {
        clients.spawn(client(addr, load.size, deadline, new_connection));
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
    // A new connection's first write carries the mode byte too.
    let mut first = vec![ECHO];
    first.resize(size + 1, 0xab);
    let mut reply = vec![0u8; size];
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut persistent: Option<TcpStream> = None;
    while Instant::now() < deadline && latencies.len() < MAX_REQUESTS_PER_CLIENT {
        let start = Instant::now();
        let stream = match persistent.take() {
            Some(stream) => Ok((stream, &first[1..])),
            None => connect(addr).await.map(|stream| (stream, &first[..])),
        };
        let outcome = match stream {
            Ok((mut stream, message)) => {
                let result = round_trip(&mut stream, message, &mut reply).await;
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
    stream.write_u8(BULK).await?;
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

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The table: one column per target, and after each target but the first
/// (direct) its ratio to direct and, for latencies, the microseconds it adds.
fn print_table(targets: &[Target], results: &[Figures]) {
    let mut header = format!("{:<30} {:<8}", "scenario", "metric");
    for (i, target) in targets.iter().enumerate() {
        header += &format!(" {:>14}", target.name);
        if i > 0 {
            header += &format!(" {:>7} {:>9}", "ratio", "added");
        }
    }
    println!("{header}");
    let rows: [Row; 7] = [
        ("request/response, persistent", "req/s", false, |f| {
            f.persistent.per_second
        }),
        ("", "p50 µs", true, |f| micros(f.persistent.p50)),
        ("", "p99 µs", true, |f| micros(f.persistent.p99)),
        ("new connection per request", "conn/s", false, |f| {
            f.new_connection.per_second
        }),
        ("", "p50 µs", true, |f| micros(f.new_connection.p50)),
        ("", "p99 µs", true, |f| micros(f.new_connection.p99)),
        ("bulk download, 1 stream", "MiB/s", false, |f| f.bulk_mib_s),
    ];
    for (scenario, metric, latency, value) in rows {
        let direct = value(&results[0]);
        let mut line = format!("{scenario:<30} {metric:<8}");
        for (i, figures) in results.iter().enumerate() {
            let v = value(figures);
            line += &format!(" {v:>14.1}");
            if i > 0 {
                line += &format!(" {:>7.2}", v / direct);
                if latency {
                    line += &format!(" {:>+9.1}", v - direct);
                } else {
                    line += &format!(" {:>9}", "");
                }
            }
        }
        println!("{}", line.trim_end());
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
    // One line per mesh for scripts: its ratios to direct.
    for (target, figures) in targets.iter().zip(results).skip(1) {
        let ratio = |value: fn(&Figures) -> f64| value(figures) / value(&results[0]);
        println!(
            "ratios {} rr={:.2} conn={:.2} bulk={:.2}",
            target.name.replace(' ', "_"),
            ratio(|f| f.persistent.per_second),
            ratio(|f| f.new_connection.per_second),
            ratio(|f| f.bulk_mib_s)
        );
    }
}

/// One line of the table: scenario, metric, whether it is a latency, and
/// where to find its value.
type Row = (&'static str, &'static str, bool, fn(&Figures) -> f64);

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Mode> {
        Mode::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn default_mode_is_in_process() {
        let Ok(Mode::InProcess(load)) = parse(&["--clients", "1", "--seconds", "2"]) else {
            panic!("not in-process");
        };
        assert_eq!(load.clients, 1);
        assert_eq!(load.duration, Duration::from_secs(2));
        assert_eq!(load.size, 1024);
    }

    #[test]
    fn serve_takes_a_port() {
        assert!(matches!(
            parse(&["serve", "--port", "9000"]),
            Ok(Mode::Serve { port: 9000 })
        ));
        assert!(parse(&["serve", "--port", "x"]).is_err());
        assert!(parse(&["serve", "--clients", "2"]).is_err());
    }

    #[test]
    fn against_needs_both_addresses() {
        let Ok(Mode::Against {
            direct,
            meshes,
            load,
        }) = parse(&[
            "against",
            "--direct",
            "127.0.0.1:1",
            "--mesh",
            "127.0.0.1:2",
            "--mesh",
            "kernel=127.0.0.1:3",
            "--size",
            "64",
        ])
        else {
            panic!("not against");
        };
        assert_eq!(direct.port(), 1);
        let names: Vec<(&str, u16)> = meshes.iter().map(|(n, a)| (n.as_str(), a.port())).collect();
        assert_eq!(names, [("mesh (daemon)", 2), ("kernel", 3)]);
        assert_eq!(load.size, 64);
        assert!(parse(&["against", "--direct", "127.0.0.1:1"]).is_err());
        assert!(parse(&["--direct", "127.0.0.1:1"]).is_err());
    }

    /// The backend a `serve` process runs, reached directly and through an
    /// in-process mesh, answers both kinds of connection.
    #[tokio::test]
    async fn one_port_serves_echo_and_bulk() {
        let mut backends = JoinSet::new();
        let backend = start_backend(&mut backends, LOCALHOST, 0).await.unwrap();
        let (mesh, through) = mesh_to(backend, true).await.unwrap();
        for addr in [backend, through] {
            let target = Target {
                name: "t".into(),
                addr,
            };
            probe(&target, 16).await.unwrap();
            let load = Load {
                duration: Duration::from_millis(200),
                clients: 2,
                size: 16,
            };
            let rate = run_clients(addr, &load, true).await.unwrap();
            assert!(rate.per_second > 0.0);
            assert_eq!(rate.errors, 0);
            assert!(download(addr, load.duration).await.unwrap() > 0.0);
        }
        mesh.shutdown().await;
        backends.shutdown().await;
    }
}
