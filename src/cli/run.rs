//! `warden run`: verify one bundle, launch it confined, serve its host calls in the
//! foreground (one mio loop: the broker, the sandbox's pidfd, forwarded signals),
//! audit every decision, and exit with the plugin's code.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use clap::Args;

use super::Failure;
use crate::audit::{AuditConfig, AuditError, AuditLog, Event};
use crate::broker::files::FileRoot;
use crate::broker::{AuditRecorder, Broker, PluginContext, Recorder};
use crate::bundle::{self, Capability};
use crate::policy::{Policy, Status};
use crate::sandbox::{Config, ExitStatus, Output, Plan, Sandbox, SandboxError, Stdio};
use crate::store::kv::Quota;
use crate::store::{self, Store};
use crate::sys;

const WAKER: Token = Token(0);
const PIDFD: Token = Token(1);
const SIGNALS: Token = Token(2);
const PLUGIN: Token = Token(3);

/// Exit code for refusals and sandbox set-up failures.
pub const EXIT_REFUSED: u8 = 125;

/// Verify a bundle and run it in the foreground, confined, serving its host calls.
///
/// Host calls on the plugin's fd 3 are checked against the manifest and policy,
/// rate-limited, answered, and every decision is written to the audit log. The
/// plugin's stdout and stderr pass through; stdin is /dev/null; the exit code is
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
    /// Where the state database (the plugins' KV namespaces; opened only for a
    /// plugin granted kv:read or kv:write) and the default audit log live. Default:
    /// /var/lib/warden as root, else $XDG_STATE_HOME/warden or ~/.local/state/warden.
    /// Runs may share one (each with its own --audit); for a plugin granted KV or
    /// static files, the state_dir of a running `warden serve` is refused.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The audit log (JSON Lines, hash-chained; docs/audit.md). Default:
    /// <state-dir>/audit.log.
    #[arg(long, value_name = "FILE")]
    pub audit: Option<PathBuf>,
    /// Arguments for the plugin, replacing the manifest's `args` (`--` with nothing
    /// after it: no arguments).
    #[arg(last = true, value_name = "ARGS")]
    pub args: Option<Vec<String>>,
}

