//! The routing mesh in the kernel's NAT, through a real daemon: a node in
//! a network namespace of its own (made and removed here), where
//! `--mesh kernel` can be set up, its tasks host processes (busybox httpd).
//! A published port balances over the tasks, a rolling restart under
//! steady new connections fails none of them (each stopping task leaves
//! the NAT rules before it stops), and a daemon that stops leaves no rule
//! behind. Needs root, iproute2, iptables and busybox (CI installs them).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// A network namespace of our own with lo up, removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Netns {
        // SAFETY: geteuid has no preconditions and cannot fail.
        assert!(
            unsafe { libc::geteuid() } == 0,
            "this test makes a network namespace: run the suite as root"
        );
        let name = format!("flmk-sys-{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip");
        assert!(out.status.success(), "ip netns add: {out:?}");
        let netns = Netns { name };
        netns.exec(&["ip", "link", "set", "lo", "up"]);
        netns
    }

    /// Runs `args` in the namespace; its stdout.
    fn exec(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a thread inside the namespace (its sockets are there).
    fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: a valid namespace descriptor; only this thread moves.
            let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The body of `GET /` on 127.0.0.1:port over a new connection.
fn get(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(3))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.contains(" 200 ") => Ok(body.trim().to_string()),
        _ => Err(format!("answered {text:?}")),
    }
}

/// The mesh's chains and hooks in the namespace.
fn mesh_rules(ns: &Netns) -> Vec<String> {
    ns.exec(&["iptables-save"])
        .lines()
        .filter(|l| l.contains("FLOTILLA-MESH") || l.contains("FLM-"))
        .map(str::to_string)
        .collect()
}

const PORT: u16 = 18190;

#[test]
fn kernel_mesh_balances_drains_a_rolling_restart_and_cleans_up() {
    let ns = Netns::create();
    let mut d = Daemon::start_in(Executor::Process, Some(&ns.name), &["--mesh", "kernel"]);
    d.init(&["--advertise-addr", "127.0.0.1"]);
    assert!(
        d.log().contains("routing mesh: in the kernel"),
        "the kernel path was not set up:\n{}",
        d.log()
    );
    // Each task serves its own shell's pid: which task answered.
    let script = "d=$(mktemp -d) && chmod 755 $d && echo $$ > $d/index.html && \
                  exec busybox httpd -f -p $PORT_9000 -h $d";
    let published = format!("{PORT}:9000");
    d.flotilla(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "2",
        "--stop-grace-period",
        "2s",
        "-p",
        &published,
        "flotilla-busybox",
        "sh",
        "-c",
        script,
    ])
    .ok();
    wait_until(Duration::from_secs(30), "two tasks running", || {
        d.tasks_in_state("web", "running").len() == 2
    });
    let seen = ns
        .spawn(|| {
            let mut seen = std::collections::BTreeSet::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while seen.len() < 2 && std::time::Instant::now() < deadline {
                if let Ok(body) = get(PORT) {
                    seen.insert(body);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            seen
        })
        .join()
        .unwrap();
    assert_eq!(seen.len(), 2, "new connections reached {seen:?}");
    assert!(mesh_rules(&ns).iter().any(|l| l.contains("FLM-T-18190")));

    // A rolling restart while a client keeps opening connections.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        ns.spawn(move || {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match get(PORT) {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (ok, failed)
        })
    };
    d.flotilla(&[
        "service",
        "update",
        "-d",
        "--force",
        "--update-parallelism",
        "1",
        "--update-delay",
        "0s",
        "web",
    ])
    .ok();
    wait_until(Duration::from_secs(60), "the rolling restart done", || {
        d.flotilla(&[
            "service",
            "inspect",
            "--format",
            "{{.UpdateStatus.State}}",
            "web",
        ])
        .stdout
        .trim()
            == "completed"
    });
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = client.join().unwrap();
    println!(
        "during the rolling restart: {ok} requests ok, {} failed",
        failed.len()
    );
    assert!(ok > 50, "only {ok} requests in the restart");
    assert!(failed.is_empty(), "requests failed: {failed:?}");

    // A daemon that stops takes its rules with it.
    let (code, _) = d.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", d.log());
    assert_eq!(mesh_rules(&ns), Vec::<String>::new());
}
