//! Verify throughput against the same machine's raw sha256 throughput.
//!
//! For 1, 10 and 100 MiB artifacts: the median time of `bundle::verify` (open,
//! signature check, copy into a sealed memfd while hashing, digest compare) versus
//! the median time of hashing the same bytes already in memory with the same sha256
//! implementation. Target: verify >= 0.8x raw sha256.
//!
//! Run: `cargo bench --bench verify`

use std::fs;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use warden::bundle::minisign::SecretKey;
use warden::bundle::{verify, TrustStore};

const TARGET: f64 = 0.8;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sk = SecretKey::generate().expect("key");
    fs::create_dir_all(tmp.path().join("trust/bench")).unwrap();
    fs::write(tmp.path().join("trust/bench/k.pub"), sk.public().to_file()).unwrap();
    let trust = TrustStore::load(&tmp.path().join("trust")).unwrap();

    println!("verify throughput vs raw sha256 (target: verify >= {TARGET}x raw)");
    println!("    size    verify MB/s    sha256 MB/s   ratio  target");
    let mut all_met = true;
    for mib in [1usize, 10, 100] {
        let len = mib * 1024 * 1024;
        // Deterministic, incompressible-looking bytes.
        let mut data = vec![0u8; len];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for chunk in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let dir = tmp.path().join(format!("b{mib}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("artifact"), &data).unwrap();
        let sha: String = Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let manifest = format!(
            r#"{{"id":"bench","version":"1.0.0","publisher":"bench","min_core":"0.1.0","artifact":{{"sha256":"{sha}"}},"capabilities":[]}}"#
        );
        fs::write(dir.join("manifest.json"), &manifest).unwrap();
        fs::write(
            dir.join("manifest.json.minisig"),
            sk.sign(manifest.as_bytes(), "bench").to_file(),
        )
        .unwrap();

        let runs = if mib == 100 { 7 } else { 21 };
        // Warm the page cache and check it verifies at all.
        verify(&dir, &trust).expect("bench bundle verifies");
        let v = median(
            (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    let b = verify(&dir, &trust).unwrap();
                    let d = t.elapsed();
                    drop(b);
                    d
                })
                .collect(),
        );
        let h = median(
            (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(Sha256::digest(std::hint::black_box(&data)));
                    t.elapsed()
                })
                .collect(),
        );
        let mbps = |d: Duration| len as f64 / (1024.0 * 1024.0) / d.as_secs_f64();
        let ratio = mbps(v) / mbps(h);
        let met = ratio >= TARGET;
        all_met &= met;
        println!(
            "{:>5} MiB {:>14.1} {:>14.1} {:>7.3}  {}",
            mib,
            mbps(v),
            mbps(h),
            ratio,
            if met { "met" } else { "MISSED" }
        );
    }
    println!(
        "overall: {}",
        if all_met {
            "target met"
        } else {
            "target MISSED"
        }
    );
}