/// Whether the command line has a bare `--`: the plugin's arguments follow it,
/// none at all included.
fn bare_double_dash() -> bool {
    std::env::args_os().skip(1).any(|a| a == "--")
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
    // The seccomp program depends on nothing below: compile it meanwhile.
    crate::sandbox::seccomp::precompile_default();
    // Parse and validate everything before the first side effect.
    let trust = super::verify::load_trust(&a.trust).map_err(|f| refused(f.line))?;
    let policy = match &a.policy {
        Some(p) => Policy::load(p).map_err(|e| refused(format_args!("warden: policy: {e}")))?,
        None => Policy::default(),
    };
    let config = Config {
        uid_range: a.uid_range,
        host_uid: None,
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
    // `--` alone means "no arguments", which clap reports as none given.
    let args = a
        .args
        .clone()
        .or_else(|| bare_double_dash().then(Vec::new))
        .unwrap_or_else(|| m.args.clone());
    let plan = Plan::new(&b, eff.resources, &args, &config).map_err(sandbox_failure)?;
    if a.dry_run {
        print!("{plan}");
        let caps: Vec<&str> = eff.capabilities.iter().map(|c| c.as_str()).collect();
        // Under `warden serve` pending_review grants nothing; here the operator
        // runs the plugin by hand, and only `blocked` stops it: said, so that
        // the two are not taken for one.
        let gate = match policy.status {
            Status::PendingReview => "; warden run gates only on blocked: grant decides",
            _ => "",
        };
        // Without --policy there is no status to speak of: the default policy's
        // `pending_review` would read as a review nobody asked for.
        let why = match a.policy {
            None => "no --policy: everything the manifest declares".to_owned(),
            Some(_) => format!("policy status {}{gate}", policy.status.as_str()),
        };
        println!("granted capabilities: [{}] ({why})", caps.join(", "));
        print_broker_limits(&policy, eff.resources.call_timeout_ms.get());
        return Ok(0);
    }
    let state_dir = a.state_dir.clone().unwrap_or_else(default_state_dir);
    // The database is opened (and its schema checked) only for a plugin that may
    // use it: the broker refuses KV calls without a KV grant before any handler runs.
    let uses_kv = eff
        .capabilities
        .iter()
        .any(|c| matches!(c, Capability::KvRead | Capability::KvWrite));
    let uses_files = eff
        .capabilities
        .iter()
        .any(|c| matches!(c, Capability::StaticRead | Capability::StaticWrite));
    // Held until the run ends, when the plugin may use what a `warden serve` on
    // the same directory would share with it (KV namespace, data directory).
    let _state_lock = if uses_kv || uses_files {
        Some(
            store::claim(&state_dir, store::Holder::Run)
                .map_err(|e| refused(format_args!("warden: {e}")))?,
        )
    } else {
        None
    };
    let store = if uses_kv {
        Store::open(&state_dir)
    } else {
        Store::unopened(&state_dir)
    }
    .map_err(|e| refused(format_args!("warden: {e}")))?;
    let audit_path = a
        .audit
        .clone()
        .unwrap_or_else(|| state_dir.join("audit.log"));
    let audit = AuditLog::open(AuditConfig::new(&audit_path)).map_err(|e| match e {
        // One writer per hash chain: say how to run alongside the other writer.
        AuditError::Locked { .. } if a.audit.is_some() => refused(format_args!(
            "warden: {e}; another warden writes this audit log: give this run its own --audit FILE"
        )),
        AuditError::Locked { .. } => refused(format_args!(
            "warden: {e}; another warden uses this state directory: give this run its own --audit FILE (or --state-dir)"
        )),
        e => refused(format_args!("warden: {e}")),
    })?;
    let rates = &policy.rate_limits;
    let files = if uses_files {
        let ids = plan.ids();
        let owner = ids.privileged.then_some((ids.host_uid, ids.host_gid));
        let root = FileRoot::prepare(&state_dir, m.id.as_str(), policy.data_quota_bytes(), owner)
            .map_err(|e| refused(format_args!("warden: {e}")))?;
        Some(Arc::new(root))
    } else {
        None
    };
    let ctx = PluginContext {
        id: m.id.to_string(),
        version: m.version.to_string(),
        sha256: b.sha256().to_string(),
        declared: m.capabilities.clone(),
        granted: eff.capabilities.clone(),
        call_timeout: Duration::from_millis(eff.resources.call_timeout_ms.get()),
        rate: rates.default.unwrap_or_default(),
        rate_overrides: rates.per_capability.clone(),
        kv_quota: Quota::default(),
        blocked: false,
        egress: policy.egress.clone().map(Arc::new),
        files,
    };

    // SIGTERM, SIGINT and SIGHUP to warden are forwarded to the sandbox (whose
    // init passes them to the plugin), so that warden outlives the plugin and
    // cleans up. The sandbox init blocks them too; the plugin starts unblocked.
    let set = sys::proc::sigset(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]);
    sys::proc::sigprocmask(libc::SIG_BLOCK, &set)
        .map_err(|e| refused(format_args!("warden: sigprocmask: {e}")))?;
    let sigfd =
        sys::proc::signalfd(&set).map_err(|e| refused(format_args!("warden: signalfd: {e}")))?;
    let loop_err = |e: std::io::Error| refused(format_args!("warden: event loop: {e}"));
    let mut poll = Poll::new().map_err(loop_err)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(loop_err)?);

    // Launch first: the audit thread and the broker are set up while the sandbox
    // builds itself (it waits for nothing from us after its id maps), and the
    // plugin's first message waits in its socket until the loop runs.
    let (stdio, copies) = plugin_output()
        .map_err(|e| refused(format_args!("warden: a terminal for the plugin: {e}")))?;
    let mut sb = match Sandbox::spawn(&plan, &b, stdio) {
        Ok(sb) => sb,
        Err(e) => {
            let mut audit = audit;
            let failed = event(&ctx, "launch_failed", Some(e.to_string()));
            if let Err(ae) = audit.append(&failed).and_then(|_| audit.close()) {
                eprintln!("warden: {ae}");
            }
            return Err(sandbox_failure(e));
        }
    };
    let recorder = AuditRecorder::start(audit);
    let mut launch = event(&ctx, "launch", None);
    launch
        .extra
        .insert("landlock_abi".into(), plan.landlock_abi().into());
    launch.extra.insert("pid".into(), sb.pid().into());
    launch
        .extra
        .insert("cgroup".into(), plan.cgroup_audit().into());
    recorder.append(launch);
    // (Should this fail, the sandbox is killed as `sb` drops, and the recorder,
    // dropped inside, still writes the launch event.)
    let mut broker = Broker::new(poll.registry(), &store, waker, recorder, 2)
        .map_err(|e| refused(format_args!("warden: {e}")))?;
    // Another run of this plugin on the same state directory may write its
    // namespace: a cached value could be older than that write.
    broker.read_through();
    if let Some(sock) = sb.take_socket() {
        broker.attach(PLUGIN, sock, ctx.clone()).map_err(|e| {
            let _ = sb.kill();
            refused(format_args!("warden: {e}"))
        })?;
    }
    let registered = poll
        .registry()
        .register(
            &mut SourceFd(&sb.pidfd().as_raw_fd()),
            PIDFD,
            Interest::READABLE,
        )
        .and_then(|()| {
            poll.registry().register(
                &mut SourceFd(&sigfd.as_raw_fd()),
                SIGNALS,
                Interest::READABLE,
            )
        });
    if let Err(e) = registered {
        let _ = sb.kill();
        return Err(loop_err(e));
    }

    let audit_failure = serve_until_exit(&mut poll, &mut broker, &sb, sigfd.as_fd());
    let status = sb.wait().map_err(sandbox_failure);
    // Every process of the sandbox is gone with its init, so the plugin's
    // terminal is closed: what it wrote goes out before warden says how it ended.
    for copy in copies {
        copy.finish();
    }
    // SIGTERM, SIGINT and SIGHUP stay blocked until warden exits: one arriving
    // now (a second Ctrl-C) must not kill it before the run's exit event is
    // written and the log closed. Pending ones die with the process.
    if sb.left_stale_cgroups() {
        crate::sandbox::sweep_stale_cgroups();
    }
    let mut exit = event(&ctx, "exit", audit_failure.clone());
    if let Ok(st) = &status {
        let (k, v) = match st {
            ExitStatus::Code(c) => ("exit_code", *c),
            ExitStatus::Signal(s) => ("signal", *s),
        };
        exit.extra.insert(k.into(), v.into());
    }
    broker.recorder().append(exit);
    let closed = broker.into_recorder().close();
    if let Some(why) = audit_failure {
        return Err(refused(format_args!(
            "warden: {why}; the plugin was stopped (fail closed)"
        )));
    }
    closed.map_err(Failure::general)?;
    let status = status?;
    Ok(status.shell_code().clamp(0, 255) as u8)
}

