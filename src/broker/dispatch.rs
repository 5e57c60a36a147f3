//! One message from a plugin, in the broker's order: decode strictly, the
//! handshake, and for a call: is the op known, is its capability granted, rate
//! limit, the handler (or the read cache, or the worker pool), then the reply and
//! one audit record. Channel I/O (reading, queuing and flushing replies, closing)
//! and the loop's bookkeeping stay in the parent module.

use super::*;

impl<R: Recorder> Broker<R> {
    pub(super) fn message(&mut self, token: Token, bytes: &[u8]) {
        let started = Instant::now();
        let ready = self.conns[&token].ready;
        match protocol::decode(bytes) {
            Err(DecodeError::Framing(why)) => self.violation(token, why),
            Err(DecodeError::BadCall { id, message }) if ready => {
                self.conns.get_mut(&token).expect("live").counters.calls += 1;
                let e = CallError::new(ErrorCode::BadRequest, message);
                self.reply(token, id, "?", None, started, Err(e));
            }
            Err(DecodeError::BadCall { .. }) | Ok(Incoming::Call { .. }) if !ready => {
                self.violation(token, "call before hello".into())
            }
            Ok(Incoming::Hello {
                versions,
                plugin,
                version,
            }) => self.hello(token, &versions, &plugin, &version),
            Ok(Incoming::Pong { seq }) => {
                let conn = self.conns.get_mut(&token).expect("live");
                if conn.ping.is_some_and(|(s, _)| s == seq) {
                    conn.ping = None;
                    conn.last_pong = Some(Instant::now());
                }
            }
            Ok(Incoming::Call { id, op, args }) => self.call(token, id, &op, args, started),
            Err(DecodeError::BadCall { .. }) => unreachable!("guarded above"),
        }
    }

    pub(super) fn hello(&mut self, token: Token, versions: &[u32], plugin: &str, version: &str) {
        let conn = &self.conns[&token];
        if conn.ready {
            return self.violation(token, "second hello".into());
        }
        if plugin != conn.ctx.id || version != conn.ctx.version {
            return self.violation(
                token,
                format!(
                    "hello says {plugin} {version}, the verified manifest says {} {}",
                    conn.ctx.id, conn.ctx.version
                ),
            );
        }
        let Some(chosen) = protocol::VERSIONS
            .iter()
            .rev()
            .find(|v| versions.contains(v))
        else {
            return self.violation(
                token,
                format!(
                    "no common protocol version: offered {versions:?}, warden speaks {:?}",
                    protocol::VERSIONS
                ),
            );
        };
        let caps: Vec<&str> = conn.ctx.granted.iter().map(|c| c.as_str()).collect();
        let msg = Outgoing::Welcome {
            version: *chosen,
            plugin: &conn.ctx.id,
            capabilities: &caps,
            limits: Limits {
                max_message: MAX_MESSAGE,
                max_in_flight: MAX_IN_FLIGHT,
                call_timeout_ms: conn.ctx.call_timeout.as_millis() as u64,
                rate: conn.ctx.rate,
            },
        }
        .encode();
        let conn = self.conns.get_mut(&token).expect("live");
        conn.ready = true;
        conn.told = conn.ctx.granted.clone();
        self.send(token, msg, None);
        self.audit(
            token,
            "hello",
            "hello",
            None,
            Instant::now(),
            &Ok(Value::Null),
            None,
        );
    }

