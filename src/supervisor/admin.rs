//! The control plane of `warden serve`: accepting control-socket clients (checked
//! with SO_PEERCRED and SO_PEERGROUPS), reading one request each and answering
//! without blocking, and the operator's actions: lifecycle transitions, restarts,
//! policy, downgrades, and the views `status`, `policy show` and `stats`. The event
//! loop, launching and supervision stay in the parent module.

use super::*;

impl Supervisor {
    // ---- control socket -------------------------------------------------------

    pub(super) fn accept(&mut self) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.log(format_args!("control socket accept: {e}"));
                    return;
                }
            };
            let (pid, uid, gid) = match sys::socket::peer_cred(stream.as_fd()) {
                Ok(c) => c,
                Err(e) => {
                    self.log(format_args!("control socket SO_PEERCRED: {e}"));
                    continue;
                }
            };
            let groups = match sys::socket::peer_groups(stream.as_fd()) {
                Ok(g) => g,
                Err(e) => {
                    self.log(format_args!("control socket SO_PEERGROUPS: {e}"));
                    continue;
                }
            };
            if !control::authorized(uid, gid, &groups, self.own_uid, self.cfg.admin_gid) {
                self.log(format_args!(
                    "control socket: refused uid {uid} (pid {pid}): not root or in the admin group"
                ));
                self.audit(Event {
                    kind: "admin.refused",
                    reason: Some(format!("uid {uid} is not root or in the admin group")),
                    extra: json!({"uid": uid, "gid": gid, "pid": pid})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                    ..Event::default()
                });
                let _ = stream.write(&control::answer(&Err(format!(
                    "permission denied: uid {uid} is not root or a member of the admin group"
                ))));
                continue;
            }
            if self.clients.len() >= MAX_CLIENTS {
                self.log(format_args!(
                    "control socket: refused uid {uid} (pid {pid}): {MAX_CLIENTS} clients are being served"
                ));
                let _ = stream.write(&control::answer(&Err(format!(
                    "busy: {MAX_CLIENTS} control clients are being served; try again"
                ))));
                continue;
            }
            let t = self.next_token;
            self.next_token += PER_INSTANCE;
            if self
                .poll
                .registry()
                .register(&mut stream, Token(t), Interest::READABLE)
                .is_ok()
            {
                self.clients.insert(
                    t,
                    Client {
                        stream,
                        uid,
                        buf: Vec::new(),
                        out: None,
                        until: Instant::now() + CLIENT_DEADLINE,
                    },
                );
            }
        }
    }

    /// Drops the control clients past their deadline (a request never
    /// finished, or an answer never read).
    pub(super) fn expire_clients(&mut self, now: Instant) {
        let late: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| now >= c.until)
            .map(|(&t, _)| t)
            .collect();
        for t in late {
            if let Some(mut c) = self.clients.remove(&t) {
                let _ = self.poll.registry().deregister(&mut c.stream);
                self.log(format_args!(
                    "control socket: dropped uid {}'s connection: no complete request and answer within {} s",
                    c.uid,
                    CLIENT_DEADLINE.as_secs()
                ));
            }
        }
    }

    pub(super) fn client_readable(&mut self, t: usize) {
        let Some(c) = self.clients.get_mut(&t) else {
            return;
        };
        let mut buf = [0u8; 4096];
        let mut eof = false;
        let mut too_large = false;
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    c.buf.extend_from_slice(&buf[..n]);
                    if c.buf.len() > control::MAX_REQUEST {
                        too_large = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        let end = c.buf.iter().position(|&b| b == b'\n');
        if end.is_none() && !too_large {
            if eof {
                let mut c = self.clients.remove(&t).expect("present");
                let _ = self.poll.registry().deregister(&mut c.stream);
            }
            return;
        }
        let mut c = self.clients.remove(&t).expect("present");
        let _ = self.poll.registry().deregister(&mut c.stream);
        let result = match end {
            Some(end) if end <= control::MAX_REQUEST => {
                match serde_json::from_slice::<Request>(&c.buf[..end]) {
                    Ok(req) => self.handle(req, c.uid),
                    Err(e) => Err(format!("bad request: {e}")),
                }
            }
            // Told why, not just closed.
            _ => Err(format!(
                "bad request: larger than {} bytes",
                control::MAX_REQUEST
            )),
        };
        // The answer is written without blocking; what does not fit waits for the
        // socket to become writable, so a client that never reads cannot stall
        // the loop (its token is never reused, so it can keep it).
        c.out = Some(control::answer(&result));
        if self
            .poll
            .registry()
            .register(&mut c.stream, Token(t), Interest::WRITABLE)
            .is_ok()
        {
            self.clients.insert(t, c);
            self.client_writable(t);
        }
    }

    /// Writes as much of a client's answer as the socket takes; the client is
    /// dropped (closing its connection) once it is all written or on error.
    pub(super) fn client_writable(&mut self, t: usize) {
        let Some(c) = self.clients.get_mut(&t) else {
            return;
        };
        let out = c
            .out
            .as_mut()
            .expect("only clients with an answer are writable");
        loop {
            match c.stream.write(out) {
                Ok(0) => break,
                Ok(n) => {
                    out.drain(..n);
                    if out.is_empty() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        let mut c = self.clients.remove(&t).expect("present");
        let _ = self.poll.registry().deregister(&mut c.stream);
    }

    /// Serves one control request from `uid`.
    fn handle(&mut self, req: Request, uid: u32) -> Result<Value, String> {
        let name = req.name();
        let target = match &req {
            Request::Status { id }
            | Request::Install { id }
            | Request::Activate { id }
            | Request::Disable { id }
            | Request::Restart { id }
            | Request::PolicyShow { id }
            | Request::PolicyApprove { id, .. }
            | Request::PolicyBlock { id }
            | Request::AllowDowngrade { id, .. } => Some(id.clone()),
            Request::Stats { id } => id.clone(),
            Request::List | Request::Reload => None,
        };
        if let Some(id) = &target {
            if !self.plugins.contains_key(id) {
                return Err(match self.rejected.get(id) {
                    Some(why) => format!("no plugin {id:?}: its bundle {why}"),
                    None => format!("no plugin {id:?}"),
                });
            }
        }
        let mutates = req.mutates();
        let r = match req {
            Request::List => Ok(Value::Array(
                self.plugins
                    .keys()
                    .map(|id| self.info(id))
                    .chain(self.rejected.iter().map(|(id, why)| {
                        json!({"id": id, "version": null, "status": "rejected",
                               "runtime": "-", "problem": why})
                    }))
                    .collect(),
            )),
            Request::Status { id } => Ok(self.info(&id)),
            Request::Install { id } => self.lifecycle(&id, Action::Install, uid),
            Request::Activate { id } => self.lifecycle(&id, Action::Activate, uid),
            Request::Disable { id } => self.lifecycle(&id, Action::Disable, uid),
            Request::Restart { id } => self.restart(&id, uid),
            Request::PolicyShow { id } => Ok(self.policy_info(&id)),
            Request::PolicyApprove {
                id,
                grant,
                egress,
                allow_addresses,
            } => self.approve(&id, grant, egress, allow_addresses, uid),
            Request::PolicyBlock { id } => self.block(&id, uid),
            Request::AllowDowngrade { id, version } => self.allow_downgrade(&id, &version, uid),
            Request::Stats { id } => Ok(self.stats(id.as_deref())),
            Request::Reload => self
                .reload(&format!("ctl by uid {uid}"))
                .map(|()| json!({"plugins": self.plugins.len(), "rejected": self.rejected})),
        };
        if mutates {
            self.audit(Event {
                kind: "admin",
                plugin: target,
                op: Some(name.to_owned()),
                reason: Some(match &r {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => e.clone(),
                }),
                extra: json!({"uid": uid}).as_object().cloned().unwrap_or_default(),
                ..Event::default()
            });
        }
        r
    }

    /// Applies `change` to a copy of the plugin's record and writes that; the
    /// record in effect changes only once the write succeeded, so a refused
    /// request changes nothing, now or at the next write.
    fn persist_with(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut store::plugins::Record),
    ) -> Result<(), String> {
        let mut rec = self.plugins[id].rec.clone();
        change(&mut rec);
        store::plugins::put(&self.db, &rec).map_err(|e| format!("state database: {e}"))?;
        self.plugins.get_mut(id).expect("present").rec = rec;
        Ok(())
    }

    fn lifecycle(&mut self, id: &str, action: Action, uid: u32) -> Result<Value, String> {
        let p = &self.plugins[id];
        let from = p.status();
        let problem = match (&p.problem, &p.bundle) {
            (Some(why), _) => Some(why.clone()),
            (None, None) => Some("no verified bundle".to_owned()),
            (None, Some(_)) => None,
        };
        let to = lifecycle::transition(id, from, action, problem.as_deref())?;
        self.persist_with(id, |rec| rec.status = to.as_str().into())?;
        if to == Status::Active {
            let p = self.plugins.get_mut(id).expect("present");
            p.failed = false;
            p.budget.reset();
        }
        self.log(format_args!(
            "plugin={id} {} -> {} (uid {uid})",
            from.as_str(),
            to.as_str()
        ));
        self.plugin_event(
            "plugin.status",
            id,
            format!("{} -> {}", from.as_str(), to.as_str()),
            json!({"from": from.as_str(), "to": to.as_str(), "uid": uid}),
        );
        self.reconcile(id, Instant::now());
        self.status_line();
        Ok(self.info(id))
    }

    fn restart(&mut self, id: &str, uid: u32) -> Result<Value, String> {
        let now = Instant::now();
        let p = self.plugins.get_mut(id).expect("present");
        if p.status() != Status::Active {
            return Err(format!(
                "cannot restart plugin {id}: it is {}, not active",
                p.rec.status
            ));
        }
        p.failed = false;
        p.budget.reset();
        p.backoff_until = None;
        if let Some(l) = p.live.as_mut() {
            let grace = self.cfg.shutdown_deadline;
            Self::begin_stop(&mut self.broker, l, Stop::Restart, now, grace);
        }
        self.log(format_args!("plugin={id} restart requested (uid {uid})"));
        self.plugin_event(
            "plugin.restart",
            id,
            format!("by uid {uid}"),
            json!({"uid": uid}),
        );
        self.reconcile(id, now);
        Ok(self.info(id))
    }

    fn approve(
        &mut self,
        id: &str,
        grant: Option<Vec<String>>,
        egress: Option<Vec<String>>,
        allow_addresses: Option<Vec<String>>,
        uid: u32,
    ) -> Result<Value, String> {
        let p = &self.plugins[id];
        // An egress change replaces both lists; either flag alone keeps the other.
        let egress = match (egress, allow_addresses) {
            (None, None) => None,
            (e, a) => {
                let e = e.unwrap_or_else(|| p.rec.egress.clone());
                let a = a.unwrap_or_else(|| p.rec.allow_addresses.clone());
                Egress::parse(&e, &a)
                    .map_err(|err| format!("cannot approve plugin {id}: egress: {err}"))?;
                Some((e, a))
            }
        };
        let declared: Vec<Capability> = p
            .bundle
            .as_ref()
            .map(|b| b.manifest().capabilities.clone())
            .unwrap_or_default();
        // A list net.dial could never use is refused, as a grant of a capability
        // the manifest does not declare is (clearing one, `--egress ''`, is not).
        if let (Some((e, _)), Some(_)) = (&egress, &p.bundle) {
            if !e.is_empty() && !declared.contains(&Capability::HttpEgress) {
                return Err(format!(
                    "cannot approve plugin {id}: --egress: its manifest does not declare {} (the capability of net.dial), so the list would never be used",
                    Capability::HttpEgress
                ));
            }
        }
        let grants = match grant {
            // Only the egress lists change: an approved plugin keeps its grants
            // (approving again would otherwise widen a narrowed grant).
            None if egress.is_some() && p.rec.policy_status == "approved" => p.rec.grants.clone(),
            None => {
                if p.bundle.is_none() {
                    return Err(format!(
                        "cannot approve plugin {id} without --grant: its bundle is not present and verified"
                    ));
                }
                declared.iter().map(|c| c.as_str().to_owned()).collect()
            }
            Some(list) => {
                let mut out = Vec::new();
                for g in list {
                    let cap: Capability = g.parse().map_err(|_| {
                        format!("cannot approve plugin {id}: unknown capability {g:?}")
                    })?;
                    if p.bundle.is_some() && !declared.contains(&cap) {
                        return Err(format!(
                            "cannot approve plugin {id}: its manifest does not declare {cap}"
                        ));
                    }
                    out.push(cap.as_str().to_owned());
                }
                out
            }
        };
        self.set_policy(id, policy::Status::Approved, Some(grants), egress, uid)
    }

    fn block(&mut self, id: &str, uid: u32) -> Result<Value, String> {
        self.set_policy(id, policy::Status::Blocked, None, None, uid)
    }

    /// Egress, when given, replaces both lists: (allow-list, allowed addresses).
    fn set_policy(
        &mut self,
        id: &str,
        status: policy::Status,
        grants: Option<Vec<String>>,
        egress: Option<(Vec<String>, Vec<String>)>,
        uid: u32,
    ) -> Result<Value, String> {
        let before = self.plugins[id].rec.policy_status.clone();
        self.persist_with(id, |rec| {
            rec.policy_status = status.as_str().into();
            if let Some(g) = grants {
                rec.grants = g;
            }
            if let Some((e, a)) = egress {
                rec.egress = e;
                rec.allow_addresses = a;
            }
        })?;
        let blocked = status == policy::Status::Blocked;
        // The new policy holds at once for every instance, each judged against
        // its own bundle's manifest: a narrowing (or a block) from its next call
        // on, whatever becomes of a replacement, and an instance not yet
        // welcomed is welcomed with it.
        let p = &self.plugins[id];
        let updates: Vec<(Token, PluginContext, bool)> = p
            .instances()
            .map(|(i, _)| {
                // Not stopping: a stopping instance is not replaced. Whether it
                // was welcomed is the broker's to say (it welcomes in its own
                // turn, before `ready_at` is set here).
                let going_on = i.stop.is_none();
                (i.chan(), self.context(p, &i.bundle).0, going_on)
            })
            .collect();
        let mut told_otherwise = Vec::new();
        for (chan, ctx, going_on) in updates {
            let told_other = self
                .broker
                .set_policy(chan, ctx.granted, ctx.egress, ctx.blocked);
            if told_other && going_on {
                told_otherwise.push(chan);
            }
        }
        let grants = self.plugins[id].rec.grants.clone();
        self.log(format_args!(
            "plugin={id} policy {} -> {} grants [{}] (uid {uid})",
            before,
            status.as_str(),
            grants.join(",")
        ));
        self.plugin_event(
            "plugin.policy",
            id,
            format!("{} -> {}", before, status.as_str()),
            json!({"uid": uid, "grants": grants}),
        );
        if !blocked {
            // A welcomed instance was told other capabilities: it is replaced
            // blue-green, with the plugin's bundle (as the plugin directory names
            // it now), so that a welcome says the new ones. The candidate of a
            // swap, if it was told, is restarted from its own (newer) bundle; the
            // swap goes on.
            let p = &self.plugins[id];
            let told = |i: &Option<Instance>| {
                i.as_ref()
                    .filter(|i| told_otherwise.contains(&i.chan()))
                    .map(|i| Rc::clone(&i.bundle))
            };
            let again = match &p.candidate {
                Some(_) => told(&p.candidate),
                None => told(&p.live).and(p.bundle.clone()),
            };
            if let Some(b) = again {
                self.start_candidate(id, b, Instant::now());
            }
        }
        Ok(self.policy_info(id))
    }

    fn allow_downgrade(&mut self, id: &str, version: &str, uid: u32) -> Result<Value, String> {
        let v = semver::Version::parse(version)
            .map_err(|e| format!("cannot allow downgrade of {id}: version {version:?}: {e}"))?;
        let highest = semver::Version::parse(&self.plugins[id].rec.highest).ok();
        if let Some(h) = highest.filter(|h| v.cmp_precedence(h).is_ge()) {
            return Err(format!(
                "cannot allow downgrade of {id} to {v}: it is not older than {h}, the highest version seen (nothing to allow)"
            ));
        }
        self.persist_with(id, |rec| rec.allow_downgrade = Some(v.to_string()))?;
        self.log(format_args!(
            "plugin={id} downgrade to {v} allowed (uid {uid})"
        ));
        self.plugin_event(
            "plugin.allow_downgrade",
            id,
            format!("to {v}"),
            json!({"uid": uid, "version": v.to_string()}),
        );
        // A trust directory problem is logged by reload; the downgrade is allowed.
        let _ = self.reload(&format!("allow-downgrade by uid {uid}"));
        Ok(self.info(id))
    }

    fn info(&self, id: &str) -> Value {
        let p = &self.plugins[id];
        let live = p.live.as_ref();
        let now = Instant::now();
        let health = live.and_then(|l| self.broker.health(l.chan()));
        json!({
            "id": id,
            "version": p.rec.version,
            "serving_version": live.map(|l| l.bundle.manifest().version.to_string()),
            "status": p.rec.status,
            "runtime": p.runtime(),
            "policy": p.rec.policy_status,
            "grants": p.rec.grants,
            "pid": live.map(|l| l.sandbox.pid()),
            "uptime_s": live.map(|l| now.saturating_duration_since(l.started).as_secs()),
            "restarts": p.restarts,
            "restarts_in_window": p.budget.count(now, self.cfg.restart.window),
            "last_pong_ms_ago": health.and_then(|h| h.0).map(|t| now.saturating_duration_since(t).as_millis() as u64),
            "last_exit": p.last_exit,
            "problem": p.problem.clone().or(p.swap_failed.clone()).or_else(|| {
                // Failed says so in `runtime`; why, and what brings it back, here.
                p.failed.then(|| format!(
                    "restart budget spent: more than {} restarts within {} s; `warden ctl restart {id}` starts it again",
                    self.cfg.restart.max_restarts,
                    self.cfg.restart.window.as_secs()
                ))
            }),
            "replacing": p.candidate.as_ref().map(|c| c.bundle.manifest().version.to_string()),
        })
    }

    fn policy_info(&self, id: &str) -> Value {
        let p = &self.plugins[id];
        let declared: Vec<&str> = p
            .bundle
            .as_ref()
            .map(|b| {
                b.manifest()
                    .capabilities
                    .iter()
                    .map(|c| c.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let effective: Vec<String> = match (&p.bundle, p.rec.policy_status.as_str()) {
            (Some(b), "approved") => self
                .context(p, b)
                .0
                .granted
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            _ => Vec::new(),
        };
        json!({
            "id": id,
            "status": p.rec.policy_status,
            "grants": p.rec.grants,
            "egress": p.rec.egress,
            "allow_addresses": p.rec.allow_addresses,
            "declared": declared,
            "effective": effective,
            "limits": self.limits_of(p),
        })
    }

    /// The limits the plugin runs under: its manifest's, lowered to the config's
    /// caps, and its data quota. Without a verified bundle, only the caps (`null`:
    /// none, the manifest's value applies).
    fn limits_of(&self, p: &Plugin) -> Value {
        let l = &self.cfg.limits;
        let data_mb = l.data_mb.unwrap_or(crate::broker::files::DEFAULT_QUOTA_MB);
        match &p.bundle {
            Some(b) => {
                let r = self.context(p, b).1.resources;
                json!({
                    "memory_mb": r.memory_mb.get(),
                    "pids": r.pids.get(),
                    "nofile": r.nofile.get(),
                    "tmp_mb": r.tmp_mb.get(),
                    "call_timeout_ms": r.call_timeout_ms.get(),
                    "data_mb": data_mb,
                })
            }
            None => json!({
                "memory_mb": l.memory_mb,
                "pids": l.pids,
                "nofile": l.nofile,
                "tmp_mb": l.tmp_mb,
                "call_timeout_ms": l.call_timeout_ms,
                "data_mb": data_mb,
            }),
        }
    }

    fn stats(&self, id: Option<&str>) -> Value {
        let one = |id: &str| {
            let p = &self.plugins[id];
            let c = p
                .live
                .as_ref()
                .and_then(|l| self.broker.counters(l.chan()))
                .unwrap_or_default();
            json!({"id": id, "runtime": p.runtime(), "restarts": p.restarts, "calls": c.calls,
                   "allowed": c.allowed, "denied": c.denied, "rate_limited": c.rate_limited,
                   "errors": c.errors, "bytes_in": c.bytes_in, "bytes_out": c.bytes_out,
                   "output_suppressed": p.limiter.suppressed_total()})
        };
        match id {
            Some(id) => one(id),
            None => json!({
                "warden": {
                    "uptime_s": self.started.elapsed().as_secs(),
                    "rss_kb": rss_kb(),
                    "plugins": self.plugins.len(),
                    "running": self.plugins.values().filter(|p| p.runtime() == "running").count(),
                    "failed": self.plugins.values().filter(|p| p.failed).count(),
                },
                "plugins": self.plugins.keys().map(|id| one(id)).collect::<Vec<_>>(),
            }),
        }
    }
}