/// The default state directory: /var/lib/warden as root, else the user's state dir.
fn default_state_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/warden");
    }
    match std::env::var_os("XDG_STATE_HOME") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d).join("warden"),
        _ => std::env::var_os("HOME").map_or_else(
            || PathBuf::from(".warden-state"),
            |h| PathBuf::from(h).join(".local/state/warden"),
        ),
    }
}

fn event(ctx: &PluginContext, kind: &'static str, reason: Option<String>) -> Event {
    Event {
        kind,
        plugin: Some(ctx.id.clone()),
        version: Some(ctx.version.clone()),
        sha256: Some(ctx.sha256.clone()),
        reason,
        ..Event::default()
    }
}

/// The dry run's account of what the broker enforces beyond the sandbox plan:
/// the call timeout, the data quota, the rate limits and the egress lists.
fn print_broker_limits(policy: &Policy, call_timeout_ms: u64) {
    let rates = &policy.rate_limits;
    let rate = rates.default.unwrap_or_default();
    let overrides: Vec<String> = rates
        .per_capability
        .iter()
        .map(|(c, r)| format!(", {c} {}/s burst {}", r.per_second, r.burst))
        .collect();
    println!(
        "broker: call_timeout_ms {call_timeout_ms}, data_mb {} (fs.open quota), rate {}/s burst {}{}",
        policy.data_quota_bytes() / (1024 * 1024),
        rate.per_second,
        rate.burst,
        overrides.concat()
    );
    match &policy.egress {
        None => println!("egress: none (every net.dial is refused)"),
        Some(e) => {
            let list = |v: Vec<String>| format!("[{}]", v.join(", "));
            println!(
                "egress: allow {} allow_addresses {}",
                list(e.allow.iter().map(ToString::to_string).collect()),
                list(e.addresses.iter().map(ToString::to_string).collect())
            );
        }
    }
}

