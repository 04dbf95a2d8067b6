//! `rswarm`: the command line, and `rswarm daemon`, which runs a node.
//!
//! Exit codes follow Docker's: 0 success, 1 an error, 125 a usage error
//! (unknown flag, missing argument).

#![forbid(unsafe_code)]

mod client;
mod commands;
mod daemon;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A shim is one small process per task: it skips clap and the async
    // runtime (no worker threads) to stay as small as it can.
    let mut args = std::env::args_os().skip(1);
    if let (Some(verb), Some(task_dir), None) = (args.next(), args.next(), args.next())
        && verb == "shim"
    {
        return ExitCode::from(rswarm_agent::shim::run(std::path::Path::new(&task_dir)));
    }
    let cli = match commands::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => 125,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Nodes run on a worker per core; a command is one client and needs no
    // pool: one thread, no hand-offs between workers.
    let mut builder = if cli.runs_nodes() {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
