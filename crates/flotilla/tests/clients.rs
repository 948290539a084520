//! Real clients people drive Swarm with, against a Flotilla daemon: the
//! bodies they send are decoded as dockerd decodes them (Go's JSON, keys in
//! any case) and what they read back carries dockerd's names.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// docker-py from PyPI (`.ci/run` installs it): global and scaled services,
/// a healthcheck, a low-level create with lowercase keys, an overlay
/// network from the swarm's own address pool and a service on it.
#[test]
fn docker_py_creates_scales_and_reads_services() {
    let d = Daemon::start(Executor::Process);
    d.init(&[
        "--default-addr-pool",
        "10.20.0.0/16",
        "--default-addr-pool-mask-length",
        "26",
    ]);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/docker_py_services.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .env("DOCKER_HOST", d.host())
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH");
    let out = run(cmd);
    assert!(
        out.code == 0 && out.stdout.contains("docker-py: ok"),
        "docker-py (pip install docker) against the daemon: {out:#?}\n{}",
        d.log()
    );
}
