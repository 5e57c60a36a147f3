//! Running plugin instances for `warden serve`: the context and plan a launch
//! gets, starting the live instance and a blue-green candidate, stopping, output
//! pipes, closed channels, exits and crashes (with restart backoff and budget).
//! The event loop, the timers that drive these (`timers`) and the control plane
//! (`admin`) live elsewhere in the supervisor.

use super::*;

/// Reads of an output pipe per readiness event (8 KiB each).
const PIPE_READS_PER_TURN: usize = 16;

impl Supervisor {
    pub(super) fn context(
        &self,
        p: &Plugin,
        b: &VerifiedBundle,
    ) -> (PluginContext, policy::Effective) {
        let m = b.manifest();
        let status = match p.rec.policy_status.as_str() {
            "approved" => policy::Status::Approved,
            "blocked" => policy::Status::Blocked,
            _ => policy::Status::PendingReview,
        };
        let grant: Vec<Capability> = if status == policy::Status::Approved {
            p.rec.grants.iter().filter_map(|g| g.parse().ok()).collect()
        } else {
            Vec::new()
        };
        let pol = Policy {
            status,
            grant: Some(grant),
            limits: self.cfg.limits,
            rate_limits: Default::default(),
            egress: None,
        };
        let eff = pol.apply(m);
        let ctx = PluginContext {
            id: m.id.as_str().to_owned(),
            version: m.version.to_string(),
            sha256: b.sha256().to_string(),
            declared: m.capabilities.clone(),
            granted: eff.capabilities.clone(),
            call_timeout: Duration::from_millis(eff.resources.call_timeout_ms.get()),
            rate: self.cfg.rate,
            rate_overrides: Vec::new(),
            kv_quota: Default::default(),
            blocked: status == policy::Status::Blocked,
            // Validated when the operator approved it; an empty list means none.
            egress: (!p.rec.egress.is_empty())
                .then(|| Egress::parse(&p.rec.egress, &p.rec.allow_addresses).ok())
                .flatten()
                .map(std::sync::Arc::new),
            files: None,
        };
        (ctx, eff)
    }

