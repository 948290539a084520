//! Secrets and configs across nodes with the real docker CLI: a manager and
//! two workers, each a network namespace with its own dockerd. The service
//! runs only where a node label allows (worker01), so worker02 is the node
//! that must never receive the secret. One cluster for every check, in the
//! order a user lives them: create, mount, a node killed and back,
//! rotation, what a manager keeps on disk.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use common::cluster::{wait_timed as wait_until, Cluster};

const PREFIX: &str = "ftsec";
const IMAGE: &str = "flotilla-busybox";

fn state_dir(host: &str) -> PathBuf {
    PathBuf::from(format!("/run/flotilla-cluster/{PREFIX}/{host}"))
}

#[track_caller]
fn sh_in(c: &Cluster, host: &str, container: &str, script: &str) -> String {
    let (ok, out) = c.sh_in(host, container, script);
    assert!(ok, "exec on {host}: {out}");
    out
}

/// Waits for the one task of `service` to run in a new container on
/// `host`, other than `not`, and returns it.
fn wait_container(c: &Cluster, host: &str, service: &str, not: Option<&str>) -> String {
    let mut found = None;
    wait_until(
        Duration::from_secs(90),
        &format!("{service} running on {host}"),
        || {
            let running = c.running("manager", service);
            found = c
                .container_on(host, service)
                .filter(|id| Some(id.as_str()) != not);
            running.len() == 1 && running[0].1 == host && found.is_some()
        },
    );
    found.unwrap_or_default()
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Every regular file under `dir` that holds one of `needles`, with the
/// needle. Symlinks are not followed; files that cannot be read (sockets,
/// vanished) are skipped.
fn files_holding(dir: &Path, needles: &[&str]) -> Vec<(PathBuf, String)> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                for needle in needles {
                    if memchr::memmem::find(&bytes, needle.as_bytes()).is_some() {
                        hits.push((path.clone(), needle.to_string()));
                    }
                }
            }
        }
    }
    hits
}

/// Whether a process's private memory (heap, stacks, anonymous maps)
/// holds `needle`.
fn memory_holds(pid: u32, needle: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("mem");
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let anonymous = fields.len() < 6 || fields[5].starts_with('[');
        if !fields[1].starts_with('r') || !anonymous || fields.get(5) == Some(&"[vvar]") {
            continue;
        }
        let Some((start, end)) = fields[0].split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let mut buf = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        if memchr::memmem::find(&buf, needle).is_some() {
            return true;
        }
    }
    false
}

fn daemon_pid(host: &str) -> u32 {
    std::fs::read_to_string(state_dir(host).join("flotilla.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

/// The tmpfs this host's daemon keeps its tasks' files on.
fn task_files_mount(host: &str) -> Option<(String, String)> {
    let source = format!("flotilla:{}", state_dir(host).join("data").display());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.first() == Some(&source.as_str())).then(|| (f[1].to_string(), f[2].to_string()))
    })
}

