//! `warden serve`'s engine: one mio loop that scans the plugin directory, keeps
//! every active plugin running and healthy, serves host calls through the
//! [`Broker`], answers the control socket, and talks to systemd.
//!
//! Owns: per-plugin runtime state (starting, running, backoff, stopped, failed),
//! the lifecycle records and review policy in the store, restarts with backoff and
//! a budget, health pings, blue-green replacement, output forwarding, signals
//! (signalfd: SIGTERM/SIGINT stop, SIGHUP reloads) and the control socket server.
//! Sandboxes are spawned from the loop thread itself, because a sandbox's
//! parent-death signal is tied to the thread that spawned it.
//!
//! Must not live here: protocol details and host-call dispatch (`crate::broker`),
//! the launch sequence (`crate::sandbox`), verification (`crate::bundle`), raw
//! syscalls (`crate::sys`), printing tables or exit codes (`crate::cli`).
//! The loop follows mio's tcp_server example: constant tokens for fixed sources
//! ([`WAKER`], [`SIGNALS`], [`CONTROL`]), a map for everything per plugin.
//!
//! This file holds the state, the loop, scanning and reconciling; `launch` runs
//! instances (start, replace, stop, exits, crashes), `timers` does what is due
//! (backoffs, pings, deadlines, watchdog), `admin` is the control plane.

mod admin;
mod launch;
pub mod lifecycle;
pub mod notify;
pub mod output;
mod timers;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use serde_json::{json, Value};

use crate::audit::{AuditConfig, AuditLog, Event};
use crate::broker::egress::guard::Egress;
use crate::broker::{AuditRecorder, Broker, PluginContext, Recorder};
use crate::bundle::{self, Capability, TrustStore, VerifiedBundle};
use crate::config::Config;
use crate::control::{self, Request};
use crate::policy::{self, Policy};
use crate::sandbox::{self, Output, Plan, Sandbox, Stdio};
use crate::store::{self, plugins::Record, Store};
use crate::sys;
use lifecycle::{Action, Budget, Status};

/// The broker's waker.
pub const WAKER: Token = Token(0);
/// The signalfd.
pub const SIGNALS: Token = Token(1);
/// The control socket listener.
pub const CONTROL: Token = Token(2);
const FIRST_DYNAMIC: usize = 16;
/// Tokens per instance: channel, pidfd, stdout, stderr.
const PER_INSTANCE: usize = 4;
/// Health pings are sent on this grid (from warden's start), so that many
/// plugins' pings and timeouts share one wake-up instead of one each.
const PING_GRID: Duration = Duration::from_millis(100);
/// How long a plugin whose channel closed may take to exit before SIGKILL.
const CLOSE_GRACE: Duration = Duration::from_millis(500);
/// How long the loop sleeps at most when nothing is due.
const IDLE_WAIT: Duration = Duration::from_secs(3600);

