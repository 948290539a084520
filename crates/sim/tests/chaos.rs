//! The chaos harness in CI, so it cannot rot: two short seeded schedules
//! against a cluster of network-namespace hosts (3 managers, 2 workers,
//! process executor), which must end with no violation. Longer runs and
//! their results are in RELIABILITY.md.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn slow_chaos_two_short_seeds_with_every_fault_find_no_violation() {
    let chaos = PathBuf::from(env!("CARGO_BIN_EXE_flotilla-chaos"));
    // The daemon is built beside it (the workspace's test build builds
    // every binary).
    let flotilla = chaos.with_file_name("flotilla");
    assert!(
        flotilla.exists(),
        "{} is missing: build the workspace (cargo build) first",
        flotilla.display()
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Seeds 105 and 107 (30 s) between them inject every kind of fault:
    // a full disk on a manager (twice), kills of managers and workers, a
    // partitioned manager and leader, a paused leader, a double fault.
    for seed in ["105", "107"] {
        let log = tempfile::NamedTempFile::new().unwrap();
        let out = Command::new(&chaos)
            .current_dir(&root)
            .env("FLOTILLA_BIN", &flotilla)
            .args([
                "--seed",
                seed,
                "--runs",
                "1",
                "--duration",
                "30",
                "--prefix",
                "ftchaos",
                "--subnet",
                "10.213.91",
                "--settle",
                "90",
                "--log",
            ])
            .arg(log.path())
            .output()
            .expect("run flotilla-chaos");
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "flotilla-chaos found violations (log: {}):\n{stdout}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
        assert!(stdout.contains(&format!("seed {seed}:")), "{stdout}");
        let log = std::fs::read_to_string(log.path()).unwrap_or_default();
        assert!(
            log.contains("\"event\":\"fault\""),
            "seed {seed} injected no fault:\n{log}"
        );
    }
}