    pub(super) fn call(
        &mut self,
        token: Token,
        id: u64,
        name: &str,
        args: Option<protocol::Args<'_>>,
        started: Instant,
    ) {
        let conn = self.conns.get_mut(&token).expect("live");
        conn.counters.calls += 1;
        if conn.in_flight.contains_key(&id) {
            let e = CallError::new(
                ErrorCode::BadRequest,
                format!("call id {id} is already in flight"),
            );
            return self.reply(token, id, op_name(name), None, started, Err(e));
        }
        let Some(op) = ops::find(name) else {
            let shown = protocol::clip(name, MAX_OP_NAME);
            let e = CallError::new(ErrorCode::UnknownOp, format!("no op named {shown:?}"));
            return self.reply(token, id, shown.into_owned(), None, started, Err(e));
        };
        let capability = handlers::capability_of(op, args);
        let cap = Some(capability);
        if let Some(why) = denial(&conn.ctx, op) {
            return self.reply(
                token,
                id,
                op.name,
                cap,
                started,
                Err(CallError::new(ErrorCode::Denied, why)),
            );
        }
        if conn.running >= MAX_IN_FLIGHT {
            let late = conn.running - conn.in_flight.len();
            let also = if late > 0 {
                format!(" ({late} of them answered timeout and still running)")
            } else {
                String::new()
            };
            let e = CallError::new(
                ErrorCode::RateLimited,
                format!("{MAX_IN_FLIGHT} calls in flight{also}"),
            );
            return self.reply(token, id, op.name, cap, started, Err(e));
        }
        let rate = conn
            .ctx
            .rate_overrides
            .iter()
            .find(|(c, _)| *c == op.capability)
            .map_or(conn.ctx.rate, |(_, r)| *r);
        // Every fs.open takes from static:read's bucket (docs/policy.md), whatever
        // capability its audit event names.
        let bucket = conn
            .buckets
            .entry(op.capability)
            .or_insert_with(|| TokenBucket::new(rate, started));
        if !bucket.take(started) {
            let e = CallError::new(
                ErrorCode::RateLimited,
                format!(
                    "{} allows {} calls/s (burst {})",
                    op.capability, rate.per_second, rate.burst
                ),
            );
            return self.reply(token, id, op.name, cap, started, Err(e));
        }
        let caller = Caller {
            id: &conn.ctx.id,
            kv_quota: conn.ctx.kv_quota,
            stats: &conn.counters,
            recent: &conn.recent,
            granted: &conn.ctx.granted,
            call_timeout: conn.ctx.call_timeout,
            egress: conn.ctx.egress.as_ref(),
            files: conn.ctx.files.as_ref(),
        };
        match handlers::handle(op.provider, args, &caller) {
            Outcome::Now(result) => self.reply(token, id, op.name, cap, started, result),
            Outcome::Refused(e, extra) => {
                self.reply_full(token, id, op.name, cap, started, Err(e), None, Some(&extra))
            }
            Outcome::Get(key) if !self.read_cache => {
                let work = Work::Get {
                    key: key.into_owned(),
                };
                self.queue(token, id, op, capability, started, work, None);
            }
            Outcome::Get(key) => {
                if !self.caches.contains_key(&*conn.ns) {
                    self.caches.insert(Arc::clone(&conn.ns), KvCache::default());
                }
                let cache = self.caches.get_mut(&*conn.ns).expect("inserted above");
                match cache.get(&key) {
                    // A hit is answered here, its reply written straight from the
                    // cached string.
                    Some(Some(v)) => {
                        // The spare list directly, not `buffer()`: `cache` still
                        // borrows the caches.
                        let msg =
                            protocol::value_reply(self.spare.pop().unwrap_or_default(), id, v);
                        self.send(token, msg, None);
                        let allowed = Ok(Value::Null);
                        self.audit(token, "host_call", op.name, cap, started, &allowed, None);
                    }
                    Some(None) => {
                        let e = CallError::new(ErrorCode::NotFound, format!("no key {key:?}"));
                        self.reply(token, id, op.name, cap, started, Err(e));
                    }
                    None => {
                        let key = key.into_owned();
                        let fill = Some((key.clone(), cache.generation()));
                        self.queue(token, id, op, capability, started, Work::Get { key }, fill);
                    }
                }
            }
            Outcome::Queued(work) => {
                if let Work::Put { key, .. } | Work::Delete { key } = &work {
                    if let Some(cache) = self.caches.get_mut(&*conn.ns) {
                        cache.invalidate(key);
                    }
                }
                self.queue(token, id, op, capability, started, work, None);
            }
        }
    }

    /// Hands `work` to the pool; its result comes back through the waker, and is
    /// put in the read cache (`fill`: key and the cache generation at submission)
    /// when it is a read. `capability` is the one the call was checked and
    /// will be audited under.
    #[allow(clippy::too_many_arguments)]
    fn queue(
        &mut self,
        token: Token,
        id: u64,
        op: &'static ops::Op,
        capability: Capability,
        started: Instant,
        work: Work,
        fill: Option<(String, u64)>,
    ) {
        let conn = self.conns.get_mut(&token).expect("live");
        let deadline = started + conn.ctx.call_timeout;
        let seq = self.next_seq;
        self.next_seq += 1;
        conn.in_flight.insert(id, seq);
        conn.running += 1;
        self.jobs.insert(
            seq,
            Pending {
                token,
                id,
                ctx: Arc::clone(&conn.ctx),
                op,
                // What `handlers::capability_of` named for the call's checks.
                capability,
                started,
                fill,
                awaiting: Awaiting::Reply,
                audit: work.audit_fields().map(Box::new),
            },
        );
        self.deadlines.push(std::cmp::Reverse((deadline, seq)));
        let ns = Arc::clone(&conn.ns);
        self.pool.submit(Job {
            seq,
            ns,
            work,
            deadline,
        });
    }