    pub(super) fn launch(
        &mut self,
        id: &str,
        b: Rc<VerifiedBundle>,
        now: Instant,
    ) -> Result<Instance, String> {
        let p = &self.plugins[id];
        let (mut ctx, eff) = self.context(p, &b);
        let m = b.manifest();
        let mut sandbox_cfg = self.sandbox_cfg.clone();
        if sys::socket::euid() == 0 {
            // A host uid of its own, kept across restarts: no other plugin's
            // processes count against its RLIMIT_NPROC.
            let range = sandbox_cfg.uid_range;
            let preferred = crate::sandbox::plan::host_id(id, range);
            let uid = store::plugins::host_uid(&self.db, id, range, preferred)
                .map_err(|e| format!("state database: giving a host uid: {e}"))?
                .ok_or_else(|| {
                    format!(
                        "no host uid left for it: every uid of uid_range {}-{} is another plugin's (widen uid_range)",
                        range.0, range.1
                    )
                })?;
            sandbox_cfg.host_uid = Some(uid);
        }
        let plan =
            Plan::new(&b, eff.resources, &m.args, &sandbox_cfg).map_err(|e| e.to_string())?;
        if eff
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::StaticRead | Capability::StaticWrite))
        {
            let ids = plan.ids();
            let owner = ids.privileged.then_some((ids.host_uid, ids.host_gid));
            let quota = Policy {
                limits: self.cfg.limits,
                ..Policy::default()
            }
            .data_quota_bytes();
            let root =
                crate::broker::files::FileRoot::prepare(&self.cfg.state_dir, id, quota, owner)
                    .map_err(|e| e.to_string())?;
            ctx.files = Some(std::sync::Arc::new(root));
        }
        let (out_r, out_w) = sys::socket::pipe(0).map_err(|e| format!("pipe: {e}"))?;
        let (err_r, err_w) = sys::socket::pipe(0).map_err(|e| format!("pipe: {e}"))?;
        for fd in [&out_r, &err_r] {
            sys::seqpacket::set_nonblocking(fd.as_fd(), true)
                .map_err(|e| format!("pipe O_NONBLOCK: {e}"))?;
        }
        let mut sb = Sandbox::spawn(
            &plan,
            &b,
            Stdio {
                stdout: Output::Fd(out_w),
                stderr: Output::Fd(err_w),
            },
        )
        .map_err(|e| e.to_string())?;
        let base = self.next_token;
        self.next_token += PER_INSTANCE;
        let sock = sb
            .take_socket()
            .ok_or_else(|| "sandbox has no broker socket".to_owned())?;
        let reg = self.poll.registry();
        let r = reg
            .register(
                &mut SourceFd(&sb.pidfd().as_raw_fd()),
                Token(base + 1),
                Interest::READABLE,
            )
            .and_then(|()| {
                reg.register(
                    &mut SourceFd(&out_r.as_raw_fd()),
                    Token(base + 2),
                    Interest::READABLE,
                )
            })
            .and_then(|()| {
                reg.register(
                    &mut SourceFd(&err_r.as_raw_fd()),
                    Token(base + 3),
                    Interest::READABLE,
                )
            });
        if let Err(e) = r {
            let _ = sb.kill();
            return Err(format!("registering the sandbox with the loop: {e}"));
        }
        self.broker
            .attach(Token(base), sock, ctx)
            .map_err(|e| e.to_string())?;
        self.routes.insert(base, id.to_owned());
        let pid = sb.pid();
        self.plugin_event(
            "launch",
            id,
            format!("pid {pid}"),
            json!({"pid": pid, "landlock_abi": plan.landlock_abi(), "cgroup": plan.cgroup_audit()}),
        );
        Ok(Instance {
            base,
            sandbox: sb,
            bundle: b,
            started: now,
            ready_at: None,
            next_ping: None,
            proving: None,
            stop: None,
            pipes: [
                Some(Pipe {
                    fd: out_r,
                    buf: Default::default(),
                }),
                Some(Pipe {
                    fd: err_r,
                    buf: Default::default(),
                }),
            ],
        })
    }

    pub(super) fn start_live(&mut self, id: &str, now: Instant) {
        let Some(b) = self.plugins.get(id).and_then(|p| p.bundle.clone()) else {
            return;
        };
        let p = self.plugins.get_mut(id).expect("present");
        if b.still_at_its_path() {
            p.stale_rescanned = false;
        } else if !p.stale_rescanned {
            // Launching would fail (the sandbox binds only the directory
            // verified) and count as a crash; what the entry names now is
            // verified first, once. Reconciling after the rescan starts it.
            p.stale_rescanned = true;
            self.log(format_args!(
                "plugin={id} {} no longer names the directory verified (a new deploy?); rescanning",
                b.dir().display()
            ));
            self.rescan_due = true;
            return;
        }
        match self.launch(id, b, now) {
            Ok(inst) => {
                let version = self.plugins[id].rec.version.clone();
                self.log(format_args!(
                    "plugin={id} {version} started (pid {})",
                    inst.sandbox.pid()
                ));
                let p = self.plugins.get_mut(id).expect("present");
                p.live = Some(inst);
                p.backoff_until = None;
                // What runs now is the plugin's bundle: no swap is pending.
                p.swap_failed = None;
            }
            Err(why) => {
                self.log(format_args!("plugin={id} launch failed: {why}"));
                self.plugin_event("launch_failure", id, why.clone(), json!({}));
                self.crashed(id, now, Duration::ZERO, format!("launch failed: {why}"));
            }
        }
    }

    pub(super) fn start_candidate(&mut self, id: &str, b: Rc<VerifiedBundle>, now: Instant) {
        let version = b.manifest().version.to_string();
        self.retire_candidate(id, now);
        if !b.still_at_its_path() {
            // It would fail to bind its directory: what the path names now is
            // verified first.
            self.rescan_due = true;
            let why =
                "its bundle directory is no longer the one verified (a new deploy?); rescanning";
            return self.replacement_failed(id, &version, why);
        }
        match self.launch(id, b, now) {
            Ok(inst) => {
                self.log(format_args!(
                    "plugin={id} replacing: {version} started next to the serving instance (pid {})",
                    inst.sandbox.pid()
                ));
                let p = self.plugins.get_mut(id).expect("present");
                p.candidate = Some(inst);
                p.swap_failed = None;
            }
            Err(why) => self.replacement_failed(id, &version, &why),
        }
    }

    /// Stops the candidate of `id`, if there is one, at once: its swap is off.
    pub(super) fn retire_candidate(&mut self, id: &str, now: Instant) {
        if let Some(mut old) = self.plugins.get_mut(id).and_then(|p| p.candidate.take()) {
            Self::begin_stop(
                &mut self.broker,
                &mut old,
                Stop::Retired,
                now,
                Duration::ZERO,
            );
            self.plugins
                .get_mut(id)
                .expect("present")
                .retiring
                .push(old);
        }
    }

    pub(super) fn replacement_failed(&mut self, id: &str, version: &str, why: &str) {
        if let Some(p) = self.plugins.get_mut(id) {
            p.swap_failed = Some(format!(
                "replacement by {version} failed: {why}; the old instance serves on"
            ));
        }
        self.log(format_args!(
            "plugin={id} replacement by {version} failed: {why}; the old instance keeps serving"
        ));
        self.plugin_event(
            "plugin.replace_failed",
            id,
            format!("{version}: {why}"),
            json!({"new_version": version}),
        );
    }

    /// Graceful stop: `shutdown` with a deadline (SIGKILL when it passes); an
    /// instance that never said hello is killed at once.
    pub(super) fn begin_stop(
        broker: &mut Broker<AuditRecorder>,
        inst: &mut Instance,
        why: Stop,
        now: Instant,
        grace: Duration,
    ) {
        if inst.stop.is_some() {
            return;
        }
        if grace.is_zero() || !broker.is_ready(inst.chan()) {
            let _ = inst.sandbox.kill();
            inst.stop = Some((why, now));
        } else {
            broker.shutdown(inst.chan(), grace);
            inst.stop = Some((why, now + grace));
        }
    }

    // ---- events ---------------------------------------------------------------

    pub(super) fn dynamic(&mut self, t: usize) {
        if let Some(c) = self.clients.get(&t) {
            return if c.out.is_some() {
                self.client_writable(t)
            } else {
                self.client_readable(t)
            };
        }
        let base = t - (t - FIRST_DYNAMIC) % PER_INSTANCE;
        let kind = match t - base {
            1 => Kind::Pid,
            2 => Kind::Out(0),
            3 => Kind::Out(1),
            _ => Kind::Client,
        };
        let Some(id) = self.routes.get(&base).cloned() else {
            return;
        };
        match kind {
            Kind::Pid => self.exited(&id, base),
            Kind::Out(n) => self.drain_pipe(&id, base, n, PIPE_READS_PER_TURN),
            Kind::Client => {}
        }
    }

    /// Forwards what waits in output pipe `n` of the instance at `base`: at
    /// most `reads` reads of 8 KiB (a turn's share, so that one plugin cannot
    /// hog the loop; a pipe not emptied is read again next turn), or
    /// everything (`usize::MAX`) once it has exited, when no more wake-ups come.
    pub(super) fn drain_pipe(&mut self, id: &str, base: usize, n: usize, reads: usize) {
        let max = self.cfg.output.max_line_bytes;
        let Some(p) = self.plugins.get_mut(id) else {
            return;
        };
        let limiter = &mut p.limiter;
        let inst = if let Some(i) = p.live.as_mut().filter(|i| i.base == base) {
            i
        } else if let Some(i) = p.candidate.as_mut().filter(|i| i.base == base) {
            i
        } else if let Some(i) = p.retiring.iter_mut().find(|i| i.base == base) {
            i
        } else {
            return;
        };
        let stream = if n == 0 { "stdout" } else { "stderr" };
        let mut buf = [0u8; 8192];
        let now = Instant::now();
        for _ in 0..reads {
            let Some(pipe) = inst.pipes[n].as_mut() else {
                return;
            };
            match sys::proc::read(pipe.fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    pipe.buf
                        .finish(|l, t| output::forward(limiter, id, stream, l, t, now));
                    let _ = self
                        .poll
                        .registry()
                        .deregister(&mut SourceFd(&pipe.fd.as_raw_fd()));
                    inst.pipes[n] = None;
                    return;
                }
                Ok(k) => pipe.buf.feed(&buf[..k], max, |l, t| {
                    output::forward(limiter, id, stream, l, t, now)
                }),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    let _ = self
                        .poll
                        .registry()
                        .deregister(&mut SourceFd(&pipe.fd.as_raw_fd()));
                    inst.pipes[n] = None;
                    return;
                }
            }
        }
        // The share ran out before the pipe did: mio's pipes are edge-triggered,
        // so no wake-up comes for what is left until the plugin writes again.
        self.pipes_due.push(base + 2 + n);
    }

    pub(super) fn channel_closed(&mut self, base: usize, why: &str) {
        let Some(id) = self.routes.get(&base).cloned() else {
            return;
        };
        let now = Instant::now();
        let Some(p) = self.plugins.get_mut(&id) else {
            return;
        };
        if let Some((inst, _)) = p.instance_mut(base) {
            if inst.stop.is_none() {
                // A plugin that cannot be served is stopped and its exit counts as
                // a crash. It usually is exiting already: give it a moment so its
                // own exit status is what gets recorded, then SIGKILL.
                inst.stop = Some((Stop::Unhealthy, now + CLOSE_GRACE));
                self.log(format_args!(
                    "plugin={id} channel closed ({why}); killing it unless it exits within {} ms",
                    CLOSE_GRACE.as_millis()
                ));
            }
        }
    }

    /// The sandbox's pidfd became readable: it exited.
    pub(super) fn exited(&mut self, id: &str, base: usize) {
        let now = Instant::now();
        for n in 0..2 {
            self.drain_pipe(id, base, n, usize::MAX);
        }
        let Some(p) = self.plugins.get_mut(id) else {
            return;
        };
        let (mut inst, role) = if p.live.as_ref().is_some_and(|i| i.base == base) {
            (p.live.take().expect("checked"), Role::Live)
        } else if p.candidate.as_ref().is_some_and(|i| i.base == base) {
            (p.candidate.take().expect("checked"), Role::Candidate)
        } else if let Some(k) = p.retiring.iter().position(|i| i.base == base) {
            (p.retiring.remove(k), Role::Retiring)
        } else {
            return;
        };
        let status = match inst.sandbox.wait() {
            Ok(s) => match s {
                sandbox::ExitStatus::Code(c) => format!("exit code {c}"),
                sandbox::ExitStatus::Signal(s) => format!("killed by signal {s}"),
            },
            Err(e) => e.to_string(),
        };
        let reg = self.poll.registry();
        let _ = reg.deregister(&mut SourceFd(&inst.sandbox.pidfd().as_raw_fd()));
        for pipe in inst.pipes.iter_mut().flatten() {
            let _ = reg.deregister(&mut SourceFd(&pipe.fd.as_raw_fd()));
        }
        let counters = self.broker.detach(inst.chan());
        self.routes.remove(&base);
        if inst.sandbox.left_stale_cgroups() {
            sandbox::sweep_stale_cgroups();
        }
        let uptime = now.saturating_duration_since(inst.started);
        let why = inst.stop.map(|s| s.0);
        self.plugin_event(
            "exit",
            id,
            status.clone(),
            json!({"pid": inst.sandbox.pid(), "uptime_ms": uptime.as_millis() as u64,
                   "calls": counters.map_or(0, |c| c.calls)}),
        );
        let version = inst.bundle.manifest().version.to_string();
        match role {
            Role::Retiring => {
                self.log(format_args!("plugin={id} {version} stopped ({status})"));
            }
            Role::Candidate => {
                self.replacement_failed(id, &version, &format!("it exited ({status})"));
            }
            Role::Live => {
                let p = self.plugins.get_mut(id).expect("present");
                p.last_exit = Some(status.clone());
                // An instance that ends on its own once it is no longer wanted
                // (warden stopping, the plugin disabled, say while it was in its
                // channel-closed grace) has stopped: no crash, no restart.
                let wanted = !self.shutting_down && p.status() == Status::Active;
                let why = match why {
                    Some(Stop::Unhealthy) | None if !wanted => Some(Stop::Down),
                    other => other,
                };
                // Stopped because it was to go down: what it should do now may
                // have changed meanwhile (activated again while it was stopping).
                let recheck = matches!(why, Some(Stop::Down));
                match why {
                    Some(Stop::Down) | Some(Stop::Shutdown) | Some(Stop::Retired) => {
                        self.log(format_args!("plugin={id} {version} stopped ({status})"));
                    }
                    Some(Stop::Restart) => {
                        self.log(format_args!(
                            "plugin={id} {version} stopped for restart ({status})"
                        ));
                        self.reconcile(id, now);
                    }
                    Some(Stop::Unhealthy) | None => {
                        self.log(format_args!(
                            "plugin={id} {version} exited unexpectedly ({status})"
                        ));
                        self.crashed(id, now, uptime, status);
                    }
                }
                // A candidate waiting for a live instance that is gone takes over,
                // unless that crash failed the plugin: a failed plugin stays down
                // until `warden ctl restart`, and its swap is off.
                let p = self.plugins.get_mut(id).expect("present");
                if p.live.is_none() && p.failed {
                    self.retire_candidate(id, now);
                } else if p.live.is_none() {
                    if let Some(c) = p.candidate.take() {
                        p.set_bundle(Rc::clone(&c.bundle));
                        p.live = Some(c);
                        p.backoff_until = None;
                    }
                }
                if recheck {
                    self.reconcile(id, now);
                }
            }
        }
        self.status_line();
    }

    /// An unplanned end of the live instance: back off and restart, or fail.
    pub(super) fn crashed(&mut self, id: &str, now: Instant, uptime: Duration, status: String) {
        let restart = self.cfg.restart;
        let Some(p) = self.plugins.get_mut(id) else {
            return;
        };
        match p.budget.on_exit(now, uptime, &restart) {
            Some(delay) => {
                p.backoff_until = Some(now + delay);
                p.restarts += 1;
                let n = p.budget.count(now, restart.window);
                self.log(format_args!(
                    "plugin={id} restarting in {} ms (restart {n} of {} within {} s)",
                    delay.as_millis(),
                    restart.max_restarts,
                    restart.window.as_secs()
                ));
                self.plugin_event(
                    "restart",
                    id,
                    status,
                    json!({"delay_ms": delay.as_millis() as u64, "in_window": n}),
                );
            }
            None => {
                p.failed = true;
                p.backoff_until = None;
                self.log(format_args!(
                    "plugin={id} failed: more than {} restarts within {} s; it stays down until `warden ctl restart {id}`",
                    restart.max_restarts,
                    restart.window.as_secs()
                ));
                self.plugin_event(
                    "plugin.failed",
                    id,
                    format!("restart budget spent after {status}"),
                    json!({}),
                );
            }
        }
    }
}
