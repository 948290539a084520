//! The benchmarks of `bench/` must keep running: each test runs one script
//! with `--tiny` (smallest sizes, one repetition, no Docker Swarm) against
//! this build's binary, and checks that it exits 0 and prints its figures
//! (`BENCH <name> ...` lines). Nothing here asserts a time: benchmarks are
//! not tests. Slow (`slow_` prefix): they run one at a time, like the other
//! tests that start many containers or clusters.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FLOTILLA: &str = env!("CARGO_BIN_EXE_flotilla");
/// Each tiny run takes well under this; past it the script's process group
/// is stopped (TERM, so its cleanup traps run; KILL 20 s later).
const TIMEOUT: Duration = Duration::from_secs(300);

fn run_tiny(name: &str) {
    run_tiny_with(name, &[]);
}

fn run_tiny_with(name: &str, extra: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../bench/{name}.sh"));
    let mut child = Command::new("bash")
        .arg(&script)
        .args(["--tiny", "--bin", FLOTILLA])
        .args(extra)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("FLOTILLA_HOST")
        .env_remove("FLOTILLA_BIN")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let mut signalled: Option<Instant> = None;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let pgid = child.id() as i32;
        match signalled {
            None if start.elapsed() > TIMEOUT => {
                unsafe { libc::kill(-pgid, libc::SIGTERM) };
                signalled = Some(Instant::now());
            }
            Some(t) if t.elapsed() > Duration::from_secs(20) => unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            },
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    let took = start.elapsed();
    println!("bench/{name}.sh --tiny took {took:?}\n{stdout}");
    assert!(
        signalled.is_none(),
        "bench/{name}.sh --tiny did not finish within {TIMEOUT:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        status.success(),
        "bench/{name}.sh --tiny failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let prefix = format!("BENCH {name} ");
    let figures: Vec<&str> = stdout.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert!(
        !figures.is_empty(),
        "bench/{name}.sh --tiny printed no figures line ({prefix}...)\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // Every figures line carries a number.
    for l in &figures {
        assert!(
            l.contains("median=") || l.contains("ratio="),
            "malformed figures line: {l}"
        );
    }
}

#[test]
fn slow_bench_converge_runs_tiny() {
    run_tiny("converge");
}

#[test]
fn slow_bench_update_runs_tiny() {
    run_tiny("update");
}

#[test]
fn slow_bench_failover_runs_tiny() {
    run_tiny("failover");
}

#[test]
fn slow_bench_api_runs_tiny() {
    run_tiny("api");
}

#[test]
fn slow_bench_footprint_runs_tiny() {
    run_tiny("footprint");
}

#[test]
fn slow_bench_overlay_runs_tiny() {
    run_tiny("overlay");
}

#[test]
fn slow_bench_mesh_runs_tiny() {
    // mesh-bench is flotilla-net's binary: build it (debug, quick when
    // built already) next to this test's flotilla binary.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", "flotilla-net", "--bin", "mesh-bench"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building mesh-bench failed");
    let bench = PathBuf::from(FLOTILLA).with_file_name("mesh-bench");
    assert!(bench.exists(), "{} was not built", bench.display());
    let bench = bench.to_string_lossy().to_string();
    run_tiny_with("mesh", &["--mesh-bench", &bench, "--port", "18419"]);
}
