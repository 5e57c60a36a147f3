//! The supervisor's clock: everything due by now (restart backoffs, hello
//! timeouts, health pings and their deadlines, blue-green promotion, stop
//! deadlines, the systemd watchdog, control clients' deadlines) and when the next
//! thing is due, for the event loop's poll timeout.

use super::*;

/// How long after a SIGKILL an instance that has not exited yet is sent
/// another; its exit is an event, so this only bounds the wake-ups meanwhile.
const KILLED_RECHECK: Duration = Duration::from_secs(1);

impl Supervisor {
    /// Everything due by `now`: backoffs, hello timeouts, pings and their
    /// timeouts, blue-green promotion, stop deadlines, the systemd watchdog.
    pub(super) fn tick(&mut self, now: Instant) {
        if let Some(w) = self.next_watchdog {
            if now >= w {
                self.notifier.send("WATCHDOG=1");
                self.next_watchdog = self.notifier.watchdog_every().map(|d| now + d);
            }
        }
        let ids: Vec<String> = self.plugins.keys().cloned().collect();
        for id in ids {
            self.tick_plugin(&id, now);
        }
        // Suppressed output lines of a plugin that went quiet after its flood.
        for (id, p) in &mut self.plugins {
            if p.limiter.report_due().is_some_and(|d| now >= d) {
                p.limiter.report(id);
            }
        }
        self.expire_clients(now);
    }