/// Why `warden serve` could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The trust error names the directory or the file in it.
    #[error("trust directory: {source}")]
    Trust {
        source: crate::bundle::trust::TrustError,
    },
    #[error("{0}")]
    Store(#[from] store::StoreError),
    #[error("state database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("plugin directory {path}: {source}")]
    PluginDir { path: String, source: io::Error },
    #[error("control socket {path}: {what}: {source}")]
    Control {
        path: String,
        what: &'static str,
        source: io::Error,
    },
    #[error("control socket {path}: another warden is serving it")]
    ControlBusy { path: String },
    /// Only a stale socket is replaced: anything else there is the operator's.
    #[error("control socket {path}: exists and is not a socket (a {kind}); not replacing it")]
    ControlNotSocket { path: String, kind: &'static str },
    #[error("event loop: {what}: {source}")]
    Loop {
        what: &'static str,
        source: io::Error,
    },
    #[error("{0}")]
    Broker(#[from] crate::broker::BrokerError),
    #[error("audit recording failed, stopping (fail closed): {0}")]
    AuditFailed(String),
}

/// Why an instance is being stopped; decides what happens when it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The operator disabled it or its bundle became unusable: stay down.
    Down,
    /// The operator restarted it: start again at once.
    Restart,
    /// warden is stopping.
    Shutdown,
    /// It missed a health reply or never said hello: a crash, for the budget.
    Unhealthy,
    /// A new version took over.
    Retired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Live,
    Candidate,
    Retiring,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pid,
    Out(usize),
    Client,
}

struct Pipe {
    fd: OwnedFd,
    buf: output::LineBuf,
}

struct Instance {
    base: usize,
    sandbox: Sandbox,
    bundle: Rc<VerifiedBundle>,
    started: Instant,
    ready_at: Option<Instant>,
    next_ping: Option<Instant>,
    /// Blue-green: the time the proving ping was sent.
    proving: Option<Instant>,
    stop: Option<(Stop, Instant)>,
    pipes: [Option<Pipe>; 2],
}

impl Instance {
    fn chan(&self) -> Token {
        Token(self.base)
    }
}

struct Plugin {
    rec: Record,
    /// The newest accepted verified bundle (what a restart runs).
    bundle: Option<Rc<VerifiedBundle>>,
    /// Why the bundle on disk is not usable now (shown to clients without paths).
    problem: Option<String>,
    live: Option<Instance>,
    candidate: Option<Instance>,
    retiring: Vec<Instance>,
    budget: Budget,
    backoff_until: Option<Instant>,
    failed: bool,
    /// Why the last blue-green replacement failed (the old instance serves on),
    /// until a swap succeeds or another starts: shown as the plugin's problem.
    swap_failed: Option<String>,
    /// A launch found the bundle's path naming another directory and asked for
    /// a rescan; if the bundle is still stale after it, the launch goes ahead
    /// (and says why it fails) rather than rescanning every turn.
    stale_rescanned: bool,
    restarts: u64,
    last_exit: Option<String>,
    limiter: output::Limiter,
}

impl Plugin {
    /// A plugin known only by its record: nothing running, a fresh restart budget.
    fn new(rec: Record, problem: Option<String>, limiter: output::Limiter) -> Plugin {
        Plugin {
            rec,
            bundle: None,
            problem,
            live: None,
            candidate: None,
            retiring: Vec::new(),
            budget: Budget::default(),
            backoff_until: None,
            failed: false,
            stale_rescanned: false,
            swap_failed: None,
            restarts: 0,
            last_exit: None,
            limiter,
        }
    }

    fn status(&self) -> Status {
        Status::parse(&self.rec.status).unwrap_or(Status::Disabled)
    }

    fn runtime(&self) -> &'static str {
        if self.failed {
            "failed"
        } else if let Some(l) = &self.live {
            if l.stop.is_some() {
                "stopping"
            } else if l.ready_at.is_some() {
                "running"
            } else {
                "starting"
            }
        } else if self.backoff_until.is_some() {
            "backoff"
        } else {
            "stopped"
        }
    }

    /// The bundle a launch runs from now on (a fresh handle on its directory).
    fn set_bundle(&mut self, b: Rc<VerifiedBundle>) {
        self.bundle = Some(b);
        self.stale_rescanned = false;
    }

    fn instances(&self) -> impl Iterator<Item = (&Instance, Role)> {
        self.live
            .iter()
            .map(|i| (i, Role::Live))
            .chain(self.candidate.iter().map(|i| (i, Role::Candidate)))
            .chain(self.retiring.iter().map(|i| (i, Role::Retiring)))
    }

    fn instance_mut(&mut self, base: usize) -> Option<(&mut Instance, Role)> {
        if let Some(i) = self.live.as_mut().filter(|i| i.base == base) {
            return Some((i, Role::Live));
        }
        if let Some(i) = self.candidate.as_mut().filter(|i| i.base == base) {
            return Some((i, Role::Candidate));
        }
        self.retiring
            .iter_mut()
            .find(|i| i.base == base)
            .map(|i| (i, Role::Retiring))
    }
}

struct Client {
    stream: UnixStream,
    uid: u32,
    buf: Vec<u8>,
    /// The answer still to be written, once the request was served.
    out: Option<Vec<u8>>,
    /// By then it has sent its request and read its answer, or it is dropped.
    until: Instant,
}

/// Control clients served at once; more are answered "busy" and closed, so that
/// clients that never finish cannot take every descriptor warden has.
const MAX_CLIENTS: usize = 64;
/// How long a control client has to send its request and read the answer.
const CLIENT_DEADLINE: Duration = Duration::from_secs(10);

