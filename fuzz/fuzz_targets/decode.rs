//! Fuzzes the broker's message decoder and every op's argument validation with
//! arbitrary datagrams: nothing may panic, and a decoded call's arguments are fed to
//! each handler's strict argument decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::broker::handlers::{self, Caller};
use warden::broker::ops::OPS;
use warden::broker::protocol::{decode, Incoming};

fuzz_target!(|data: &[u8]| {
    if let Ok(Incoming::Call { args, .. }) = decode(data) {
        let recent = std::collections::VecDeque::new();
        let caller = Caller {
            id: "fuzz",
            kv_quota: Default::default(),
            stats: serde_json::Value::Null,
            recent: &recent,
        };
        for op in OPS {
            // log.write prints; skip it to keep the fuzzer's output readable.
            if op.name != "log.write" {
                let _ = handlers::handle(op.provider, args, &caller);
            }
        }
    }
});
