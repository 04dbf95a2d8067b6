//! Link layout of the `rswarm` binary: hands `shim-layout.ld` to the linker,
//! which puts the code a shim runs (one shim per task) in one place so that a
//! shim maps a few hundred KiB of the binary instead of a few MiB. Layout
//! only: a pattern that matches nothing changes nothing but memory.
//!
//! `RSWARM_NO_SHIM_LAYOUT=1` leaves the layout to the linker (for linkers
//! that do not take GNU linker scripts, such as mold).

use std::path::Path;

/// The linker script, next to this file.
const SCRIPT: &str = "shim-layout.ld";

fn main() {
    println!("cargo::rerun-if-changed={SCRIPT}");
    println!("cargo::rerun-if-env-changed=RSWARM_NO_SHIM_LAYOUT");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let opted_out = std::env::var_os("RSWARM_NO_SHIM_LAYOUT").is_some_and(|v| v != "0");
    if !linux || opted_out {
        return;
    }
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        println!("cargo::warning=no CARGO_MANIFEST_DIR: linking rswarm without {SCRIPT}");
        return;
    };
    let script = Path::new(&dir).join(SCRIPT);
    // With INSERT, both GNU ld and lld add the script to their default layout.
    println!(
        "cargo::rustc-link-arg-bin=rswarm=-Wl,-T,{}",
        script.display()
    );
}