/// The running service.
pub struct Supervisor {
    cfg: Config,
    poll: Poll,
    broker: Broker<AuditRecorder>,
    db: rusqlite::Connection,
    trust: TrustStore,
    sandbox_cfg: sandbox::Config,
    plugins: BTreeMap<String, Plugin>,
    /// Dynamic token base -> plugin id (instances) or a control client.
    routes: HashMap<usize, String>,
    clients: HashMap<usize, Client>,
    next_token: usize,
    signals: OwnedFd,
    listener: UnixListener,
    notifier: notify::Notifier,
    next_watchdog: Option<Instant>,
    shutting_down: bool,
    /// A bundle's path names another directory than the one verified (an
    /// atomic deploy): the plugin directory is rescanned at the end of the turn.
    rescan_due: bool,
    /// Output pipes (their tokens) whose turn's share of reads ran out before
    /// they were empty: read again next turn, since an edge-triggered pipe is
    /// not reported again until the plugin writes more.
    pipes_due: Vec<usize>,
    /// Plugin-directory entries that are no plugin warden knows and did not
    /// verify, with why (as the log and audit say): shown by `ctl list` and
    /// `ctl status` until the next scan.
    rejected: BTreeMap<String, String>,
    started: Instant,
    /// When the loop last polled (and then read) the plugins' channels: what a
    /// plugin sent before it has been heard. An answer's deadline is judged
    /// against this, not the clock, so that a loop held up after its poll (a
    /// control request waiting for the database, say) does not count a reply
    /// that arrived meanwhile, still unread, as missing.
    polled_at: Instant,
    own_uid: u32,
    /// The state directory, held exclusively for as long as this warden serves.
    _state_lock: store::StateLock,
}

impl Supervisor {
    /// What `warden serve` checks before it creates or opens anything, and
    /// `warden serve --check` too: the trust directory loads, the plugin
    /// directory can be read. Returns the trust store.
    pub fn preflight(cfg: &Config) -> Result<TrustStore, SupervisorError> {
        let trust =
            TrustStore::load(&cfg.trust_dir).map_err(|source| SupervisorError::Trust { source })?;
        std::fs::read_dir(&cfg.plugin_dir).map_err(|source| SupervisorError::PluginDir {
            path: cfg.plugin_dir.display().to_string(),
            source,
        })?;
        Ok(trust)
    }