/// Serves host calls until the sandbox exits; forwards SIGTERM/SIGINT/SIGHUP to it.
/// Returns the audit failure if recording failed (the sandbox is then killed).
fn serve_until_exit(
    poll: &mut Poll,
    broker: &mut Broker<AuditRecorder>,
    sb: &Sandbox,
    signals: BorrowedFd<'_>,
) -> Option<String> {
    let mut events = Events::with_capacity(64);
    let mut exited = false;
    while !exited {
        let turned = broker.turn(poll, &mut events, WAKER, None, |ev| match ev.token() {
            PIDFD => exited = true,
            SIGNALS => {
                // Each read is one signalfd_siginfo, whose first field is the
                // signal's number: passed on as itself (Ctrl-C is SIGINT).
                let mut info = [0u8; 128];
                while sys::proc::read(signals.as_raw_fd(), &mut info).is_ok_and(|n| n >= 4) {
                    let signo = u32::from_ne_bytes(info[..4].try_into().expect("4 bytes"));
                    let _ = sb.forward(signo as libc::c_int);
                }
            }
            _ => {}
        });
        if let Err(e) = turned {
            let _ = sb.kill();
            return Some(format!("event loop: {e}"));
        }
        if let Some(why) = broker.recorder().failure() {
            let _ = sb.kill();
            return Some(why);
        }
    }
    // The plugin is gone: answer what it had already sent, then stop.
    broker.run_pending();
    broker.detach(PLUGIN);
    None
}

/// The plugin's stdout and stderr: never warden's own descriptions of a file,
/// pipe, socket or terminal. Sharing one, a plugin could rewrite what it points
/// at: truncate or overwrite the operator's log (`>> plugins.log`: clear
/// O_APPEND, ftruncate, pwrite), set O_NONBLOCK under warden's own writes, or,
/// holding the operator's terminal, read what is typed, change its modes for
/// good or take its foreground. So in place of each the plugin gets a stand-in
/// (see [`stand_in`]), one for stdout and stderr when both are the same file
/// (`>log 2>&1`, or a shell's terminal), so that their order is kept. Devices
/// that are no terminal (/dev/null) are passed as they are. Returns the
/// threads copying to warden's outputs, which end when the plugin's side is
/// closed by all.
fn plugin_output() -> std::io::Result<(Stdio, Vec<Copying>)> {
    let (out, err) = (std::io::stdout(), std::io::stderr());
    let (out, err) = (out.as_fd(), err.as_fd());
    let (out_kind, err_kind) = (Shared::of(out), Shared::of(err));
    let mut stdio = Stdio::inherit();
    let mut copies = Vec::new();
    if let (Some(k), Some(_)) = (out_kind, err_kind) {
        if same_file(out, err) {
            let (w, copy) = stand_in(out, k)?;
            stdio.stdout = Output::Fd(w.try_clone()?);
            stdio.stderr = Output::Fd(w);
            copies.push(copy);
            return Ok((stdio, copies));
        }
    }
    if let Some(k) = out_kind {
        let (w, copy) = stand_in(out, k)?;
        stdio.stdout = Output::Fd(w);
        copies.push(copy);
    }
    if let Some(k) = err_kind {
        let (w, copy) = stand_in(err, k)?;
        stdio.stderr = Output::Fd(w);
        copies.push(copy);
    }
    Ok((stdio, copies))
}

