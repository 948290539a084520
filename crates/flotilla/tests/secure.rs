//! Secure by default: what a node refuses to do, and what it keeps locked.
//!
//! - autolock: after `swarm init --autolock` and a restart, the manager
//!   serves nothing of the swarm until `swarm unlock` is given its key, and
//!   its data directory holds no key in the clear;
//! - the API is not served on TCP without TLS that verifies clients unless
//!   asked for with `--insecure-tcp`, and with `--tlsverify` a client
//!   without a certificate cannot reach even `POST /containers/create`;
//! - `swarm ca --rotate` moves a manager to a new root, its own or one
//!   given with `--ca-cert/--ca-key`, and refuses a bad one;
//! - `--executor auto` never falls back to host processes.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const LOCKED: &str = "Error response from daemon: Swarm is encrypted and needs to be unlocked before it can be used. Please use \"docker swarm unlock\" to unlock it.";

/// `docker swarm unlock` with `key` typed on its standard input.
fn unlock(d: &Daemon, key: &str) -> Out {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "printf '%s\\n' \"$KEY\" | docker swarm unlock"])
        .env("KEY", key)
        .env("DOCKER_HOST", d.host())
        .env_remove("DOCKER_CONTEXT");
    run(cmd)
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn autolock_keeps_a_restarted_manager_locked_until_unlocked() {
    let mut d = Daemon::start(Executor::Process);
    let init = d.init(&["--autolock"]);
    assert!(
        init.stdout
            .contains("To unlock a swarm manager after it restarts"),
        "{}",
        init.stdout
    );
    let key = d.docker(&["swarm", "unlock-key", "-q"]).ok().stdout;
    let key = key.trim().to_string();
    assert!(key.starts_with("SWMKEY-1-"), "{key}");
    d.docker(&[
        "service", "create", "-d", "--name", "kept", IMAGE, "sleep", "300",
    ])
    .ok();
    // Every manager rewraps its keys from the replicated state: wait until
    // this one has.
    let swarm = d.data_dir().join("swarm");
    wait_until(Duration::from_secs(10), "the DEK to be wrapped", || {
        std::fs::read_to_string(swarm.join("raft.dek"))
            .is_ok_and(|t| t.starts_with("flotilla-raft-dek-v1 locked"))
    });

    d.restart();
    let refused = d.docker(&["service", "ls"]).failed();
    assert_eq!(refused.stderr.trim(), LOCKED);
    let info = d
        .docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])
        .ok();
    assert_eq!(info.stdout.trim(), "locked");
    // Nothing under the data directory is a key in the clear: the TLS key
    // and the DEK are wrapped, the root CA's key and the unlock key are in
    // the sealed Raft log.
    for file in files(&d.data_dir()) {
        let bytes = std::fs::read(&file).unwrap();
        for needle in [&b"PRIVATE KEY"[..], key.as_bytes(), b"SWMKEY-1-"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds {:?} in the clear",
                file.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    assert!(std::fs::read(swarm.join("cert.json"))
        .unwrap()
        .starts_with(b"FLK1"));

    // Bad keys are refused with Docker's words; the node stays locked.
    let bad = unlock(&d, "not-a-key").failed();
    assert_eq!(
        bad.stderr.trim(),
        "Error response from daemon: invalid key string"
    );
    let other = unlock(&d, "SWMKEY-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").failed();
    assert_eq!(
        other.stderr.trim(),
        "Error response from daemon: swarm could not be unlocked: invalid key provided"
    );
    assert_eq!(d.docker(&["service", "ls"]).failed().stderr.trim(), LOCKED);

    unlock(&d, &key).ok();
    let ls = d.docker(&["service", "ls", "--format", "{{.Name}}"]).ok();
    assert_eq!(ls.stdout.trim(), "kept");
    let again = unlock(&d, &key).failed();
    assert_eq!(again.stderr.trim(), "Error: swarm is not locked");

    // A rotated key replaces the old one; autolock off unwraps everything.
    d.docker(&["swarm", "unlock-key", "--rotate"]).ok();
    let rotated = d.docker(&["swarm", "unlock-key", "-q"]).ok().stdout;
    let rotated = rotated.trim().to_string();
    assert_ne!(rotated, key);
    d.docker(&["swarm", "update", "--autolock=false"]).ok();
    wait_until(Duration::from_secs(10), "the DEK to be unwrapped", || {
        std::fs::read_to_string(swarm.join("raft.dek"))
            .is_ok_and(|t| t.starts_with("flotilla-raft-dek-v1 plain"))
    });
    let none = d.docker(&["swarm", "unlock-key"]).failed();
    assert_eq!(none.stderr.trim(), "no unlock key is set");
    d.restart();
    d.docker(&["service", "ls"]).ok();

    // Root rotation, one node: to a new root made by the swarm, then to one
    // made with openssl as Docker's documentation makes it (RSA), whose
    // certificate the docker CLI then prints; the manager keeps serving,
    // across a restart too.
    let old_root = trust_root(&d);
    let out = d.docker(&["swarm", "ca", "--rotate"]).ok().stdout;
    let new_root = trust_root(&d);
    assert_ne!(new_root, old_root);
    assert!(out.trim_end().ends_with(&new_root), "{out}");
    assert!(out.contains("rotated TLS certificates"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    openssl(dir.path(), &["genrsa", "-out", "root-key.pem", "2048"]);
    self_signed_root(
        dir.path(),
        "root-key.pem",
        "3650",
        "/CN=my-swarm-root",
        "root.pem",
    );
    let root_pem = std::fs::read_to_string(dir.path().join("root.pem")).unwrap();
    let out = rotate_to(&d, dir.path(), "root.pem", "root-key.pem")
        .ok()
        .stdout;
    assert!(out.trim_end().ends_with(root_pem.trim()), "{out}");
    assert_eq!(trust_root(&d), root_pem.trim());
    // The key is not kept where the API shows it.
    let swarm = d.get_json("/swarm");
    assert!(
        swarm["Spec"]["CAConfig"]["SigningCAKey"].is_null(),
        "{swarm}"
    );
    d.restart();
    d.docker(&["service", "ls"]).ok();
    assert_eq!(trust_root(&d), root_pem.trim());

    // What a rotation refuses: a key of another root, a root that expires
    // within a year.
    openssl(dir.path(), &["genrsa", "-out", "other-key.pem", "2048"]);
    let mismatch = rotate_to(&d, dir.path(), "root.pem", "other-key.pem").failed();
    assert_eq!(
        mismatch.stderr.trim(),
        "Error response from daemon: rpc error: code = InvalidArgument desc = the root CA key does not belong to the root CA certificate"
    );
    self_signed_root(
        dir.path(),
        "other-key.pem",
        "30",
        "/CN=short-lived",
        "short.pem",
    );
    let short = rotate_to(&d, dir.path(), "short.pem", "other-key.pem").failed();
    assert_eq!(
        short.stderr.trim(),
        "Error response from daemon: rpc error: code = InvalidArgument desc = CA certificate expires too soon"
    );
    assert_eq!(trust_root(&d), root_pem.trim(), "nothing changed");
    let short = d
        .docker(&["swarm", "update", "--cert-expiry", "30m"])
        .failed();
    assert_eq!(
        short.stderr.trim(),
        "Error response from daemon: rpc error: code = InvalidArgument desc = minimum certificate expiry time is: 1h0m0s"
    );
}

/// `flotilla daemon ARGS` that must exit at once with an error; its stderr.
fn refused_start(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = Command::new(FLOTILLA);
    cmd.arg("daemon")
        .arg("--data-dir")
        .arg(&data)
        .args(args)
        .env_remove("FLOTILLA_HOST")
        .env_remove("DOCKER_HOST")
        .env("FLOTILLA_NO_SERVICE_ADDRS", "1");
    let out = run(cmd);
    assert_eq!(out.code, 1, "the daemon should refuse to start: {out:#?}");
    out.stderr
}

#[test]
fn unsafe_listeners_and_executors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix://{}/api.sock", dir.path().display());

    // Plain HTTP on TCP: refused, naming the way out.
    let err = refused_start(&["-H", "tcp://127.0.0.1:0", "--executor", "process"]);
    assert!(
        err.contains("refusing to serve the API on tcp://127.0.0.1:0 in plain HTTP"),
        "{err}"
    );
    assert!(err.contains("--tlsverify"), "{err}");
    assert!(err.contains("--insecure-tcp"), "{err}");

    // auto with no engine: an error, not host processes.
    let err = refused_start(&[
        "-H",
        &sock,
        "--executor",
        "auto",
        "--docker-host",
        "unix:///nonexistent/docker.sock",
    ]);
    assert!(
        err.contains("no Docker Engine answers at unix:///nonexistent/docker.sock"),
        "{err}"
    );
    assert!(err.contains("--executor process"), "{err}");
}

#[test]
fn the_api_socket_is_for_its_owner_and_group() {
    let d = Daemon::start(Executor::Process);
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(d.socket()).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    let docker_gid = std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3 && f[0] == "docker").then(|| f[2].parse::<u32>().unwrap())
        });
    // SAFETY: geteuid cannot fail.
    if let (Some(gid), 0) = (docker_gid, unsafe { libc::geteuid() }) {
        assert_eq!(meta.gid(), gid, "the socket belongs to group docker");
    }
}

