//! The host's network tools (iptables, ip, bridge): running one, hooking a
//! chain in, and the piece of rule text the mesh's and the overlay's NAT
//! share. Callers turn [`CommandError`] into their own errors.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// These answer in milliseconds; this only bounds a wedged one.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Why a host tool did not do what was asked.
#[derive(Debug)]
pub enum CommandError {
    NotInstalled {
        program: String,
    },
    /// `command` (program and arguments) failed: its stderr, or why it
    /// could not run or finish.
    Failed {
        command: String,
        message: String,
    },
}

/// Runs `program args…` with `input` on its stdin; its stdout.
pub async fn run(
    program: &str,
    args: &[&str],
    input: Option<&str>,
) -> Result<String, CommandError> {
    let command = format!("{program} {}", args.join(" "));
    let failed = |message: String| CommandError::Failed {
        command: command.clone(),
        message,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CommandError::NotInstalled {
                program: program.to_string(),
            },
            _ => failed(e.to_string()),
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| failed(format!("no answer within {TIMEOUT:?}")))?
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Puts `rule` first in `table`'s `chain` unless it is there already.
pub async fn hook_first(table: &str, chain: &str, rule: &str) -> Result<(), CommandError> {
    let words: Vec<&str> = rule.split_whitespace().collect();
    let mut check = vec!["-w", "-t", table, "-C", chain];
    check.extend(&words);
    if run("iptables", &check, None).await.is_err() {
        let mut insert = vec!["-w", "-t", table, "-I", chain, "1"];
        insert.extend(&words);
        run("iptables", &insert, None).await?;
    }
    Ok(())
}

/// The match that gives rule `position` of `count` consecutive DNAT rules
/// its share: the kernel tries them in order, rule i taking 1/(count-i) of
/// what reaches it, so each gets 1/count. Empty for the last rule.
pub fn equal_odds(position: usize, count: usize) -> String {
    let left = count - position;
    if left > 1 {
        format!(
            " -m statistic --mode random --probability {:.8}",
            1.0 / left as f64
        )
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_odds_leave_the_last_rule_unconditional() {
        let odds: Vec<String> = (0..3).map(|i| equal_odds(i, 3)).collect();
        assert_eq!(
            odds,
            [
                " -m statistic --mode random --probability 0.33333333",
                " -m statistic --mode random --probability 0.50000000",
                "",
            ]
        );
    }
}
