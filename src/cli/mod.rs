//! Command-line parsing and the commands' top-level flow.
//!
//! This is the only layer that prints to the user and decides exit codes; each
//! command parses and validates its arguments, then calls into the library.
//! Exit codes: 0 success, 1 refusal or failure, 2 usage error (clap); `run` exits
//! with the plugin's code, or 125 when it refuses or the sandbox cannot be set up.

mod audit;
mod ctl;
mod publish;
mod run;
mod serve;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A failure as the user sees it: one line and an exit code.
#[derive(Debug)]
pub struct Failure {
    pub line: String,
    pub code: u8,
}

impl Failure {
    /// A general failure: `warden: <what>`, exit 1.
    pub fn general(what: impl std::fmt::Display) -> Failure {
        Failure {
            line: format!("warden: {what}"),
            code: 1,
        }
    }

    /// A bundle refusal: `rejected: <code>: <detail>`.
    pub fn rejected(e: &crate::bundle::VerifyError, code: u8) -> Failure {
        Failure {
            line: format!("rejected: {}: {e}", e.code()),
            code,
        }
    }
}

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    about = "Verify signed plugin bundles and run them confined",
    long_about = "warden verifies signed plugin bundles against pinned publisher keys and runs \
the exact verified bytes inside a sandbox (namespaces, landlock, seccomp, no capabilities), \
brokering the plugins' host calls.\n\n\
Publishers use `keygen`, `pack` and `sign`; operators use `verify` and `run`, and run `serve` as the service, driven with `ctl`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Keygen(publish::KeygenArgs),
    Pack(publish::PackArgs),
    Sign(publish::SignArgs),
    Verify(verify::VerifyArgs),
    Audit(audit::AuditArgs),
    Run(run::RunArgs),
    Serve(serve::ServeArgs),
    Ctl(ctl::CtlArgs),
}

/// Parses the command line, runs the command and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The commands that print answers end quietly when their reader goes
    // (`warden ctl --json status x | grep -q running`), as other tools do, rather
    // than panic on EPIPE (Rust ignores SIGPIPE). `run` and `serve` keep it
    // ignored: a plugin's closed socket or pipe must not kill warden.
    if !matches!(cli.command, Command::Run(_) | Command::Serve(_)) {
        let _ = crate::sys::proc::signal_default(libc::SIGPIPE);
    }
    // SIGCHLD ignored by whoever started warden (exec keeps SIG_IGN) would have
    // the kernel reap the sandbox inits unseen: their exit status, the plugin's,
    // would be lost ("No child processes").
    let _ = crate::sys::proc::signal_default(libc::SIGCHLD);
    let result = match cli.command {
        Command::Keygen(a) => publish::keygen(a).map(|()| 0),
        Command::Pack(a) => publish::pack(a).map(|()| 0),
        Command::Sign(a) => publish::sign(a).map(|()| 0),
        Command::Verify(a) => verify::run(a).map(|()| 0),
        Command::Audit(a) => audit::run(a).map(|()| 0),
        Command::Run(a) => run::run(a),
        Command::Serve(a) => serve::run(a).map(|()| 0),
        Command::Ctl(a) => ctl::run(a).map(|()| 0),
    };
    // Lines the loop queued for stderr are written before anything else is.
    crate::logsink::flush();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("{}", f.line);
            ExitCode::from(f.code)
        }
    }
}