    /// Opens everything in order (state, audit log, trust store, control socket,
    /// signals); nothing is launched until [`Supervisor::run`].
    pub fn new(cfg: Config) -> Result<Supervisor, SupervisorError> {
        // Block the signals we take through signalfd before any thread exists
        // (audit, workers), so that every thread inherits the mask and none of
        // them gets the default action.
        let set = sys::proc::sigset(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]);
        sys::proc::sigprocmask(libc::SIG_BLOCK, &set).map_err(|source| SupervisorError::Loop {
            what: "sigprocmask",
            source,
        })?;
        let trust = Supervisor::preflight(&cfg)?;
        let state_lock = store::claim(&cfg.state_dir, store::Holder::Serve)?;
        let store = Store::open(&cfg.state_dir)?;
        let db = store.connect()?;
        // The loop's own writes (control requests, versions seen) wait at most
        // this long for another holder of the database's lock (a backup, an
        // operator's sqlite3): every plugin's host calls wait with the loop. A
        // request that cannot write is refused and changes nothing.
        db.busy_timeout(LOOP_DB_WAIT)
            .map_err(|source| crate::store::StoreError::Open {
                path: store.path().to_owned(),
                source,
            })?;
        if let Some(parent) = cfg.audit_log.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let mut audit = AuditConfig::new(&cfg.audit_log);
        audit.rotate_bytes = cfg.audit_rotate_bytes;
        audit.fsync = cfg.audit_fsync;
        let log = AuditLog::open(audit)?;
        let recorder = AuditRecorder::start(log);
        let lp = |what| move |source| SupervisorError::Loop { what, source };
        let poll = Poll::new().map_err(lp("epoll_create"))?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(lp("waker"))?);
        let broker = Broker::new(poll.registry(), &store, waker, recorder, 2)?;
        let _ = sys::proc::raise_nofile();
        sandbox::sweep_stale_cgroups();

        let listener = bind_control(&cfg)?;
        let mut listener = listener;
        poll.registry()
            .register(&mut listener, CONTROL, Interest::READABLE)
            .map_err(lp("register control socket"))?;

        let signals = sys::proc::signalfd(&set).map_err(lp("signalfd"))?;
        poll.registry()
            .register(
                &mut SourceFd(&signals.as_raw_fd()),
                SIGNALS,
                Interest::READABLE,
            )
            .map_err(lp("register signalfd"))?;

        let sandbox_cfg = sandbox::Config {
            uid_range: cfg.uid_range,
            host_uid: None,
            landlock_min_abi: cfg.landlock_min_abi,
            cgroup: cfg.cgroup,
        };
        let notifier = notify::Notifier::from_env();
        let mut sup = Supervisor {
            poll,
            broker,
            db,
            trust,
            sandbox_cfg,
            plugins: BTreeMap::new(),
            routes: HashMap::new(),
            clients: HashMap::new(),
            next_token: FIRST_DYNAMIC,
            signals,
            listener,
            next_watchdog: notifier.watchdog_every().map(|d| Instant::now() + d),
            notifier,
            shutting_down: false,
            rescan_due: false,
            pipes_due: Vec::new(),
            rejected: BTreeMap::new(),
            started: Instant::now(),
            polled_at: Instant::now(),
            own_uid: sys::socket::euid(),
            _state_lock: state_lock,
            cfg,
        };
        // Records from an earlier run (the bundle may or may not still be there).
        let now = Instant::now();
        for rec in store::plugins::all(&sup.db)? {
            let limiter = output::Limiter::new(&sup.cfg.output, now);
            sup.plugins.insert(
                rec.id.clone(),
                Plugin::new(rec, Some("bundle not scanned yet".into()), limiter),
            );
        }
        Ok(sup)
    }

    /// Scans, starts the active plugins, tells systemd it is ready, and serves
    /// until SIGTERM/SIGINT; then stops every plugin gracefully and flushes the
    /// audit log.
    pub fn run(mut self) -> Result<(), SupervisorError> {
        self.log(format_args!(
            "serving {} (plugins {}, control {})",
            self.cfg.source.display(),
            self.cfg.plugin_dir.display(),
            self.cfg.control_socket.display()
        ));
        // Logged by scan; serving goes on (the directory may come back).
        let _ = self.scan();
        self.notifier.send("READY=1");
        self.status_line();
        let mut events = Events::with_capacity(1024);
        let mut others: Vec<(Token, bool, bool)> = Vec::new();
        loop {
            let now = Instant::now();
            let due = self.next_due();
            let wait = if self.pipes_due.is_empty() {
                due.map(|d| d.saturating_duration_since(now))
                    .unwrap_or(IDLE_WAIT)
            } else {
                Duration::ZERO
            };
            others.clear();
            let pipes_due = std::mem::take(&mut self.pipes_due);
            self.broker
                .turn(&mut self.poll, &mut events, WAKER, Some(wait), |ev| {
                    others.push((
                        ev.token(),
                        ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                        ev.is_writable(),
                    ))
                })
                .map_err(|source| SupervisorError::Loop {
                    what: "epoll_wait",
                    source,
                })?;
            self.polled_at = Instant::now();
            for &(token, readable, writable) in &others {
                match token {
                    SIGNALS => self.signals(),
                    CONTROL => self.accept(),
                    // Writable: a control client's reply that did not fit the
                    // socket at once goes on.
                    Token(t) if readable || writable => self.dynamic(t),
                    _ => {}
                }
            }
            for t in pipes_due {
                self.dynamic(t);
            }
            let closed = self.broker.take_closed();
            let busy = !others.is_empty() || !closed.is_empty();
            for (token, why) in closed {
                self.channel_closed(token.0, &why);
            }
            // Per-plugin timers are walked only when one is due or something
            // happened, so pongs and host calls alone cost no O(plugins) walk.
            let now = Instant::now();
            if busy || due.is_some_and(|d| now >= d) {
                self.tick(now);
            }
            if std::mem::take(&mut self.rescan_due) {
                let _ = self.scan();
            }
            if let Some(e) = self.broker.recorder().failure() {
                self.kill_all();
                return Err(SupervisorError::AuditFailed(e));
            }
            if self.shutting_down && self.plugins.values().all(|p| p.instances().count() == 0) {
                break;
            }
        }
        let _ = std::fs::remove_file(&self.cfg.control_socket);
        self.audit(Event {
            kind: "service.stop",
            ..Event::default()
        });
        self.log(format_args!("all plugins stopped; audit log flushed"));
        let Supervisor { broker, .. } = self;
        drop_broker(broker)
    }

    fn log(&self, msg: std::fmt::Arguments<'_>) {
        crate::logsink::line(format!("warden: {msg}"));
    }

    fn audit(&mut self, e: Event) {
        self.broker.recorder().append(e);
    }

    fn plugin_event(&mut self, kind: &'static str, id: &str, reason: String, extra: Value) {
        let (version, sha256) = self
            .plugins
            .get(id)
            .map(|p| {
                (
                    Some(p.rec.version.clone()),
                    p.bundle.as_ref().map(|b| b.sha256().to_string()),
                )
            })
            .unwrap_or((None, None));
        self.audit(Event {
            kind,
            plugin: Some(id.to_owned()),
            version,
            sha256,
            reason: Some(reason),
            extra: match extra {
                Value::Object(m) => m,
                _ => Default::default(),
            },
            ..Event::default()
        });
    }

    fn status_line(&self) {
        let active = self
            .plugins
            .values()
            .filter(|p| p.runtime() == "running")
            .count();
        let failed = self.plugins.values().filter(|p| p.failed).count();
        self.notifier.send(&format!(
            "STATUS={active} plugins running, {failed} failed, {} known",
            self.plugins.len()
        ));
    }

    // ---- scanning -------------------------------------------------------------

    /// Rescans the plugin directory: verifies every bundle, records new plugins,
    /// refuses rollbacks, replaces changed bundles, and starts or stops plugins to
    /// match their lifecycle status. A plugin directory that cannot be read is
    /// returned as the problem (every known plugin's bundle then counts as
    /// missing: fail closed), for `ctl reload` to report.
    fn scan(&mut self) -> Result<(), String> {
        let dir = self.cfg.plugin_dir.clone();
        let mut seen: HashMap<String, Result<VerifiedBundle, String>> = HashMap::new();
        let mut unreadable = None;
        match std::fs::read_dir(&dir) {
            Err(e) => {
                self.log(format_args!("plugin directory {}: {e}", dir.display()));
                unreadable = Some(e);
            }
            Ok(entries) => {
                // A symlink to a directory counts (`plugins/x -> ../bundles/x-1.2.0`,
                // the atomic deploy), as for `warden run`: the bundle is verified
                // and launched through one handle opened on its target.
                let mut names: Vec<_> = entries
                    .flatten()
                    .filter(|e| {
                        e.file_type()
                            .is_ok_and(|t| t.is_dir() || (t.is_symlink() && e.path().is_dir()))
                    })
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                for name in names {
                    let path = dir.join(&name);
                    let r = match bundle::verify(&path, &self.trust) {
                        Ok(b) if b.manifest().id.as_str() != name => Err(format!(
                            "rejected: bad_bundle: the manifest says id {}, the directory is {name}",
                            b.manifest().id
                        )),
                        Ok(b) => Ok(b),
                        Err(e) => Err(format!("rejected: {}: {e}", e.code())),
                    };
                    if let Err(why) = &r {
                        self.log(format_args!("plugin={name} {why}"));
                        let shown = why.replace(&path.display().to_string(), "<bundle>");
                        self.audit(Event {
                            kind: "verify_failure",
                            plugin: Some(name.clone()),
                            reason: Some(shown),
                            ..Event::default()
                        });
                    }
                    seen.insert(name, r);
                }
            }
        }
        let missing = match &unreadable {
            Some(e) => format!("the plugin directory could not be read ({e})"),
            None => "bundle missing from the plugin directory".into(),
        };
        let known: Vec<String> = self.plugins.keys().cloned().collect();
        for id in known {
            if !seen.contains_key(&id) {
                self.set_problem(&id, missing.clone());
            }
        }
        self.rejected.clear();
        for (name, r) in seen {
            match r {
                Err(why) => {
                    let shown = why.replace(&dir.join(&name).display().to_string(), "<bundle>");
                    if self.plugins.contains_key(&name) {
                        self.set_problem(&name, shown);
                    } else {
                        self.rejected.insert(name, shown);
                    }
                }
                Ok(b) => self.accept_bundle(b),
            }
        }
        let ids: Vec<String> = self.plugins.keys().cloned().collect();
        for id in ids {
            self.reconcile(&id, Instant::now());
        }
        self.status_line();
        match unreadable {
            None => Ok(()),
            Some(e) => Err(format!(
                "plugin directory {}: {e}; every plugin's bundle counts as missing (stopped) until it can be read",
                dir.display()
            )),
        }
    }

    /// The bundle of `id` is not usable: stop it (fail closed) and remember why.
    fn set_problem(&mut self, id: &str, why: String) {
        let Some(p) = self.plugins.get_mut(id) else {
            return;
        };
        if p.problem.as_deref() != Some(why.as_str()) {
            p.problem = Some(why.clone());
            p.bundle = None;
            self.plugin_event("plugin.unusable", id, why, json!({}));
        }
    }

    fn accept_bundle(&mut self, b: VerifiedBundle) {
        let m = b.manifest();
        let id = m.id.as_str().to_owned();
        let version = m.version.clone();
        let now = Instant::now();
        if !self.plugins.contains_key(&id) {
            let rec = Record {
                id: id.clone(),
                status: Status::Verified.as_str().into(),
                version: version.to_string(),
                highest: version.to_string(),
                allow_downgrade: None,
                policy_status: policy::Status::PendingReview.as_str().into(),
                grants: Vec::new(),
                egress: Vec::new(),
                allow_addresses: Vec::new(),
            };
            if let Err(e) = store::plugins::put(&self.db, &rec) {
                self.log(format_args!("plugin={id} state database: {e}"));
                return;
            }
            self.plugins.insert(
                id.clone(),
                Plugin::new(rec, None, output::Limiter::new(&self.cfg.output, now)),
            );
            self.log(format_args!(
                "plugin={id} {version} verified (new; policy pending_review)"
            ));
            self.plugin_event(
                "plugin.status",
                &id,
                "new -> verified".into(),
                json!({"from": null, "to": "verified", "uid": self.own_uid, "actor": "scan"}),
            );
        }
        let p = self.plugins.get_mut(&id).expect("inserted above");
        let highest = semver::Version::parse(&p.rec.highest).unwrap_or(version.clone());
        let allowed_down = p.rec.allow_downgrade.as_deref() == Some(&version.to_string());
        // SemVer precedence: build metadata (`+...`) does not make a version newer.
        let order = version.cmp_precedence(&highest);
        // What serves now, put back while a newer version proves itself, is no
        // rollback: that newer version raised the highest seen, not what serves.
        let same = p.bundle.as_ref().is_some_and(|old| same_bundle(old, &b));
        if order.is_lt() && !allowed_down && !same {
            let why = format!(
                "rejected: rollback: version {version} is older than {highest}, the highest seen (allow it with `warden ctl allow-downgrade {id} {version}`)"
            );
            self.log(format_args!("plugin={id} {why}"));
            self.audit(Event {
                kind: "verify_failure",
                plugin: Some(id.clone()),
                version: Some(version.to_string()),
                reason: Some(why.clone()),
                ..Event::default()
            });
            let p = self.plugins.get_mut(&id).expect("present");
            if p.bundle.is_none() {
                p.problem = Some(why);
            }
            return;
        }
        let swapping_to_it = p
            .candidate
            .as_ref()
            .is_some_and(|c| same_bundle(&c.bundle, &b));
        p.problem = None;
        // The highest version seen never goes down: an allowed downgrade is an
        // exception for exactly that version, kept until a version at or above
        // the highest is accepted again (it then has no use).
        let upgraded = order.is_ge();
        // The serving version put back below the highest is remembered as
        // allowed, so that it is still accepted after a restart.
        let keep_serving = same && order.is_lt() && !allowed_down;
        let rec_changed = p.rec.version != version.to_string()
            || order.is_gt()
            || (upgraded && p.rec.allow_downgrade.is_some())
            || keep_serving;
        if rec_changed {
            p.rec.version = version.to_string();
            if order.is_gt() {
                p.rec.highest = version.to_string();
            }
            if upgraded {
                p.rec.allow_downgrade = None;
            }
            if keep_serving {
                p.rec.allow_downgrade = Some(version.to_string());
            }
            let rec = p.rec.clone();
            if let Err(e) = store::plugins::put(&self.db, &rec) {
                self.log(format_args!("plugin={id} state database: {e}"));
            }
            if keep_serving {
                // Audited like the operator's own allow-downgrade.
                self.log(format_args!(
                    "plugin={id} downgrade to {version} allowed: it is the version serving, put back in the plugin directory"
                ));
                self.plugin_event(
                    "plugin.allow_downgrade",
                    &id,
                    format!("to {version} (the serving version, put back)"),
                    json!({"version": version.to_string(), "actor": "scan"}),
                );
            }
        }
        if swapping_to_it {
            // Already proving itself: a rescan does not start the swap over.
            return;
        }
        if same {
            // The same release, perhaps in another directory now (an atomic
            // deploy of it again): later launches bind the one the entry names.
            self.plugins
                .get_mut(&id)
                .expect("present")
                .set_bundle(Rc::new(b));
            // What serves is on disk again: a swap to anything else is off.
            if let Some(c) = self.plugins[&id].candidate.as_ref() {
                let dropped = c.bundle.manifest().version.to_string();
                self.log(format_args!(
                    "plugin={id} replacement by {dropped} called off: {version} is in the plugin directory again"
                ));
                self.retire_candidate(&id, now);
            }
            return;
        }
        let b = Rc::new(b);
        let p = self.plugins.get_mut(&id).expect("present");
        let serving = p
            .live
            .as_ref()
            .is_some_and(|l| l.ready_at.is_some() && l.stop.is_none());
        if serving && p.bundle.is_some() {
            // Blue-green: the new one must prove itself before it takes over.
            self.start_candidate(&id, b, now);
        } else {
            p.set_bundle(b);
            // Still starting with the bundle before: it is restarted with this
            // one (nothing is served yet that a swap would keep going).
            if let Some(l) = p.live.as_mut().filter(|l| l.stop.is_none()) {
                let grace = self.cfg.shutdown_deadline;
                Self::begin_stop(&mut self.broker, l, Stop::Restart, now, grace);
            }
        }
    }

    /// Starts or stops `id` to match its status and bundle.
    fn reconcile(&mut self, id: &str, now: Instant) {
        let Some(p) = self.plugins.get_mut(id) else {
            return;
        };
        let want = !self.shutting_down
            && p.status() == Status::Active
            && p.bundle.is_some()
            && p.problem.is_none()
            && !p.failed;
        if want {
            if p.live.is_none() && p.backoff_until.is_none() {
                self.start_live(id, now);
            }
        } else {
            p.backoff_until = None;
            if p.candidate.is_some() {
                let mut c = p.candidate.take().expect("checked");
                Self::begin_stop(&mut self.broker, &mut c, Stop::Down, now, Duration::ZERO);
                p.retiring.push(c);
            }
            if let Some(l) = p.live.as_mut() {
                if l.stop.is_none() {
                    let why = if self.shutting_down {
                        Stop::Shutdown
                    } else {
                        Stop::Down
                    };
                    let grace = self.cfg.shutdown_deadline;
                    Self::begin_stop(&mut self.broker, l, why, now, grace);
                }
            }
        }
    }

    fn signals(&mut self) {
        let mut info = [0u8; 128];
        loop {
            match sys::proc::read(self.signals.as_raw_fd(), &mut info) {
                Ok(n) if n >= 4 => {
                    let signo = u32::from_ne_bytes(info[..4].try_into().expect("4 bytes"));
                    match signo as libc::c_int {
                        libc::SIGHUP => {
                            // Logged by reload itself.
                            let _ = self.reload("SIGHUP");
                        }
                        _ => self.shutdown(signo),
                    }
                }
                _ => return,
            }
        }
    }

    /// Reloads the trust directory and rescans the plugins. A trust directory
    /// that no longer loads keeps the keys loaded before, but its revocations
    /// still take effect (a revocation must never wait for a typo elsewhere to be
    /// fixed); that problem is returned, for `ctl reload` to report, and so is a
    /// plugin directory that could not be read.
    fn reload(&mut self, by: &str) -> Result<(), String> {
        self.notifier.send("RELOADING=1");
        self.log(format_args!("reload ({by}): rescanning"));
        let dir = self.cfg.trust_dir.clone();
        let problem = match TrustStore::load(&dir) {
            Ok(t) => {
                self.trust = t;
                None
            }
            Err(e) => {
                let revoked = match self.trust.revoke_from(&dir) {
                    Ok(n) => format!("applied its revocation list ({n} keys)"),
                    Err(r) => format!("could not read its revocation list either: {r}"),
                };
                let why = format!(
                    "trust directory {}: {e}; kept the keys loaded before and {revoked}",
                    dir.display()
                );
                self.log(format_args!("{why}"));
                Some(why)
            }
        };
        let unreadable = self.scan().err();
        self.notifier.send("READY=1");
        match (problem, unreadable) {
            (None, None) => Ok(()),
            (Some(a), Some(b)) => Err(format!("{a}; {b}")),
            (a, b) => Err(a.or(b).expect("one is some")),
        }
    }

    fn shutdown(&mut self, signo: u32) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.notifier.send("STOPPING=1");
        self.log(format_args!(
            "signal {signo}: stopping every plugin (deadline {} ms)",
            self.cfg.shutdown_deadline.as_millis()
        ));
        self.audit(Event {
            kind: "service.stopping",
            reason: Some(format!("signal {signo}")),
            ..Event::default()
        });
        let ids: Vec<String> = self.plugins.keys().cloned().collect();
        let now = Instant::now();
        for id in ids {
            let grace = self.cfg.shutdown_deadline;
            let p = self.plugins.get_mut(&id).expect("present");
            p.backoff_until = None;
            for inst in p
                .live
                .iter_mut()
                .chain(p.candidate.iter_mut())
                .chain(p.retiring.iter_mut())
            {
                Self::begin_stop(&mut self.broker, inst, Stop::Shutdown, now, grace);
            }
        }
    }

    fn kill_all(&mut self) {
        for p in self.plugins.values_mut() {
            for inst in p
                .live
                .iter_mut()
                .chain(p.candidate.iter_mut())
                .chain(p.retiring.iter_mut())
            {
                let _ = inst.sandbox.kill();
            }
        }
    }
}