    pub(super) fn tick_plugin(&mut self, id: &str, now: Instant) {
        let start_timeout = self.cfg.start_timeout;
        let started = self.started;
        // Whether an answer is late: judged by what was read by the last poll
        // (see `polled_at`); one more turn reads what came while it was late.
        let heard = self.polled_at;
        let grid = |t: Instant| {
            let g = PING_GRID.as_nanos();
            let up = t.saturating_duration_since(started).as_nanos().div_ceil(g) * g;
            started + Duration::from_nanos(up as u64)
        };
        let Some(p) = self.plugins.get_mut(id) else {
            return;
        };
        if p.backoff_until.is_some_and(|t| now >= t) {
            p.backoff_until = None;
            self.reconcile(id, now);
        }
        let p = self.plugins.get_mut(id).expect("present");
        let health = p
            .bundle
            .as_ref()
            .and_then(|b| b.manifest().health)
            .or_else(|| p.live.as_ref().and_then(|l| l.bundle.manifest().health));
        let mut events: Vec<(&'static str, String)> = Vec::new();
        let mut promote = false;
        let mut candidate_failed: Option<(String, String)> = None;
        for role in [Role::Live, Role::Candidate, Role::Retiring] {
            let insts: Vec<&mut Instance> = match role {
                Role::Live => p.live.iter_mut().collect(),
                Role::Candidate => p.candidate.iter_mut().collect(),
                Role::Retiring => p.retiring.iter_mut().collect(),
            };
            for inst in insts {
                if let Some((why, deadline)) = inst.stop {
                    if now >= deadline {
                        let _ = inst.sandbox.kill();
                        // Its exit comes as a pidfd event; until then (a process
                        // can take long to die) nothing is due but a later check.
                        inst.stop = Some((why, now + KILLED_RECHECK));
                    }
                    continue;
                }
                let chan = inst.chan();
                if inst.ready_at.is_none() {
                    if self.broker.is_ready(chan) {
                        inst.ready_at = Some(now);
                        if role == Role::Live {
                            events.push(("plugin.ready", format!("pid {}", inst.sandbox.pid())));
                        }
                        if let Some(h) = inst.bundle.manifest().health {
                            inst.next_ping = Some(grid(now + Duration::from_millis(h.interval_ms)));
                        }
                    } else if heard >= inst.started + start_timeout {
                        let _ = inst.sandbox.kill();
                        inst.stop = Some((Stop::Unhealthy, now));
                        let why = format!("no hello within {} ms", start_timeout.as_millis());
                        if role == Role::Candidate {
                            // The swap failed; the serving instance is not unhealthy.
                            candidate_failed =
                                Some((inst.bundle.manifest().version.to_string(), why));
                        } else {
                            events.push(("plugin.unhealthy", why));
                        }
                        continue;
                    }
                }
                if inst.ready_at.is_none() {
                    continue;
                }
                let (_, outstanding) = self.broker.health(chan).unwrap_or((None, None));
                let timeout = Duration::from_millis(
                    inst.bundle
                        .manifest()
                        .health
                        .or(health)
                        .map_or(2_000, |h| h.timeout_ms),
                );
                if role == Role::Candidate {
                    match inst.proving {
                        None => {
                            if self.broker.ping(chan).is_some() {
                                inst.proving = Some(now);
                            }
                        }
                        Some(sent) => {
                            if outstanding.is_none() {
                                promote = true;
                            } else if heard >= sent + timeout {
                                let _ = inst.sandbox.kill();
                                inst.stop = Some((Stop::Unhealthy, now));
                                candidate_failed = Some((
                                    inst.bundle.manifest().version.to_string(),
                                    format!("no pong within {} ms", timeout.as_millis()),
                                ));
                            }
                        }
                    }
                    continue;
                }
                if let Some(since) = outstanding {
                    if heard >= since + timeout {
                        let _ = inst.sandbox.kill();
                        inst.stop = Some((Stop::Unhealthy, now));
                        events.push((
                            "plugin.unhealthy",
                            format!("no pong within {} ms; killed", timeout.as_millis()),
                        ));
                        continue;
                    }
                }
                if let (Some(due), Some(h)) = (inst.next_ping, inst.bundle.manifest().health) {
                    if now >= due && outstanding.is_none() {
                        self.broker.ping(chan);
                        inst.next_ping = Some(grid(now + Duration::from_millis(h.interval_ms)));
                    }
                }
            }
        }
        if promote {
            let grace = self.cfg.shutdown_deadline;
            let mut c = p.candidate.take().expect("promoting a candidate");
            c.proving = None;
            if let Some(h) = c.bundle.manifest().health {
                c.next_ping = Some(grid(now + Duration::from_millis(h.interval_ms)));
            }
            let new_version = c.bundle.manifest().version.to_string();
            p.set_bundle(Rc::clone(&c.bundle));
            if let Some(mut old) = p.live.replace(c) {
                Self::begin_stop(&mut self.broker, &mut old, Stop::Retired, now, grace);
                p.retiring.push(old);
            }
            events.push(("plugin.replaced", format!("now serving {new_version}")));
        }
        for (kind, reason) in events {
            self.log(format_args!("plugin={id} {kind}: {reason}"));
            self.plugin_event(kind, id, reason, json!({}));
        }
        if let Some((version, why)) = candidate_failed {
            self.replacement_failed(id, &version, &why);
            // Reported now, and being killed: its exit is only logged.
            if let Some(p) = self.plugins.get_mut(id) {
                if let Some(c) = p.candidate.take() {
                    p.retiring.push(c);
                }
            }
        }
    }

    /// The earliest instant something is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let mut due = self.next_watchdog;
        let mut at = |t: Option<Instant>| {
            if let Some(t) = t {
                due = Some(due.map_or(t, |d| d.min(t)));
            }
        };
        for c in self.clients.values() {
            at(Some(c.until));
        }
        for p in self.plugins.values() {
            at(p.backoff_until);
            at(p.limiter.report_due());
            for (inst, role) in p.instances() {
                if let Some((_, d)) = inst.stop {
                    at(Some(d));
                    continue;
                }
                if inst.ready_at.is_none() {
                    at(Some(inst.started + self.cfg.start_timeout));
                    // Hello arrives as a broker event; check soon after.
                    at(Some(Instant::now() + Duration::from_millis(50)));
                    continue;
                }
                let timeout = inst
                    .bundle
                    .manifest()
                    .health
                    .map_or(Duration::from_secs(2), |h| {
                        Duration::from_millis(h.timeout_ms)
                    });
                if role == Role::Candidate {
                    at(Some(Instant::now() + Duration::from_millis(20)));
                    continue;
                }
                at(inst.next_ping);
                if let Some((_, Some(since))) = self.broker.health(inst.chan()) {
                    at(Some(since + timeout));
                }
            }
        }
        due
    }
}
