//! `warden run`: verify one bundle, launch it confined, wait in the foreground and
//! exit with the plugin's code.
//!
//! Host calls arrive with the broker issue: until then the supervisor's end of the
//! plugin's socket is held open and whatever the plugin sends is read and dropped.

use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use clap::Args;

use super::Failure;
use crate::bundle;
use crate::policy::{Policy, Status};
use crate::sandbox::{Config, Plan, Sandbox, SandboxError, Stdio};
use crate::sys;

/// Exit code for refusals and sandbox set-up failures.
pub const EXIT_REFUSED: u8 = 125;

/// Verify a bundle and run it in the foreground, confined.
///
/// The plugin's stdout and stderr pass through; stdin is /dev/null; the exit code is
/// the plugin's (128+N if killed by signal N). Refusals and sandbox failures exit 125
/// with one line: `rejected: <code>: <detail>`, `sandbox: <step>: <ERRNO>`,
/// `sandbox: kernel feature missing: ...` or `warden: ...`.
#[derive(Args)]
pub struct RunArgs {
    /// The bundle directory (manifest.json, manifest.json.minisig, artifact).
    pub dir: PathBuf,
    /// The trust directory: <publisher>/<name>.pub keys and an optional `revoked` list.
    #[arg(long, value_name = "TRUSTDIR")]
    pub trust: PathBuf,
    /// The operator policy for this plugin (docs/policy.md); it only narrows the manifest.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Print the sandbox plan (mounts, rlimits, landlock, seccomp, uid map) and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Host uids for plugins when warden runs as root; each plugin gets one derived
    /// stably from its id. Ignored when unprivileged (the plugin maps to your uid).
    #[arg(long, value_name = "START-END", default_value = "3000000000-3000065535", value_parser = parse_range)]
    pub uid_range: (u32, u32),
    /// Refuse to run on a kernel whose landlock ABI is lower than this.
    #[arg(long, value_name = "N", default_value_t = crate::sandbox::plan::DEFAULT_LANDLOCK_MIN_ABI,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub landlock_min_abi: u32,
    /// Do not put the sandbox in its own cgroup (the rlimits still apply).
    #[arg(long)]
    pub no_cgroup: bool,
    /// Arguments for the plugin, replacing the manifest's `args`.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Option<Vec<String>>,
}

fn parse_range(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| "expected START-END, e.g. 3000000000-3000065535".to_owned())?;
    let a: u32 = a.parse().map_err(|e| format!("START: {e}"))?;
    let b: u32 = b.parse().map_err(|e| format!("END: {e}"))?;
    if a == 0 || a > b || b == u32::MAX {
        return Err("need 0 < START <= END < 4294967295".into());
    }
    Ok((a, b))
}

fn refused(line: impl std::fmt::Display) -> Failure {
    Failure {
        line: line.to_string(),
        code: EXIT_REFUSED,
    }
}

fn sandbox_failure(e: SandboxError) -> Failure {
    refused(e)
}

/// Runs the command; returns the process exit code.
pub fn run(a: RunArgs) -> Result<u8, Failure> {
    // Parse and validate everything before the first side effect.
    let trust = super::verify::load_trust(&a.trust).map_err(|f| refused(f.line))?;
    let policy = match &a.policy {
        Some(p) => Policy::load(p).map_err(|e| refused(format_args!("warden: policy: {e}")))?,
        None => Policy::default(),
    };
    let config = Config {
        uid_range: a.uid_range,
        landlock_min_abi: a.landlock_min_abi,
        cgroup: !a.no_cgroup,
    };
    let b = bundle::verify(&a.dir, &trust).map_err(|e| Failure::rejected(&e, EXIT_REFUSED))?;
    let m = b.manifest();
    if policy.status == Status::Blocked {
        return Err(refused(format_args!(
            "warden: {} is blocked by policy {}",
            m.id,
            a.policy
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        )));
    }
    let eff = policy.apply(m);
    let args = a.args.clone().unwrap_or_else(|| m.args.clone());
    let plan = Plan::new(&b, eff.resources, &args, &config).map_err(sandbox_failure)?;
    if a.dry_run {
        print!("{plan}");
        let caps: Vec<&str> = eff.capabilities.iter().map(|c| c.as_str()).collect();
        println!(
            "granted capabilities: [{}] (policy status {})",
            caps.join(", "),
            policy.status.as_str()
        );
        return Ok(0);
    }
    // SIGTERM, SIGINT and SIGHUP to warden are forwarded to the sandbox (whose
    // init passes them to the plugin), so that warden outlives the plugin and
    // cleans up. The sandbox init blocks them too; the plugin starts unblocked.
    let set = sys::proc::sigset(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]);
    let old = sys::proc::sigprocmask(libc::SIG_BLOCK, &set)
        .map_err(|e| refused(format_args!("warden: sigprocmask: {e}")))?;
    let sigfd =
        sys::proc::signalfd(&set).map_err(|e| refused(format_args!("warden: signalfd: {e}")))?;
    let mut sb = Sandbox::spawn(&plan, &b, Stdio::inherit()).map_err(sandbox_failure)?;
    drain_until_exit(&sb, sigfd.as_fd());
    let status = sb.wait().map_err(sandbox_failure);
    let _ = sys::proc::sigprocmask(libc::SIG_SETMASK, &old);
    if sb.left_stale_cgroups() {
        crate::sandbox::sweep_stale_cgroups();
    }
    let status = status?;
    Ok(status.shell_code().clamp(0, 255) as u8)
}

/// Waits for the sandbox's pidfd, reading and dropping anything the plugin sends
/// on its socket meanwhile (host calls are served once the broker exists).
fn drain_until_exit(sb: &Sandbox, signals: std::os::fd::BorrowedFd<'_>) {
    let mut socket_open = true;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: sb.pidfd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sb.socket().map_or(-1, |s| s.as_raw_fd()),
                events: if socket_open { libc::POLLIN } else { 0 },
                revents: 0,
            },
            libc::pollfd {
                fd: signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if !socket_open {
            fds[1].fd = -1;
        }
        if sys::proc::poll(&mut fds, -1).is_err() || fds[0].revents != 0 {
            return;
        }
        if fds[2].revents != 0 {
            let mut info = [0u8; 128];
            if sys::proc::read(signals.as_raw_fd(), &mut info).is_ok() {
                let _ = sb.terminate();
            }
        }
        if fds[1].revents != 0 {
            let Some(sock) = sb.socket() else {
                socket_open = false;
                continue;
            };
            match sys::socket::recv(sock.as_fd(), &mut buf, libc::MSG_DONTWAIT) {
                Ok(0) => socket_open = false,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                Err(_) => socket_open = false,
            }
        }
    }
}