    pub(super) fn reply(
        &mut self,
        token: Token,
        id: u64,
        op: impl Into<Cow<'static, str>>,
        cap: Option<Capability>,
        started: Instant,
        result: Result<Value, CallError>,
    ) {
        self.reply_full(token, id, op, cap, started, result, None, None);
    }

    /// Replies, attaching `fd` (SCM_RIGHTS) to a successful reply, and audits with
    /// `extra`. A descriptor is never sent with an error.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reply_full(
        &mut self,
        token: Token,
        id: u64,
        op: impl Into<Cow<'static, str>>,
        cap: Option<Capability>,
        started: Instant,
        result: Result<Value, CallError>,
        fd: Option<OwnedFd>,
        extra: Option<&serde_json::Map<String, Value>>,
    ) {
        let fd = if result.is_ok() { fd } else { None };
        let msg = match &result {
            Ok(v) => Outgoing::Reply {
                id,
                ok: Some(v),
                error: None,
            },
            Err(e) => Outgoing::Reply {
                id,
                ok: None,
                error: Some(e),
            },
        }
        .encode_into(self.buffer());
        self.send(token, msg, fd);
        self.audit(token, "host_call", op, cap, started, &result, extra);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn audit(
        &mut self,
        token: Token,
        kind: &'static str,
        op: impl Into<Cow<'static, str>>,
        capability: Option<Capability>,
        started: Instant,
        result: &Result<Value, CallError>,
        extra: Option<&serde_json::Map<String, Value>>,
    ) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let decision = decision_of(result);
        if kind == "host_call" {
            let c = &mut conn.counters;
            match decision {
                Decision::Allow => c.allowed += 1,
                Decision::Deny => c.denied += 1,
                Decision::RateLimited => c.rate_limited += 1,
                Decision::Error => c.errors += 1,
            }
        }
        let reason = reason_of(result);
        let duration = started.elapsed();
        let op = op.into();
        let time_us = crate::audit::time::micros(SystemTime::now());
        self.recorder.record(&Record {
            plugin: &conn.ctx,
            kind,
            op: op.clone(),
            capability,
            decision,
            reason: &reason,
            duration,
            time_us,
            extra,
        });
        if conn.recent.len() == RECENT {
            conn.recent.pop_front();
        }
        conn.recent.push_back(handlers::Recent {
            time_us: u64::try_from(time_us).unwrap_or(0),
            kind,
            op,
            capability,
            decision,
            reason,
            duration_us: duration.as_micros() as u64,
        });
    }

    /// A framing violation: tell the plugin once, audit, close the channel.
    pub(super) fn violation(&mut self, token: Token, why: String) {
        let e = CallError::new(ErrorCode::BadRequest, format!("protocol violation: {why}"));
        self.send(token, Outgoing::Error { error: &e }.encode(), None);
        self.audit(
            token,
            "channel",
            "framing",
            None,
            Instant::now(),
            &Err(e),
            None,
        );
        self.close(token, format!("protocol violation: {why}"));
    }
}

/// Why `op` is denied to this plugin, if it is.
fn denial(ctx: &PluginContext, op: &ops::Op) -> Option<String> {
    if ctx.blocked {
        return Some(format!("plugin {} is blocked by policy", ctx.id));
    }
    if ops::allowed(op, &ctx.granted) {
        return None;
    }
    // fs.open is the one op two capabilities reach (see `ops::allowed`).
    let needs = match op.name {
        "fs.open" => "static:read or static:write".to_owned(),
        _ => op.capability.to_string(),
    };
    if ops::allowed(op, &ctx.declared) {
        Some(format!(
            "{} needs {needs}, which the manifest declares but the policy does not grant",
            op.name
        ))
    } else {
        Some(format!(
            "{} needs {needs}, which the manifest of {} does not declare",
            op.name, ctx.id
        ))
    }
}
