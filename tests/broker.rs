//! The broker served by a real mio loop, with real SDK clients and raw hostile
//! sockets: every op, each denial, rate limits, timeouts, and a bad-input corpus
//! that must get typed errors or a closed channel, never a panic or a stall for the
//! other plugins.

use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use serde_json::{json, Value};
use warden::broker::protocol::Rate;
use warden::broker::{Broker, Decision, PluginContext, Record, Recorder};
use warden::bundle::Capability;
use warden::store::kv::Quota;
use warden::store::Store;
use warden::sys::seqpacket;
use warden_plugin::{Client, Error};

const WAKER: Token = Token(0);

/// (plugin, op, decision, reason) for every record.
type Entry = (String, String, Decision, String);

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Entry>>>, Arc<Mutex<Vec<Extra>>>);

/// (plugin, op, the record's `extra`) for every record.
type Extra = (String, String, Option<serde_json::Map<String, Value>>);

impl Recorder for Log {
    fn record(&mut self, r: &Record<'_>) {
        self.1
            .lock()
            .unwrap()
            .push((r.plugin.id.clone(), r.op.to_string(), r.extra.cloned()));
        self.0.lock().unwrap().push((
            r.plugin.id.clone(),
            r.op.to_string(),
            r.decision,
            // Marked when the record says the plugin never got the reply.
            match r.extra.and_then(|e| e.get("delivered")) {
                Some(Value::Bool(false)) => format!("{} (not delivered)", r.reason),
                _ => r.reason.to_owned(),
            },
        ));
    }
}

impl Log {
    fn decisions(&self, plugin: &str, op: &str) -> Vec<Decision> {
        let v = self.0.lock().unwrap();
        v.iter()
            .filter(|e| e.0 == plugin && e.1 == op)
            .map(|e| e.2)
            .collect()
    }

    fn reasons(&self, plugin: &str, op: &str) -> Vec<String> {
        let v = self.0.lock().unwrap();
        v.iter()
            .filter(|e| e.0 == plugin && e.1 == op)
            .map(|e| e.3.clone())
            .collect()
    }
}

/// A recorder that asks the loop to look at it every 10 ms, and counts the looks.
#[derive(Clone, Default)]
struct Watched(Arc<std::sync::atomic::AtomicUsize>);

