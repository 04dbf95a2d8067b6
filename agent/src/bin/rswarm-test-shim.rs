//! The shim entry point alone, for the agent's tests: `rswarm-test-shim
//! <task dir>` does what `rswarm shim <task dir>` does, without building the
//! whole `rswarm` binary. Not shipped.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(task_dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: rswarm-test-shim <task dir>");
        return ExitCode::from(2);
    };
    ExitCode::from(rswarm_agent::shim::run(std::path::Path::new(&task_dir)))
}