/// An output of warden's that the plugin must not share.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shared {
    Terminal,
    /// A regular file, a pipe or a socket.
    Plain,
}

impl Shared {
    /// `None` for what may be passed as it is (a device that is no terminal, or
    /// a closed descriptor).
    fn of(fd: BorrowedFd<'_>) -> Option<Shared> {
        use std::io::IsTerminal;
        if fd.is_terminal() {
            return Some(Shared::Terminal);
        }
        let mode = sys::fs::fstat(fd).ok()?.st_mode & libc::S_IFMT;
        matches!(mode, libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK).then_some(Shared::Plain)
    }
}

/// Whether two descriptors are the same file (device number and inode).
fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    match (sys::fs::fstat(a), sys::fs::fstat(b)) {
        (Ok(x), Ok(y)) => (x.st_rdev, x.st_dev, x.st_ino) == (y.st_rdev, y.st_dev, y.st_ino),
        _ => false,
    }
}

/// How long a copy to warden's output may make no progress, once the plugin
/// has ended, before warden gives up on the rest (its reader has stopped: a
/// stalled journal, a pipe nobody reads).
const COPY_STALLED: Duration = Duration::from_secs(2);

/// A thread copying the plugin's output to one of warden's, and how many bytes
/// it has written.
struct Copying {
    thread: std::thread::JoinHandle<()>,
    written: Arc<std::sync::atomic::AtomicU64>,
}

impl Copying {
    /// Waits until everything the plugin wrote is copied, as long as warden's
    /// output keeps taking it: a reader that takes nothing for
    /// [`COPY_STALLED`] loses the rest (warden exits all the same).
    fn finish(self) {
        use std::sync::atomic::Ordering;
        let mut last = self.written.load(Ordering::Relaxed);
        let mut since = std::time::Instant::now();
        while !self.thread.is_finished() {
            std::thread::sleep(Duration::from_millis(10));
            let now = self.written.load(Ordering::Relaxed);
            if now != last {
                (last, since) = (now, std::time::Instant::now());
            } else if since.elapsed() >= COPY_STALLED {
                return;
            }
        }
        let _ = self.thread.join();
    }
}

/// A stand-in for warden's output `to`, and a thread copying what the plugin
/// writes there to `to`, as written. For a terminal, a fresh pseudo-terminal of
/// the plugin's own (same window size at launch; its output stays line-buffered
/// and in the order written), or, where none can be had, a pipe; for a file,
/// pipe or socket, a pipe. Returns the plugin's end.
fn stand_in(to: BorrowedFd<'_>, kind: Shared) -> std::io::Result<(std::os::fd::OwnedFd, Copying)> {
    let (read, write) = match kind {
        Shared::Plain => sys::socket::pipe(0)?,
        Shared::Terminal => match sys::pty::open(to) {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!(
                    "warden: no pseudo-terminal for the plugin ({e}); its output reaches the terminal through a pipe"
                );
                sys::socket::pipe(0)?
            }
        },
    };
    let to = to.try_clone_to_owned()?;
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = Arc::clone(&written);
    let thread = std::thread::Builder::new()
        .name("warden-output".into())
        .spawn(move || {
            use std::io::{Read, Write};
            let (mut from, mut to) = (std::fs::File::from(read), std::fs::File::from(to));
            let mut buf = vec![0u8; 64 * 1024];
            // Ends at EOF, or EIO for a pseudo-terminal, once no one holds the
            // plugin's end any more; or when warden's output is gone.
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                };
                // In small writes, each counted: a reader that is slow but
                // keeps reading is seen to make progress.
                for chunk in buf[..n].chunks(4096) {
                    if to.write_all(chunk).is_err() {
                        return;
                    }
                    counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })?;
    Ok((write, Copying { thread, written }))
}