impl Recorder for Watched {
    fn record(&mut self, _r: &Record<'_>) {}

    fn watch_within(&self) -> Option<Duration> {
        Some(Duration::from_millis(10))
    }

    fn watch(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// An idle loop with no wait limit of its own still wakes for a recorder that
/// asks to be watched (the audit recorder does while its thread runs at idle
/// priority), and calls `watch` once per turn. Without that, `turn` would sleep
/// until some event came.
#[test]
fn an_idle_loop_wakes_to_watch_a_recorder_that_asks() {
    let state = tempfile::tempdir().unwrap();
    let store = Store::open(state.path()).unwrap();
    let mut poll = Poll::new().unwrap();
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
    let watched = Watched::default();
    let mut broker = Broker::new(
        poll.registry(),
        &store,
        Arc::clone(&waker),
        watched.clone(),
        2,
    )
    .unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut events = Events::with_capacity(16);
        for _ in 0..5 {
            broker
                .turn(&mut poll, &mut events, WAKER, None, |_| {})
                .unwrap();
        }
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("five idle turns ended: the loop woke for the recorder");
    assert_eq!(watched.0.load(Ordering::Relaxed), 5);
}

fn ctx(id: &str, declared: &[Capability], granted: &[Capability]) -> PluginContext {
    PluginContext {
        id: id.into(),
        version: "1.0.0".into(),
        sha256: "00".repeat(32),
        declared: declared.to_vec(),
        granted: granted.to_vec(),
        call_timeout: Duration::from_secs(5),
        rate: Rate::default(),
        rate_overrides: vec![],
        kv_quota: Quota::default(),
        blocked: false,
        egress: None,
        files: None,
    }
}

/// A broker loop on its own thread serving the given plugins; returns the plugin
/// ends of their sockets.
struct Harness {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    log: Log,
    store: Store,
    _state: tempfile::TempDir,
}

impl Harness {
    fn start(plugins: Vec<PluginContext>) -> (Harness, Vec<UnixDatagram>) {
        Harness::start_with(plugins, 2)
    }

    /// With `readers` reader threads.
    fn start_with(plugins: Vec<PluginContext>, readers: usize) -> (Harness, Vec<UnixDatagram>) {
        let state = tempfile::tempdir().unwrap();
        let store = Store::open(state.path()).unwrap();
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
        let log = Log::default();
        let mut broker = Broker::new(
            poll.registry(),
            &store,
            Arc::clone(&waker),
            log.clone(),
            readers,
        )
        .unwrap();
        let mut ends = Vec::new();
        for (i, c) in plugins.into_iter().enumerate() {
            let (ours, theirs) = seqpacket::pair().unwrap();
            broker.attach(Token(i + 1), ours, c).unwrap();
            ends.push(UnixDatagram::from(theirs));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut poll = poll;
            let mut events = Events::with_capacity(256);
            while !stop2.load(Ordering::Relaxed) {
                broker
                    .turn(
                        &mut poll,
                        &mut events,
                        WAKER,
                        Some(Duration::from_millis(20)),
                        |_| {},
                    )
                    .unwrap();
            }
            // As warden stops: calls still on the worker pool are audited.
            drop(broker.into_recorder());
        });
        (
            Harness {
                stop,
                waker,
                thread: Some(thread),
                log,
                store,
                _state: state,
            },
            ends,
        )
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            t.join().expect("the broker loop must not panic");
        }
    }
}

fn connect(sock: UnixDatagram, id: &str) -> Client {
    Client::with_socket(sock, id, "1.0.0").unwrap()
}

use Capability::*;

#[test]
fn every_op_through_the_sdk() {
    let all = [KvRead, KvWrite, LogWrite, MonitorRead, AuditRead];
    let (h, mut socks) = Harness::start(vec![ctx("full", &all, &all)]);
    let c = connect(socks.remove(0), "full");
    assert_eq!(
        c.welcome().capabilities,
        [
            "kv:read",
            "kv:write",
            "log:write",
            "monitor:read",
            "audit:read"
        ]
    );
    assert_eq!(c.kv_get("runs").unwrap(), None);
    c.kv_put("runs", "1").unwrap();
    c.kv_put("runs", "2").unwrap();
    c.kv_put("other", "x").unwrap();
    assert_eq!(c.kv_get("runs").unwrap().as_deref(), Some("2"));
    let (keys, cursor) = c.kv_list("", 1, None).unwrap();
    assert_eq!(keys, ["other"]);
    let (keys, cursor) = c.kv_list("", 1, cursor.as_deref()).unwrap();
    assert_eq!((keys, cursor), (vec!["runs".to_owned()], None));
    assert!(c.kv_delete("other").unwrap());
    assert!(!c.kv_delete("other").unwrap());
    c.log(
        warden_plugin::Level::Info,
        "hello from a test",
        &[("n", json!(3))],
    )
    .unwrap();
    let stats = c.monitor_stats().unwrap();
    assert!(
        stats["host"]["mem_total_kb"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert!(stats["plugin"]["calls"].as_u64().unwrap() >= 9, "{stats}");
    let events = c.audit_query(5).unwrap();
    assert_eq!(events.len(), 5);
    assert_eq!(events.last().unwrap()["op"], "monitor.stats");
    assert_eq!(h.log.decisions("full", "kv.put"), [Decision::Allow; 3]);
    assert_eq!(h.log.decisions("full", "hello"), [Decision::Allow]);
}

#[test]
fn denials_name_their_reason() {
    let (h, mut socks) = Harness::start(vec![
        ctx(
            "reader",
            &[KvRead, KvWrite, HttpEgress],
            &[KvRead, HttpEgress],
        ),
        {
            let mut b = ctx("blocked", &[KvRead], &[KvRead]);
            b.blocked = true;
            b
        },
    ]);
    let c = connect(socks.remove(0), "reader");
    match c.kv_put("k", "v") {
        Err(Error::Denied(m)) => {
            assert!(m.contains("declares but the policy does not grant"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    match c.log(warden_plugin::Level::Info, "x", &[]) {
        Err(Error::Denied(m)) => assert!(m.contains("manifest of reader does not declare"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Granted, but the policy gave no egress allow-list: every dial is refused.
    match c.call("net.dial", json!({"host": "example.com", "port": 443})) {
        Err(Error::Denied(m)) => assert_eq!(
            m,
            "example.com:443: the policy of reader has no egress allow-list"
        ),
        other => panic!("{other:?}"),
    }
    // Another namespace cannot even be named: the handler refuses the field.
    match c.call("kv.get", json!({"key": "k", "ns": "plugin:other"})) {
        Err(Error::BadRequest(m)) => assert!(m.contains("unknown field `ns`"), "{m}"),
        other => panic!("{other:?}"),
    }
    let b = connect(socks.remove(0), "blocked");
    assert!(matches!(b.kv_get("k"), Err(Error::Denied(m)) if m.contains("blocked by policy")));
    assert_eq!(h.log.decisions("reader", "kv.put"), [Decision::Deny]);
    assert_eq!(h.log.decisions("reader", "net.dial"), [Decision::Deny]);
}

#[test]
fn namespaces_are_separate() {
    let caps = [KvRead, KvWrite];
    let (_h, mut socks) = Harness::start(vec![ctx("a", &caps, &caps), ctx("b", &caps, &caps)]);
    let a = connect(socks.remove(0), "a");
    let b = connect(socks.remove(0), "b");
    a.kv_put("secret", "a's").unwrap();
    assert_eq!(b.kv_get("secret").unwrap(), None);
    assert_eq!(b.kv_list("", 10, None).unwrap().0, Vec::<String>::new());
}

#[test]
fn rate_limits_per_capability() {
    let mut c = ctx("chatty", &[KvRead, LogWrite], &[KvRead, LogWrite]);
    c.rate_overrides = vec![(
        LogWrite,
        Rate {
            per_second: 1,
            burst: 3,
        },
    )];
    let (h, mut socks) = Harness::start(vec![c]);
    let p = connect(socks.remove(0), "chatty");
    for _ in 0..3 {
        p.log(warden_plugin::Level::Debug, "ok", &[]).unwrap();
    }
    match p.log(warden_plugin::Level::Debug, "one too many", &[]) {
        Err(Error::RateLimited(m)) => {
            assert!(m.contains("log:write allows 1 calls/s (burst 3)"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // Another capability has its own bucket.
    assert_eq!(p.kv_get("x").unwrap(), None);
    assert_eq!(
        h.log.decisions("chatty", "log.write"),
        [
            Decision::Allow,
            Decision::Allow,
            Decision::Allow,
            Decision::RateLimited
        ]
    );
}

#[test]
fn slow_calls_answer_timeout() {
    let mut c = ctx("impatient", &[KvRead], &[KvRead]);
    c.call_timeout = Duration::ZERO;
    let (_h, mut socks) = Harness::start(vec![c]);
    let p = connect(socks.remove(0), "impatient");
    assert!(matches!(p.kv_get("k"), Err(Error::Timeout(_))));
}

// ---- raw sockets: the bad-input corpus -------------------------------------

fn send(s: &UnixDatagram, msg: &[u8]) {
    s.send(msg).unwrap();
}

fn recv(s: &UnixDatagram) -> Option<Value> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 70000];
    match s.recv(&mut buf) {
        Ok(0) => None,
        Ok(n) => Some(serde_json::from_slice(&buf[..n]).unwrap()),
        Err(e) => panic!("no answer from the broker: {e}"),
    }
}

fn hello(s: &UnixDatagram, id: &str) {
    send(
        s,
        format!(r#"{{"type":"hello","versions":[1],"plugin":"{id}","version":"1.0.0"}}"#)
            .as_bytes(),
    );
    assert_eq!(recv(s).unwrap()["type"], "welcome");
}

/// The broker answers a framing violation with one error and closes.
fn closes_after(s: &UnixDatagram, needle: &str) {
    let m = recv(s).expect("an error message before the close");
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(m["error"]["code"], "bad_request", "{m}");
    let text = m["error"]["message"].as_str().unwrap();
    assert!(text.contains(needle), "{text}");
    assert_eq!(recv(s), None, "the channel must be closed");
}

#[test]
fn framing_violations_close_the_channel() {
    let caps = [KvRead];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "call before hello",
            br#"{"type":"call","id":1,"op":"kv.get","args":{"key":"k"}}"#.to_vec(),
            "call before hello",
        ),
        (
            "invalid utf-8",
            b"{\"type\":\"hello\xff\"}".to_vec(),
            "not UTF-8",
        ),
        ("not json", b"hello?".to_vec(), "not a JSON object"),
        ("json array", b"[1,2,3]".to_vec(), "not a JSON object"),
        ("no type", br#"{"id":1}"#.to_vec(), "missing field `type`"),
        (
            "wrong hello",
            br#"{"type":"hello","versions":[1],"plugin":"somebody-else","version":"1.0.0"}"#
                .to_vec(),
            "verified manifest says",
        ),
        (
            "no common version",
            br#"{"type":"hello","versions":[99],"plugin":"p0","version":"1.0.0"}"#.to_vec(),
            "no common protocol version",
        ),
    ];
    let n = cases.len();
    let (h, socks) = Harness::start(
        (0..n)
            .map(|i| ctx(&format!("p{i}"), &caps, &caps))
            .collect(),
    );
    for (i, ((name, msg, needle), s)) in cases.into_iter().zip(socks).enumerate() {
        let msg = String::from_utf8_lossy(&msg)
            .replace("\"p0\"", &format!("\"p{i}\""))
            .into_bytes();
        let msg = if name == "invalid utf-8" {
            b"{\"type\":\"hello\xff\"}".to_vec()
        } else {
            msg
        };
        send(&s, &msg);
        closes_after(&s, needle);
    }
    let log = h.log.0.lock().unwrap();
    assert_eq!(
        log.iter().filter(|e| e.1 == "framing").count(),
        n,
        "every violation is audited"
    );
}

#[test]
fn second_hello_and_passed_fds_close_the_channel() {
    let caps = [KvRead];
    let (_h, mut socks) = Harness::start(vec![ctx("a", &caps, &caps), ctx("b", &caps, &caps)]);
    let a = socks.remove(0);
    hello(&a, "a");
    send(
        &a,
        br#"{"type":"hello","versions":[1],"plugin":"a","version":"1.0.0"}"#,
    );
    closes_after(&a, "second hello");
    let b = socks.remove(0);
    hello(&b, "b");
    let (x, _y) = seqpacket::pair().unwrap();
    seqpacket::send(b.as_fd(), br#"{"type":"pong","seq":1}"#, &[x.as_fd()]).unwrap();
    closes_after(&b, "sent a file descriptor");
}

#[test]
fn bad_calls_get_typed_errors_and_the_channel_survives() {
    let caps = [KvRead, KvWrite];
    let (_h, mut socks) = Harness::start(vec![ctx("p", &caps, &caps)]);
    let s = socks.remove(0);
    hello(&s, "p");
    let expect = |msg: &[u8], code: &str, id: Option<u64>| {
        send(&s, msg);
        let m = recv(&s).unwrap();
        assert_eq!(
            m["error"]["code"],
            code,
            "{} -> {m}",
            String::from_utf8_lossy(msg)
        );
        if let Some(id) = id {
            assert_eq!(m["id"], id, "{m}");
        }
    };
    expect(
        br#"{"type":"call","id":1,"op":"kv.get","args":{"key":7}}"#,
        "bad_request",
        Some(1),
    );
    expect(
        br#"{"type":"call","id":2,"op":"kv.get","args":{}}"#,
        "bad_request",
        Some(2),
    );
    expect(
        br#"{"type":"call","id":3,"op":"kv.get","args":"key"}"#,
        "bad_request",
        Some(3),
    );
    expect(
        br#"{"type":"call","id":4,"op":"kv.get","args":{"key":"k"},"extra":true}"#,
        "bad_request",
        Some(4),
    );
    expect(
        br#"{"type":"call","id":5,"op":"kv.get","args":{"key":"k","key":"j"}}"#,
        "bad_request",
        Some(5),
    );
    expect(
        br#"{"type":"call","id":6,"op":"kv.steal","args":{}}"#,
        "unknown_op",
        Some(6),
    );
    expect(
        br#"{"type":"call","id":7,"op":"","args":{}}"#,
        "unknown_op",
        Some(7),
    );
    expect(
        br#"{"type":"call","id":8,"op":"kv.get","args":{"key":""}}"#,
        "bad_request",
        Some(8),
    );
    let huge = format!(
        r#"{{"type":"call","id":9,"op":"kv.put","args":{{"key":"k","value":"{}"}}}}"#,
        "x".repeat(70_000)
    );
    expect(huge.as_bytes(), "too_large", None);
    let big = format!(
        r#"{{"type":"call","id":10,"op":"kv.put","args":{{"key":"k","value":"{}"}}}}"#,
        "x".repeat(20_000)
    );
    expect(big.as_bytes(), "too_large", Some(10));
    // Duplicate ids: the second arrives while the first (a put, fsynced) is in flight.
    send(
        &s,
        br#"{"type":"call","id":11,"op":"kv.put","args":{"key":"k","value":"v"}}"#,
    );
    send(
        &s,
        br#"{"type":"call","id":11,"op":"kv.get","args":{"key":"k"}}"#,
    );
    let first = recv(&s).unwrap();
    let second = recv(&s).unwrap();
    let codes = [
        first["error"]["code"].clone(),
        second["error"]["code"].clone(),
    ];
    assert!(codes.contains(&json!("bad_request")), "{first} {second}");
    assert!(
        first.get("ok").is_some() || second.get("ok").is_some(),
        "{first} {second}"
    );
    // After all that, the channel still works.
    send(
        &s,
        br#"{"type":"call","id":12,"op":"kv.get","args":{"key":"k"}}"#,
    );
    assert_eq!(recv(&s).unwrap()["ok"]["value"], "v");
}

#[test]
fn a_flood_does_not_stall_other_plugins() {
    let caps = [KvRead, KvWrite];
    let mut flood_ctx = ctx("flood", &caps, &caps);
    flood_ctx.rate = Rate {
        per_second: 1_000_000,
        burst: 1_000_000,
    };
    let (h, mut socks) = Harness::start(vec![flood_ctx, ctx("good", &caps, &caps)]);
    let flood = socks.remove(0);
    let good = connect(socks.remove(0), "good");
    hello(&flood, "flood");
    flood.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    // The flooder never reads its replies and sends as fast as it can.
    let flooder = std::thread::spawn(move || {
        let mut sent = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            let msg =
                format!(r#"{{"type":"call","id":{sent},"op":"kv.get","args":{{"key":"k"}}}}"#);
            match flood.send(msg.as_bytes()) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(_) => break, // closed by the broker: fine
            }
        }
        sent
    });
    let mut worst = Duration::ZERO;
    for i in 0..200 {
        let t = Instant::now();
        good.kv_put("n", &i.to_string()).unwrap();
        assert_eq!(good.kv_get("n").unwrap(), Some(i.to_string()));
        worst = worst.max(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flooder.join().unwrap();
    assert!(sent > 1000, "the flood was real: {sent} calls");
    assert!(
        worst < Duration::from_secs(2),
        "a good plugin waited {worst:?} during a flood"
    );
    // The flooder was throttled or cut off, and it shows in the audit.
    let log = h.log.0.lock().unwrap();
    let limited = log
        .iter()
        .any(|e| e.0 == "flood" && e.2 == Decision::RateLimited);
    let closed = log.iter().any(|e| e.0 == "flood" && e.1 == "framing");
    let served = log
        .iter()
        .filter(|e| e.0 == "flood" && e.1 == "kv.get")
        .count();
    assert!(
        limited || closed || served > 0,
        "flood left no trace in the audit"
    );
}

#[test]
fn a_plugin_that_stops_reading_is_cut_off() {
    let caps = [KvRead];
    let mut c = ctx("deaf", &caps, &caps);
    c.rate = Rate {
        per_second: 1_000_000,
        burst: 1_000_000,
    };
    let (_h, mut socks) = Harness::start(vec![c]);
    let s = socks.remove(0);
    hello(&s, "deaf");
    // monitor.stats is denied (not declared) and answered at once: many replies.
    s.set_nonblocking(true).unwrap();
    let mut closed = false;
    for i in 0..200_000u64 {
        let msg = format!(r#"{{"type":"call","id":{i},"op":"monitor.stats","args":{{}}}}"#);
        match s.send(msg.as_bytes()) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200))
            }
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "a plugin that never reads must be cut off");
}

/// A `kv.get` sent while a `kv.put` of the same key is still being committed
/// may read the value from before the put; that read must not stay in the
/// loop's read cache once the put is acknowledged. After each put's reply, a get
/// answers the value just written.
#[test]
fn a_read_that_overlaps_a_write_is_not_cached_past_it() {
    let (_h, ends) = Harness::start(vec![ctx("p", &[KvRead, KvWrite], &[KvRead, KvWrite])]);
    let s = &ends[0];
    hello(s, "p");
    let call = |id: u64, op: &str, args: String| {
        format!(r#"{{"type":"call","id":{id},"op":"{op}","args":{args}}}"#)
    };
    let put = |id: u64, v: usize| call(id, "kv.put", format!(r#"{{"key":"k","value":"v{v}"}}"#));
    let get = |id: u64| call(id, "kv.get", r#"{"key":"k"}"#.to_string());
    send(s, put(1, 0).as_bytes());
    assert!(recv(s).unwrap()["ok"].is_object());
    for round in 1..=20usize {
        let id = round as u64 * 10;
        // The put and a get of the same key in flight together.
        send(s, put(id, round).as_bytes());
        send(s, get(id + 1).as_bytes());
        let mut put_done = false;
        for _ in 0..2 {
            let m = recv(s).unwrap();
            assert!(m.get("ok").is_some(), "round {round}: {m}");
            put_done |= m["id"] == id;
        }
        assert!(put_done, "round {round}: the put was answered");
        send(s, get(id + 2).as_bytes());
        let m = recv(s).unwrap();
        assert_eq!(
            m["ok"]["value"],
            format!("v{round}"),
            "round {round}: a get after the put's reply answered {m}"
        );
    }
}

// ---- calls on the worker pool: ids, timeouts, hang-ups ----------------------

fn call(id: u64, op: &str, args: &str) -> Vec<u8> {
    format!(r#"{{"type":"call","id":{id},"op":"{op}","args":{args}}}"#).into_bytes()
}

impl Harness {
    /// Holds SQLite's write lock until the returned connection commits or rolls
    /// back: the broker's writer waits for it, so puts and deletes stay in flight.
    fn hold_writes(&self) -> rusqlite::Connection {
        let c = self.store.connect().unwrap();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        c
    }
}

fn with_timeout(mut c: PluginContext, t: Duration) -> PluginContext {
    c.call_timeout = t;
    c
}

/// A plugin may reuse a call id once its reply came. The result of a call that
/// was answered `timeout` arrives later; it must not answer the new call.
#[test]
fn a_late_result_does_not_answer_a_new_call_with_the_same_id() {
    let c = with_timeout(
        ctx("p", &[KvRead, KvWrite], &[KvRead, KvWrite]),
        Duration::from_millis(300),
    );
    let (h, ends) = Harness::start(vec![c]);
    let s = &ends[0];
    hello(s, "p");
    send(s, &call(100, "kv.put", r#"{"key":"d","value":"x"}"#));
    assert!(recv(s).unwrap()["ok"].is_object());
    let lock = h.hold_writes();
    send(s, &call(1, "kv.put", r#"{"key":"a","value":"1"}"#));
    assert_eq!(recv(s).unwrap()["error"]["code"], "timeout");
    // Id 1 is free again: a delete of an existing key reuses it.
    send(s, &call(1, "kv.delete", r#"{"key":"d"}"#));
    std::thread::sleep(Duration::from_millis(100));
    lock.execute_batch("COMMIT").unwrap();
    let m = recv(s).unwrap();
    assert_eq!(m["id"], 1, "{m}");
    assert_eq!(
        m["ok"]["deleted"], true,
        "answered with the put's result: {m}"
    );
}

/// The late result of a timed-out read of one key must not fill the read cache
/// under another key read with the same id.
#[test]
fn a_late_read_does_not_fill_the_cache_for_a_call_with_the_same_id() {
    let c = with_timeout(
        ctx("p", &[KvRead, KvWrite], &[KvRead, KvWrite]),
        Duration::from_millis(300),
    );
    // One reader: the two reads run in order.
    let (h, ends) = Harness::start_with(vec![c], 1);
    let s = &ends[0];
    {
        let mut c = h.store.connect().unwrap();
        let tx = c.transaction().unwrap();
        warden::store::kv::put(&tx, "plugin:p", "a", "value-of-a", Quota::default()).unwrap();
        warden::store::kv::put(&tx, "plugin:p", "b", "value-of-b", Quota::default()).unwrap();
        tx.commit().unwrap();
    }
    // Readers wait while another connection holds the database exclusively.
    let lock = h.store.connect().unwrap();
    lock.execute_batch(
        "PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE; INSERT INTO kv VALUES ('x','x','x');",
    )
    .unwrap();
    hello(s, "p");
    send(s, &call(1, "kv.get", r#"{"key":"a"}"#));
    assert_eq!(recv(s).unwrap()["error"]["code"], "timeout");
    send(s, &call(1, "kv.get", r#"{"key":"b"}"#));
    std::thread::sleep(Duration::from_millis(50));
    lock.execute_batch("ROLLBACK; PRAGMA locking_mode=NORMAL; SELECT 1 FROM kv LIMIT 1;")
        .unwrap();
    drop(lock);
    let first = recv(s).unwrap();
    assert_eq!(first["ok"]["value"], "value-of-b", "{first}");
    std::thread::sleep(Duration::from_millis(100));
    send(s, &call(2, "kv.get", r#"{"key":"b"}"#));
    let second = recv(s).unwrap();
    assert_eq!(second["ok"]["value"], "value-of-b", "{second}");
}

/// A call that reuses the id of a finished call gets its own full timeout, not
/// what was left of the old call's.
#[test]
fn a_reused_id_gets_its_own_call_timeout() {
    let timeout = Duration::from_millis(1000);
    let c = with_timeout(ctx("p", &[KvRead, KvWrite], &[KvRead, KvWrite]), timeout);
    let (h, ends) = Harness::start(vec![c]);
    let s = &ends[0];
    hello(s, "p");
    send(s, &call(1, "kv.get", r#"{"key":"k"}"#));
    assert_eq!(recv(s).unwrap()["error"]["code"], "not_found");
    std::thread::sleep(Duration::from_millis(800));
    let lock = h.hold_writes();
    let t = Instant::now();
    send(s, &call(1, "kv.put", r#"{"key":"k","value":"v"}"#));
    let m = recv(s).unwrap();
    let waited = t.elapsed();
    lock.execute_batch("COMMIT").unwrap();
    assert_eq!(m["error"]["code"], "timeout", "{m}");
    assert!(waited >= timeout, "timed out after {waited:?}: {m}");
}

/// Every call gets its audit event: one still on the worker pool when the plugin
/// hangs up is audited when it finishes (its write did happen).
#[test]
fn a_call_in_flight_when_the_plugin_hangs_up_is_audited() {
    let (h, mut ends) = Harness::start(vec![ctx("p", &[KvRead, KvWrite], &[KvRead, KvWrite])]);
    let s = ends.remove(0);
    hello(&s, "p");
    let lock = h.hold_writes();
    send(&s, &call(1, "kv.put", r#"{"key":"ghost","value":"boo"}"#));
    std::thread::sleep(Duration::from_millis(100));
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    lock.execute_batch("COMMIT").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.log.decisions("p", "kv.put").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stored = warden::store::kv::get(&h.store.connect().unwrap(), "plugin:p", "ghost").unwrap();
    assert_eq!(stored.as_deref(), Some("boo"));
    assert_eq!(h.log.decisions("p", "kv.put"), vec![Decision::Allow]);
    assert_eq!(
        h.log.reasons("p", "kv.put"),
        vec![" (not delivered)".to_string()]
    );
}

/// The in-flight limit is a rate limit: it comes after the op and capability
/// checks, so an unknown op is still `unknown_op` and an undeclared one `denied`.
#[test]
fn the_in_flight_limit_comes_after_the_op_and_capability_checks() {
    let (h, ends) = Harness::start(vec![ctx("p", &[KvRead, KvWrite], &[KvRead, KvWrite])]);
    let s = &ends[0];
    hello(s, "p");
    let lock = h.hold_writes();
    for id in 1..=32 {
        send(s, &call(id, "kv.put", r#"{"key":"k","value":"v"}"#));
    }
    std::thread::sleep(Duration::from_millis(100));
    send(s, &call(33, "no.such.op", "{}"));
    assert_eq!(recv(s).unwrap()["error"]["code"], "unknown_op");
    send(s, &call(34, "monitor.stats", "{}"));
    assert_eq!(recv(s).unwrap()["error"]["code"], "denied");
    send(s, &call(35, "kv.get", r#"{"key":"k"}"#));
    let m = recv(s).unwrap();
    assert_eq!(m["error"]["code"], "rate_limited", "{m}");
    lock.execute_batch("COMMIT").unwrap();
    for _ in 1..=32 {
        assert!(recv(s).unwrap()["ok"].is_object());
    }
    assert_eq!(h.log.decisions("p", "monitor.stats"), vec![Decision::Deny]);
}

/// A call answered `timeout` keeps its in-flight slot until its work is done: a
/// plugin cannot pile up work on the pool by letting calls time out.
#[test]
fn timed_out_calls_count_against_the_in_flight_limit_until_done() {
    let c = with_timeout(
        ctx("p", &[KvRead, KvWrite], &[KvRead, KvWrite]),
        Duration::from_millis(10),
    );
    let (h, ends) = Harness::start(vec![c]);
    let s = &ends[0];
    hello(s, "p");
    let lock = h.hold_writes();
    let mut codes = Vec::new();
    for id in 0..40u64 {
        send(
            s,
            &call(id, "kv.put", &format!(r#"{{"key":"k{id}","value":"v"}}"#)),
        );
        let m = recv(s).unwrap();
        codes.push(m["error"]["code"].as_str().unwrap().to_owned());
        if id == 32 {
            let text = m["error"]["message"].as_str().unwrap();
            assert!(text.contains("32 of them answered timeout"), "{text}");
        }
    }
    assert!(codes[..32].iter().all(|c| c == "timeout"), "{codes:?}");
    assert!(codes[32..].iter().all(|c| c == "rate_limited"), "{codes:?}");
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    // Once the work is done, the slots are free again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        send(s, &call(99, "kv.get", r#"{"key":"k0"}"#));
        let m = recv(s).unwrap();
        if m["error"]["code"] != "rate_limited" || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The writes commit in groups: the first (waiting on the lock) alone, the
    // rest after it; wait for them all before counting.
    let c = h.store.connect().unwrap();
    let count = || {
        let (keys, _) = warden::store::kv::list(&c, "plugin:p", "k", 1000, None).unwrap();
        keys.len()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while count() < 32 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(count(), 32, "only the 32 calls that got a slot ran");
}

// ---- reply sizes --------------------------------------------------------------

/// One message, however large (up to the socket's limit), and its size.
fn recv_sized(s: &UnixDatagram) -> (Value, usize) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 400_000];
    let n = s.recv(&mut buf).expect("an answer from the broker");
    assert!(n > 0, "the channel was closed");
    (serde_json::from_slice(&buf[..n]).unwrap(), n)
}

/// No reply is larger than `max_message`: a `kv.list` page of long keys holds as
/// many as fit, and its cursor continues after them, without a gap or a repeat.
#[test]
fn kv_list_pages_fit_in_one_message() {
    let (_h, ends) = Harness::start(vec![ctx("p", &[KvRead, KvWrite], &[KvRead, KvWrite])]);
    let s = &ends[0];
    hello(s, "p");
    // 400 keys of 256 bytes, quotes included (each escaped in JSON).
    let key = |i: usize| format!("{i:04}\"{}", "k".repeat(251));
    for chunk in (0..400).collect::<Vec<_>>().chunks(25) {
        for &i in chunk {
            let args = json!({"key": key(i), "value": ""}).to_string();
            send(s, &call(i as u64, "kv.put", &args));
        }
        for _ in chunk {
            assert!(recv(s).unwrap()["ok"].is_object());
        }
    }
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    for page in 0.. {
        assert!(page < 10, "too many pages");
        let mut args = json!({"limit": 1000});
        if !cursor.is_null() {
            args["cursor"] = cursor.clone();
        }
        send(s, &call(1000 + page, "kv.list", &args.to_string()));
        let (m, size) = recv_sized(s);
        assert!(size <= 65536, "a reply of {size} bytes");
        let keys = m["ok"]["keys"].as_array().unwrap();
        seen.extend(keys.iter().map(|k| k.as_str().unwrap().to_owned()));
        cursor = m["ok"]["cursor"].clone();
        if cursor.is_null() {
            break;
        }
        assert_eq!(cursor, keys.last().unwrap().clone());
    }
    assert!(
        seen.len() == 400 && (0..400).all(|i| seen[i] == key(i)),
        "{}",
        seen.len()
    );
}

/// An unknown op's name is the plugin's text: the error and the audit record
/// carry it clipped, and `audit.query` answers as many events as fit.
#[test]
fn plugin_text_does_not_grow_replies_or_audit_records() {
    let (h, ends) = Harness::start(vec![ctx("p", &[AuditRead], &[AuditRead])]);
    let s = &ends[0];
    hello(s, "p");
    let long = "x".repeat(60_000);
    for id in 0..300u64 {
        send(s, &call(id, &long, "{}"));
        let (m, size) = recv_sized(s);
        assert_eq!(m["error"]["code"], "unknown_op");
        assert!(size < 2048, "an unknown_op reply of {size} bytes");
    }
    let ops: Vec<String> = h
        .log
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.1.clone())
        .collect();
    assert!(ops.iter().all(|op| op.len() <= 64), "{:?}", ops.last());
    send(s, &call(400, "audit.query", r#"{"limit":256}"#));
    let (m, size) = recv_sized(s);
    assert!(size <= 65536, "an audit.query reply of {size} bytes");
    let events = m["ok"]["events"].as_array().unwrap();
    assert!(events.len() > 10 && events.len() < 256, "{}", events.len());
}

/// An empty datagram is not JSON: a framing violation, answered, audited and
/// closed, not taken for the plugin hanging up.
#[test]
fn an_empty_datagram_is_a_framing_violation() {
    let (h, ends) = Harness::start(vec![ctx("p", &[KvRead], &[KvRead])]);
    let s = &ends[0];
    hello(s, "p");
    send(s, b"");
    closes_after(s, "protocol violation");
    assert_eq!(h.log.decisions("p", "framing"), vec![Decision::Error]);
}

// ---- the I/O threads are shared fairly ---------------------------------------

/// A loopback listener whose accept queue is full: further connects hang, as to
/// a firewalled host. Returns its port and what keeps it so.
fn blackhole() -> (u16, std::net::TcpListener, Vec<std::net::TcpStream>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&l);
    // SAFETY: listen(2) on a socket we own, with a backlog of 0.
    let r = unsafe { libc::listen(fd, 0) };
    assert_eq!(r, 0);
    let port = l.local_addr().unwrap().port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let held = (0..2)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()
        })
        .collect();
    (port, l, held)
}

/// A dial still connecting when warden stops gives up at once, instead of
/// holding the stop up to its call timeout (here 30 s; up to 60 s, past
/// systemd's stop timeout), and is audited as not delivered.
#[test]
fn a_dial_still_connecting_when_warden_stops_gives_up_at_once() {
    use warden::broker::egress::Egress;
    let (port, _l, _held) = blackhole();
    let mut c = with_timeout(
        ctx("p", &[HttpEgress], &[HttpEgress]),
        Duration::from_secs(30),
    );
    c.egress = Some(Arc::new(
        Egress::parse(&[format!("127.0.0.1:{port}")], &["127.0.0.1".into()]).unwrap(),
    ));
    let (h, mut ends) = Harness::start(vec![c]);
    let s = ends.remove(0);
    hello(&s, "p");
    let args = format!(r#"{{"host":"127.0.0.1","port":{port},"timeout_ms":30000}}"#);
    send(&s, &call(1, "net.dial", &args));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        h.log.decisions("p", "net.dial").is_empty(),
        "the dial ended early"
    );
    let log = h.log.clone();
    let t0 = Instant::now();
    drop(h);
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the stop waited {took:?} for the dial"
    );
    assert_eq!(log.decisions("p", "net.dial"), vec![Decision::Error]);
    let reason = &log.reasons("p", "net.dial")[0];
    assert!(
        reason.starts_with("unavailable: warden is stopping; connecting to 127.0.0.1:")
            && reason.ends_with("was abandoned (not delivered)"),
        "{reason}"
    );
}

/// One plugin dialling a host that never answers holds at most its share of
/// the I/O threads: another plugin's fs.open and net.dial go on meanwhile.
#[test]
fn one_plugins_hanging_dials_do_not_hold_up_anothers_io() {
    hanging_dials_do_not_hold_up_anothers_io(1);
}

/// Nor do three such plugins, though together they could hold more than the
/// I/O threads warden starts with: more threads start for the others.
#[test]
fn several_plugins_hanging_dials_do_not_hold_up_anothers_io() {
    hanging_dials_do_not_hold_up_anothers_io(3);
}

/// `slow` plugins each make 4 dials that hang (1 s call timeout); meanwhile a
/// further plugin's fs.open and net.dial must each be answered at once.
fn hanging_dials_do_not_hold_up_anothers_io(slow: usize) {
    use warden::broker::egress::Egress;
    use warden::broker::files::FileRoot;
    let (port, _l, _held) = blackhole();
    let good = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let good_port = good.local_addr().unwrap().port();
    let egress = |p: u16| {
        Some(Arc::new(
            Egress::parse(&[format!("127.0.0.1:{p}")], &["127.0.0.1".into()]).unwrap(),
        ))
    };
    let mut plugins: Vec<PluginContext> = (0..slow)
        .map(|i| {
            let id = format!("slow{i}");
            let mut c = with_timeout(
                ctx(&id, &[HttpEgress], &[HttpEgress]),
                Duration::from_secs(1),
            );
            c.egress = egress(port);
            c
        })
        .collect();
    let data = tempfile::tempdir().unwrap();
    let root = FileRoot::prepare(data.path(), "other", 1 << 20, None).unwrap();
    std::fs::write(root.path.join("a"), "A").unwrap();
    let mut other = ctx(
        "other",
        &[HttpEgress, StaticRead],
        &[HttpEgress, StaticRead],
    );
    other.egress = egress(good_port);
    other.files = Some(Arc::new(root));
    plugins.push(other);
    let (_h, mut socks) = Harness::start(plugins);
    let other = connect(socks.pop().unwrap(), "other");
    let mut dials = Vec::new();
    for (i, sock) in socks.into_iter().enumerate() {
        let s = Arc::new(connect(sock, &format!("slow{i}")));
        for _ in 0..4 {
            let s = Arc::clone(&s);
            dials.push(std::thread::spawn(move || {
                s.dial("127.0.0.1", port).map(drop)
            }));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let opened = other.open("a", warden_plugin::OpenFlags::READ).map(drop);
    let dialled = other.dial("127.0.0.1", good_port).map(drop);
    let took = t0.elapsed();
    assert!(opened.is_ok() && dialled.is_ok(), "{opened:?} {dialled:?}");
    assert!(took < Duration::from_millis(500), "held up for {took:?}");
    for d in dials {
        let _ = d.join();
    }
}

// ---- audit fields of dials that time out ----------------------------------------

/// Every dial is one audit event whose `extra` names `host` and `port`
/// (docs/protocol.md, `net.dial`, Audit). A dial that waits for an I/O thread
/// behind the plugin's own two hanging dials until its call times out is
/// audited by the broker's deadline (or as "timed out before its turn"), and
/// that event must still say where the dial was to go.
#[test]
fn a_dial_that_times_out_waiting_for_its_turn_is_audited_with_its_destination() {
    use warden::broker::egress::Egress;
    let (port, _l, _held) = blackhole();
    let mut c = with_timeout(
        ctx("p", &[HttpEgress], &[HttpEgress]),
        Duration::from_secs(1),
    );
    c.egress = Some(Arc::new(
        Egress::parse(&[format!("127.0.0.1:{port}")], &["127.0.0.1".into()]).unwrap(),
    ));
    let (h, ends) = Harness::start(vec![c]);
    let s = &ends[0];
    hello(s, "p");
    // Two dials hold the plugin's two I/O places until the call deadline; the
    // third waits behind them for all of its call's time.
    let args = format!(r#"{{"host":"127.0.0.1","port":{port},"timeout_ms":1000}}"#);
    for id in 1..=3 {
        send(s, &call(id, "net.dial", &args));
    }
    for _ in 1..=3 {
        let m = recv(s).unwrap();
        assert_eq!(m["error"]["code"], "timeout", "{m}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let extras: Vec<_> = h
        .log
        .1
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.0 == "p" && e.1 == "net.dial")
        .map(|e| e.2.clone())
        .collect();
    assert_eq!(extras.len(), 3, "one event per dial: {extras:?}");
    for e in &extras {
        let host = e.as_ref().and_then(|m| m.get("host"));
        let p = e.as_ref().and_then(|m| m.get("port"));
        assert!(
            host == Some(&json!("127.0.0.1")) && p == Some(&json!(port)),
            "a net.dial audit event without host/port: {extras:?}"
        );
    }
}

// ---- name resolutions abandoned by one plugin -------------------------------------

/// Runs `f` on a thread of its own in a private mount namespace whose
/// /etc/hosts, /etc/nsswitch.conf and /etc/resolv.conf are the files in `etc`;
/// threads it starts (the broker's, the I/O threads, the resolvers) share it.
fn with_own_resolver<T: Send + 'static>(
    etc: &std::path::Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let etc = etc.to_owned();
    std::thread::spawn(move || {
        use std::ffi::CString;
        // SAFETY: unshare(2) and mount(2) with valid, NUL-terminated strings;
        // they affect only this thread's (new) mount namespace.
        unsafe {
            assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0, "unshare(CLONE_NEWNS)");
            let root = CString::new("/").unwrap();
            let r = libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            );
            assert_eq!(r, 0, "making / private");
            for name in ["hosts", "nsswitch.conf", "resolv.conf"] {
                let src = CString::new(etc.join(name).to_str().unwrap()).unwrap();
                let dst = CString::new(format!("/etc/{name}")).unwrap();
                let r = libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                );
                assert_eq!(r, 0, "binding /etc/{name}");
            }
        }
        f()
    })
    .join()
    .unwrap()
}

/// One plugin whose allowed names resolve slowly (its own DNS zone does not
/// answer) gives up on each dial quickly; the resolutions go on in the
/// background and held warden's resolver places, which all plugins shared, so
/// another plugin's dial of a name that resolves at once was refused. Each
/// plugin now has a share of its own.
#[test]
fn one_plugins_abandoned_resolutions_do_not_refuse_anothers_dials() {
    use warden::broker::egress::Egress;
    // A name server that never answers.
    let dns = std::net::UdpSocket::bind("127.73.91.17:53").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().to_owned();
    std::fs::write(etc.join("hosts"), "127.0.0.1 localhost fine.test\n").unwrap();
    std::fs::write(etc.join("nsswitch.conf"), "hosts: files dns\n").unwrap();
    std::fs::write(
        etc.join("resolv.conf"),
        "nameserver 127.73.91.17\noptions timeout:4 attempts:1\n",
    )
    .unwrap();
    let good = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let good_port = good.local_addr().unwrap().port();
    let result = with_own_resolver(&etc, move || {
        let mut slow = ctx("slow", &[HttpEgress], &[HttpEgress]);
        slow.egress = Some(Arc::new(
            Egress::parse(&["*.slow.test:443".into()], &[]).unwrap(),
        ));
        let mut other = ctx("other", &[HttpEgress], &[HttpEgress]);
        other.egress = Some(Arc::new(
            Egress::parse(&[format!("fine.test:{good_port}")], &["127.0.0.1".into()]).unwrap(),
        ));
        let (_h, mut socks) = Harness::start(vec![slow, other]);
        let other = connect(socks.pop().unwrap(), "other");
        let slow = connect(socks.pop().unwrap(), "slow");
        // Each given up after 20 ms; once its own resolutions still running
        // reach its share, the slow plugin's further dials are refused.
        let mut limited = 0;
        for i in 0..16 {
            let r = slow.dial_timeout(&format!("r{i}.slow.test"), 443, Duration::from_millis(20));
            match r {
                Err(Error::Timeout(_)) => {}
                Err(Error::RateLimited(m)) if m.contains("of this plugin") => limited += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(limited > 0, "the slow plugin was never held to its share");
        other.dial("fine.test", good_port).map(drop)
    });
    drop(dns);
    assert!(
        result.is_ok(),
        "another plugin's dial of a name that resolves at once: {result:?}"
    );
}

/// fs.open is reached by static:read or static:write: a denial says so (it
/// named static:read alone, to a plugin that had declared static:write).
#[test]
fn an_fs_open_denial_names_both_capabilities() {
    let (_h, ends) = Harness::start(vec![ctx("p", &[StaticWrite], &[])]);
    let s = &ends[0];
    hello(s, "p");
    send(s, &call(1, "fs.open", r#"{"path":"a","flags":["read"]}"#));
    let m = recv(s).unwrap();
    assert_eq!(m["error"]["code"], "denied", "{m}");
    let text = m["error"]["message"].as_str().unwrap();
    assert!(
        text.starts_with("fs.open needs static:read or static:write, which the manifest declares"),
        "{text}"
    );
}

/// Every KV error names what it is about: a put refused for quota names its
/// key, and so does a database failure, in the reply and in the audit record.
/// The quota refusal said only "kv quota exceeded: 2 keys ...", and a failed
/// write only "state database: no such table: kv": with many calls in flight,
/// or reading the audit log, nothing said which key. The database's host path
/// is not named: the plugin reads the message too.
#[test]
fn kv_errors_name_the_key() {
    let mut c = ctx("p", &[KvRead, KvWrite], &[KvRead, KvWrite]);
    c.kv_quota = Quota {
        max_keys: 1,
        max_bytes: 1000,
    };
    let (h, ends) = Harness::start(vec![c]);
    let s = &ends[0];
    hello(s, "p");
    send(s, &call(1, "kv.put", r#"{"key":"first","value":"v"}"#));
    assert!(recv(s).unwrap()["ok"].is_object());
    send(s, &call(2, "kv.put", r#"{"key":"second","value":"v"}"#));
    let m = recv(s).unwrap();
    assert_eq!(m["error"]["code"], "denied", "{m}");
    let msg = m["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("quota") && msg.contains(r#""second""#),
        "{msg}"
    );

    // A write the database fails: its table is gone.
    h.store
        .connect()
        .unwrap()
        .execute_batch("DROP TABLE kv")
        .unwrap();
    send(s, &call(3, "kv.delete", r#"{"key":"first"}"#));
    let m = recv(s).unwrap();
    assert_eq!(m["error"]["code"], "internal", "{m}");
    let msg = m["error"]["message"].as_str().unwrap();
    // The key, not the database's host path: the plugin reads this too.
    let db = h.store.path().display().to_string();
    assert!(msg.contains(r#""first""#) && !msg.contains(&db), "{msg}");
    send(s, &call(4, "kv.get", r#"{"key":"third"}"#));
    let msg = recv(s).unwrap()["error"]["message"].to_string();
    assert!(msg.contains(r#"third"#) && !msg.contains(&db), "{msg}");
    let reasons = h.log.reasons("p", "kv.put");
    assert!(reasons[1].contains(r#""second""#), "{reasons:?}");
}
