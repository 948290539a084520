//! What the process executor needs to know about the host: its description,
//! processes in /proc, users in /etc/passwd, signal names.

use std::path::Path;

use crate::exec::NodeDescription;

/// The node as this host describes itself.
pub(crate) fn host_description(engine_version: &str) -> NodeDescription {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    NodeDescription {
        hostname: hostname(),
        os: std::env::consts::OS.to_string(),
        // Rust's names are uname's ("x86_64", "aarch64"), which Docker reports.
        architecture: std::env::consts::ARCH.to_string(),
        nano_cpus: cpus * 1_000_000_000,
        memory_bytes: mem_total().unwrap_or(0),
        engine_version: engine_version.to_string(),
        network_plugins: Vec::new(),
        generic_resources: Vec::new(),
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // it unless the name is truncated, which the search below tolerates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// MemTotal from /proc/meminfo, in bytes.
fn mem_total() -> Option<i64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The start time of a process (clock ticks since boot, field 22 of
/// /proc/PID/stat) and whether it is a zombie. With the pid, the start time
/// names a process for good: a pid reused later has another start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub start_time: u64,
    pub zombie: bool,
}

pub(crate) fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses itself: the fields that follow start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field 22 is at index 19.
    Some(ProcStat {
        zombie: matches!(fields.first(), Some(&"Z") | Some(&"X")),
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Is the process that started at `start_time` still running (and not a
/// zombie waiting to be reaped)?
pub(crate) fn alive(pid: u32, start_time: u64) -> bool {
    matches!(proc_stat(pid), Some(stat) if stat.start_time == start_time && !stat.zombie)
}

/// A signal by Docker's spellings: "SIGINT", "INT", "2".
pub(crate) fn parse_signal(name: &str) -> Option<i32> {
    let name = name.trim();
    if let Ok(number) = name.parse::<i32>() {
        return (1..=64).contains(&number).then_some(number);
    }
    let upper = name.to_ascii_uppercase();
    let short = upper.strip_prefix("SIG").unwrap_or(&upper);
    let signal = match short {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "ALRM" => libc::SIGALRM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        _ => return None,
    };
    Some(signal)
}

/// Who a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub home: Option<String>,
}

/// Resolves Docker's user syntax ("name", "uid", "name:group", "uid:gid")
/// against the host's /etc/passwd and /etc/group.
pub(crate) fn resolve_user(spec: &str, etc: &Path) -> Result<Credentials, String> {
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let passwd = std::fs::read_to_string(etc.join("passwd")).unwrap_or_default();
    // passwd lines: name:x:uid:gid:gecos:home:shell
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && (f[0] == user || f[2] == user));
    let (uid, mut gid, home) = match (&entry, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse()
                .map_err(|_| format!("bad uid for user {user} in /etc/passwd"))?,
            f[3].parse()
                .map_err(|_| format!("bad gid for user {user} in /etc/passwd"))?,
            Some(f[5].to_string()),
        ),
        // A numeric user that is not in passwd runs with that id as its group
        // too, as in Docker.
        (None, Ok(uid)) => (uid, uid, None),
        (None, Err(_)) => {
            return Err(format!(
                "unable to find user {user}: no matching entries in passwd file"
            ))
        }
    };
    if let Some(group) = group {
        gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = std::fs::read_to_string(etc.join("group")).unwrap_or_default();
                groups
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() >= 3 && f[0] == group)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(|| {
                        format!("unable to find group {group}: no matching entries in group file")
                    })?
            }
        };
    }
    Ok(Credentials { uid, gid, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_any_spelling() {
        assert_eq!(parse_signal("SIGINT"), Some(libc::SIGINT));
        assert_eq!(parse_signal("int"), Some(libc::SIGINT));
        assert_eq!(parse_signal("9"), Some(libc::SIGKILL));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
    }

    #[test]
    fn users_from_passwd_and_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .expect("write passwd");
        std::fs::write(dir.path().join("group"), "root:x:0:\nstaff:x:50:\n").expect("write group");
        let app = resolve_user("app", dir.path()).expect("app");
        assert_eq!(
            (app.uid, app.gid, app.home.as_deref()),
            (1000, 1001, Some("/home/app"))
        );
        assert_eq!(
            resolve_user("1000:staff", dir.path()).map(|c| c.gid),
            Ok(50)
        );
        assert_eq!(
            resolve_user("4242", dir.path()).map(|c| (c.uid, c.gid)),
            Ok((4242, 4242))
        );
        assert!(resolve_user("ghost", dir.path()).is_err());
        assert!(resolve_user("app:ghosts", dir.path()).is_err());
    }

    #[test]
    fn own_process_is_alive() {
        let stat = proc_stat(std::process::id()).expect("own stat");
        assert!(alive(std::process::id(), stat.start_time));
        assert!(!alive(std::process::id(), stat.start_time + 1));
    }
}