/// Whether two verified bundles would run the same thing (artifact and manifest).
fn same_bundle(a: &VerifiedBundle, b: &VerifiedBundle) -> bool {
    a.sha256() == b.sha256()
        && serde_json::to_string(a.manifest()).ok() == serde_json::to_string(b.manifest()).ok()
}

/// How long the supervisor's loop waits for the state database's lock.
const LOOP_DB_WAIT: Duration = Duration::from_millis(500);

/// Stops the broker's worker pool (auditing the calls it still finishes), then
/// drains, syncs and closes the audit log; an audit failure, earlier or now, is
/// the error.
fn drop_broker(broker: Broker<AuditRecorder>) -> Result<(), SupervisorError> {
    broker
        .into_recorder()
        .close()
        .map_err(SupervisorError::AuditFailed)
}

/// Binds the control socket (mode 0660, group = the admin group when set). A
/// stale socket file is replaced; a live one means another warden serves it.
fn bind_control(cfg: &Config) -> Result<UnixListener, SupervisorError> {
    let path = &cfg.control_socket;
    let shown = path.display().to_string();
    let err = |what| {
        let shown = shown.clone();
        move |source| SupervisorError::Control {
            path: shown,
            what,
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err("create directory"))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if !t.is_socket() {
            let kind = if t.is_dir() {
                "directory"
            } else if t.is_symlink() {
                "symlink"
            } else if t.is_file() {
                "regular file"
            } else {
                "special file"
            };
            return Err(SupervisorError::ControlNotSocket { path: shown, kind });
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(SupervisorError::ControlBusy { path: shown });
        }
        std::fs::remove_file(path).map_err(err("remove stale socket"))?;
    }
    let l = UnixListener::bind(path).map_err(err("bind"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(err("chmod 0660"))?;
    if let Some(g) = cfg.admin_gid {
        std::os::unix::fs::chown(path, None, Some(g)).map_err(err("chown to the admin group"))?;
    }
    Ok(l)
}

/// warden's resident set size in KiB (from /proc/self/status).
pub fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
