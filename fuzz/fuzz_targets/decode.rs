//! Fuzzes the broker's message decoder: nothing may panic, the plain-call fast
//! path must agree with the general decoder, and a decoded call's arguments are
//! fed to each op's strict argument validation. The body is
//! `warden::broker::fuzz::one`, which the ordinary tests also run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| warden::broker::fuzz::one(data));
