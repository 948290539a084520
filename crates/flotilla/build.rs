//! Release builds lay out first, together, the functions an idle node runs
//! (text-order.txt, made by scripts/text-order.sh): an idle daemon's memory
//! is mostly its binary's code, paged in 64 KiB around each function it
//! touches, and scattered over the whole text those few functions made
//! most of it resident.
//!
//! Only where the linker is rustc's own lld (x86_64 Linux since Rust 1.90)
//! and nobody chose another; `FLOTILLA_TEXT_ORDER=off` leaves it out.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=text-order.txt");
    println!("cargo:rerun-if-env-changed=FLOTILLA_TEXT_ORDER");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let release = env("PROFILE") == "release";
    let target = env("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && env("CARGO_CFG_TARGET_OS") == "linux"
        && env("CARGO_CFG_TARGET_ENV") == "gnu";
    let own_linker = !env("CARGO_ENCODED_RUSTFLAGS").contains("link")
        && std::env::vars()
            .all(|(k, _)| !(k.starts_with("CARGO_TARGET_") && k.ends_with("_LINKER")));
    let off = env("FLOTILLA_TEXT_ORDER") == "off";
    let list = Path::new(&env("CARGO_MANIFEST_DIR")).join("text-order.txt");
    if !(release && target && own_linker && !off && list.exists() && lld_by_default()) {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=flotilla=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    // Functions of the list that this build does not have (renamed, inlined).
    println!("cargo:rustc-link-arg-bin=flotilla=-Wl,--no-warn-symbol-ordering");
}

/// Whether rustc links with its own lld by default: from 1.90 on.
fn lld_by_default() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    // "rustc 1.95.0 (59807616e 2026-...)"
    let mut parts = version
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