#[test]
fn slow_secrets_and_configs_reach_only_their_tasks() {
    let c = Cluster::up(PREFIX, "10.213.47", 1, 2, "docker");
    let dir = tempfile::tempdir().expect("tempdir");
    let stamp = format!("{:x}", std::process::id() as u64 * 7919 + 13);
    let value = format!("pw-{stamp}-first");
    let value2 = format!("pw-{stamp}-second");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.to_string_lossy().into_owned()
    };
    let template = "svc={{.Service.Name}} slot={{.Task.Slot}} host={{.Node.Hostname}} \
                    env={{env \"GREETING\"}} pw={{secret \"db_pass\"}}\n";

    // 1. Created with the docker CLI, mounted in the task on worker01 with
    //    their content, owner and mode; the config's template expanded.
    c.docker_ok(&["node", "update", "--label-add", "secrets=yes", "worker01"]);
    c.docker_ok(&["secret", "create", "db_pass", &write("pw", &value)]);
    c.docker_ok(&[
        "config",
        "create",
        "--template-driver",
        "golang",
        "app.conf",
        &write("tmpl", template),
    ]);
    c.docker_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "app",
        "--constraint",
        "node.labels.secrets==yes",
        "--env",
        "GREETING=hello",
        "--stop-grace-period",
        "1s",
        // The container spec's own templates, expanded on the node.
        "--hostname",
        "{{.Node.Hostname}}-{{.Service.Name}}-{{.Task.Slot}}",
        "--secret",
        "source=db_pass,uid=1000,gid=1001,mode=0400",
        "--config",
        "source=app.conf,target=/etc/app.conf,mode=0440",
        IMAGE,
        "sleep",
        "3600",
    ]);
    let first = wait_container(&c, "worker01", "app", None);
    let seen = sh_in(
        &c,
        "worker01",
        &first,
        "hostname; stat -c '%u %g %a' /run/secrets/db_pass /etc/app.conf; cat /run/secrets/db_pass; echo; cat /etc/app.conf",
    );
    assert_eq!(
        seen,
        format!(
            "worker01-app-1\n1000 1001 400\n0 0 440\n{value}\nsvc=app slot=1 host=worker01 env=hello pw={value}\n"
        )
    );
    let (point, fstype) = task_files_mount("worker01").expect("worker01's task files tmpfs");
    assert_eq!(fstype, "tmpfs", "{point}");
    assert!(!point.starts_with(&*state_dir("worker01").to_string_lossy()));

    // 2. worker02 runs nothing of the service: its daemon never received
    //    the secret (not in its memory, not in any file it has), while
    //    worker01's daemon holds it (the check can see it).
    assert!(memory_holds(daemon_pid("worker01"), b64(&value).as_bytes()));
    let w2 = daemon_pid("worker02");
    assert!(
        !memory_holds(w2, value.as_bytes()),
        "worker02 holds the secret"
    );
    assert!(
        !memory_holds(w2, b64(&value).as_bytes()),
        "worker02 holds it encoded"
    );
    assert!(
        task_files_mount("worker02").is_none(),
        "worker02 mounted task files"
    );
    assert_eq!(files_holding(&state_dir("worker02"), &[&value]), []);

    // 3. worker01 killed (-9, daemon and dockerd): nothing of the secret is
    //    in any of its files, only on the tmpfs. Back, the task runs again
    //    with its files.
    c.host_op("kill", "worker01");
    let hits = files_holding(&state_dir("worker01"), &[&value, &b64(&value)]);
    assert_eq!(hits, [], "the secret reached worker01's files");
    c.host_op("start", "worker01");
    let again = wait_container(&c, "worker01", "app", Some(&first));
    let seen = sh_in(&c, "worker01", &again, "cat /run/secrets/db_pass");
    assert_eq!(seen, value);

    // 4. Rotation, the documented way: a new secret at the same target.
    c.docker_ok(&["secret", "create", "db_pass_v2", &write("pw2", &value2)]);
    let (ok, text) = c.docker(&["secret", "rm", "db_pass"]);
    assert!(
        !ok && text.contains("in use by the following service: app"),
        "{text}"
    );
    c.docker_ok(&[
        "service",
        "update",
        "-d",
        "--secret-rm",
        "db_pass",
        "--secret-add",
        "source=db_pass_v2,target=db_pass",
        "app",
    ]);
    let rotated = wait_container(&c, "worker01", "app", Some(&again));
    let seen = sh_in(
        &c,
        "worker01",
        &rotated,
        "cat /run/secrets/db_pass; echo; cat /etc/app.conf",
    );
    assert_eq!(
        seen,
        format!("{value2}\nsvc=app slot=1 host=worker01 env=hello pw={value2}\n")
    );
    let pretty = c.docker_ok(&["service", "inspect", "--pretty", "app"]);
    assert!(
        pretty.contains("Secrets:\n Target:\tdb_pass\n  Source:\tdb_pass_v2\n"),
        "{pretty}"
    );
    // The old secret is no longer used: it can go, and the node let its
    // stopped tasks' files go.
    c.docker_ok(&["secret", "rm", "db_pass"]);
    let (point, _) = task_files_mount("worker01").expect("tmpfs");
    wait_until(Duration::from_secs(20), "one task's files left", || {
        std::fs::read_dir(&point).map(|d| d.count()).unwrap_or(0) == 1
    });

    // 5. What a manager keeps on disk: no secret, no config, no join token.
    let worker_token = c.docker_ok(&["swarm", "join-token", "-q", "worker"]);
    let manager_token = c.docker_ok(&["swarm", "join-token", "-q", "manager"]);
    let needles = [
        value.as_str(),
        value2.as_str(),
        &b64(&value),
        &b64(&value2),
        "svc={{.Service.Name}}",
        &b64(template),
        worker_token.trim(),
        manager_token.trim(),
    ];
    let hits = files_holding(&state_dir("manager").join("data"), &needles);
    assert_eq!(hits, [], "plain text in the manager's data directory");
}