/// The swarm's root certificate, as `docker swarm ca` prints it.
fn trust_root(d: &Daemon) -> String {
    d.docker(&["swarm", "ca"]).ok().stdout.trim().to_string()
}

/// `docker swarm ca --rotate` to the root `cert` (with its `key`) in `dir`.
fn rotate_to(d: &Daemon, dir: &Path, cert: &str, key: &str) -> Out {
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    d.docker(&[
        "swarm",
        "ca",
        "--rotate",
        "--ca-cert",
        &path(cert),
        "--ca-key",
        &path(key),
    ])
}

/// A self-signed root CA certificate as Docker's documentation makes one.
fn self_signed_root(dir: &Path, key: &str, days: &str, subject: &str, out: &str) {
    openssl(
        dir,
        &[
            "req", "-x509", "-sha256", "-new", "-nodes", "-key", key, "-days", days, "-subj",
            subject, "-out", out,
        ],
    );
}

/// `openssl ARGS` in `dir`, which must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args(args);
    run(cmd).ok();
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate,
/// made with openssl as Docker's "Protect the Docker daemon socket" page
/// makes them (RSA keys, the client's for clientAuth). The client's files
/// are named as the docker CLI looks for them in `DOCKER_CERT_PATH`.
fn docker_style_certs(dir: &Path) {
    openssl(dir, &["genrsa", "-out", "ca-key.pem", "2048"]);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-x509",
            "-days",
            "1",
            "-key",
            "ca-key.pem",
            "-sha256",
            "-subj",
            "/CN=flotilla-test-ca",
            "-out",
            "ca.pem",
        ],
    );
    std::fs::write(
        dir.join("server.cnf"),
        "subjectAltName = DNS:localhost,IP:127.0.0.1\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.cnf"), "extendedKeyUsage = clientAuth\n").unwrap();
    for (name, subject, ext) in [
        ("server", "/CN=localhost", "server.cnf"),
        ("client", "/CN=client", "client.cnf"),
    ] {
        let key = format!("{name}-key.pem");
        let csr = format!("{name}.csr");
        let cert = format!("{name}-cert.pem");
        openssl(dir, &["genrsa", "-out", &key, "2048"]);
        openssl(
            dir,
            &["req", "-new", "-subj", subject, "-key", &key, "-out", &csr],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "1",
                "-sha256",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                &cert,
                "-extfile",
                ext,
            ],
        );
    }
    std::fs::copy(dir.join("client-cert.pem"), dir.join("cert.pem")).unwrap();
    std::fs::copy(dir.join("client-key.pem"), dir.join("key.pem")).unwrap();
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_api_over_tcp_needs_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path();
    docker_style_certs(certs);
    let host = format!("tcp://127.0.0.1:{}", free_port());
    let log = std::fs::File::create(certs.join("daemon.log")).unwrap();
    let mut daemon = Command::new(FLOTILLA)
        .arg("daemon")
        .arg("--data-dir")
        .arg(certs.join("data"))
        .args(["-H", &host, "--executor", "process", "--tlsverify"])
        .arg("--tlscacert")
        .arg(certs.join("ca.pem"))
        .arg("--tlscert")
        .arg(certs.join("server-cert.pem"))
        .arg("--tlskey")
        .arg(certs.join("server-key.pem"))
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env("FLOTILLA_NO_SERVICE_ADDRS", "1")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    // The docker CLI with the certificates Docker's documentation makes.
    let docker = |args: &[&str]| {
        let mut cmd = Command::new("docker");
        cmd.args(args)
            .env("DOCKER_HOST", &host)
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", certs)
            .env_remove("DOCKER_CONTEXT");
        run(cmd)
    };
    let daemon_log = || std::fs::read_to_string(certs.join("daemon.log")).unwrap_or_default();
    wait_until(Duration::from_secs(30), "the daemon to serve TLS", || {
        docker(&["version", "--format", "{{.Server.Version}}"]).code == 0
    });
    docker(&["swarm", "init", "--listen-addr", "127.0.0.1:0"]).ok();
    docker(&[
        "service", "create", "-d", "--name", "tls", IMAGE, "sleep", "300",
    ])
    .ok();
    let ls = docker(&["service", "ls", "--format", "{{.Name}}"]).ok();
    assert_eq!(ls.stdout.trim(), "tls");
    // Flotilla's own CLI, with the same flags as docker's.
    let mut cmd = Command::new(FLOTILLA);
    cmd.args(["-H", &host, "--tlsverify"])
        .arg("--tlscacert")
        .arg(certs.join("ca.pem"))
        .arg("--tlscert")
        .arg(certs.join("cert.pem"))
        .arg("--tlskey")
        .arg(certs.join("key.pem"))
        .args(["service", "ls", "-q"])
        .env_remove("FLOTILLA_HOST");
    assert_eq!(run(cmd).ok().lines().len(), 1);

    // Without a client certificate nothing gets through, not even the
    // requests that would go on to the local Docker Engine.
    let port = host.trim_start_matches("tcp://127.0.0.1:");
    let url = format!("https://127.0.0.1:{port}/v1.41/containers/create");
    let mut curl = Command::new("curl");
    curl.args(["-s", "-S", "--cacert"])
        .arg(certs.join("ca.pem"))
        .args([
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            "{\"Image\":\"x\"}",
            &url,
        ]);
    let refused = run(curl).failed();
    assert!(refused.stdout.is_empty(), "no HTTP answer: {refused:#?}");
    let mut plain = Command::new("curl");
    plain.args(["-s", "-S", &format!("http://127.0.0.1:{port}/_ping")]);
    let refused = run(plain).failed();
    assert!(!refused.stdout.contains("OK"), "{refused:#?}");
    // A certificate from another CA is refused too.
    let other = tempfile::tempdir().unwrap();
    docker_style_certs(other.path());
    let mut cmd = Command::new("docker");
    cmd.args(["service", "ls"])
        .env("DOCKER_HOST", &host)
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", other.path())
        .env_remove("DOCKER_CONTEXT");
    run(cmd).failed();

    // Asked for TLS without a host, a client goes to docker's TLS default.
    let mut cmd = Command::new(FLOTILLA);
    cmd.args(["service", "ls"])
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", certs)
        .env_remove("FLOTILLA_HOST");
    let unreached = run(cmd).failed();
    assert!(
        unreached.stderr.contains("tcp://localhost:2376"),
        "{unreached:#?}"
    );

    docker(&["swarm", "leave", "--force"]).ok();
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        daemon_log().contains("API listening on tcp://"),
        "{}",
        daemon_log()
    );
}
