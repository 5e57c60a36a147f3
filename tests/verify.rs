//! `warden keygen/pack/sign/verify` end to end: every rejection code with a really
//! tampered bundle, and minisign interoperability in both directions.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use warden::bundle::minisign::SecretKey;

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

const TEMPLATE: &str = r#"{
  "id": "echo",
  "version": "1.0.0",
  "publisher": "acme",
  "min_core": "0.1.0",
  "artifact": {"sha256": "PLACEHOLDER"},
  "capabilities": ["kv:read", "log:write"]
}
"#;

struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    /// Runs stock minisign in the fixture's directory; it must succeed.
    fn minisign<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(&self, args: &[S]) {
        let out = Command::new("minisign")
            .args(args)
            .current_dir(self.tmp.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "minisign {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A key pinned for `acme`, and a bundle packed with it from `/bin/true`.
    fn new() -> Fixture {
        let f = Fixture {
            tmp: tempfile::tempdir().unwrap(),
        };
        ok(&f.warden(&["keygen", "--out", f.p("acme").to_str().unwrap()]));
        fs::create_dir_all(f.p("trust/acme")).unwrap();
        fs::copy(f.p("acme.pub"), f.p("trust/acme/acme.pub")).unwrap();
        fs::write(f.p("template.json"), TEMPLATE).unwrap();
        fs::copy("/bin/true", f.p("true")).unwrap();
        f.pack("template.json", "bundle", "acme.key");
        f
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn warden(&self, args: &[&str]) -> Output {
        Command::new(WARDEN)
            .args(args)
            .current_dir(self.tmp.path())
            .output()
            .unwrap()
    }

    fn pack(&self, template: &str, out: &str, key: &str) {
        ok(&self.warden(&[
            "pack",
            "--manifest",
            template,
            "--artifact",
            "true",
            "--key",
            key,
            "--out",
            out,
        ]));
    }

    fn verify(&self) -> Output {
        self.warden(&["verify", "bundle", "--trust", "trust"])
    }

    /// Verification fails with exactly one stderr line `rejected: <code>: ...`.
    fn rejected(&self, code: &str) -> String {
        let out = self.verify();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "stderr: {err}");
        assert!(out.stdout.is_empty());
        assert_eq!(err.lines().count(), 1, "one line expected: {err}");
        assert!(
            err.starts_with(&format!("rejected: {code}: ")),
            "want {code}, got: {err}"
        );
        err
    }

    /// Rewrites the bundle's manifest and re-signs its exact bytes with `key`, valid
    /// or not (`warden sign` refuses invalid manifests, a hostile publisher would not).
    fn resign_with(&self, edit: impl Fn(&str) -> String, key: &str) {
        let path = self.p("bundle/manifest.json");
        let text = edit(&fs::read_to_string(&path).unwrap());
        fs::write(&path, &text).unwrap();
        let sk = SecretKey::parse(&fs::read_to_string(self.p(key)).unwrap()).unwrap();
        let sig = sk.sign(text.as_bytes(), "timestamp:0\tfile:manifest.json\thashed");
        fs::write(self.p("bundle/manifest.json.minisig"), sig.to_file()).unwrap();
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

/// Decodes the base64 line `line` of a signature file, flips one byte at `offset`
/// in the decoded bytes, and writes it back, so the file stays well-formed.
fn flip_signature_byte(path: &Path, line: usize, offset: usize) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut raw = b64.decode(&lines[line]).unwrap();
    raw[offset] ^= 0x01;
    lines[line] = b64.encode(raw);
    fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn minisign_available() -> bool {
    let found = Command::new("minisign").arg("-v").output().is_ok();
    if !found {
        assert!(
            std::env::var("WARDEN_TEST_STRICT").as_deref() != Ok("1"),
            "minisign is not installed (Debian package `minisign`; scripts/test.sh installs it)"
        );
        eprintln!("skipped: minisign is not installed (Debian package `minisign`)");
    }
    found
}

#[test]
fn a_packed_bundle_verifies_with_one_line() {
    let f = Fixture::new();
    let out = ok(&f.verify());
    let sha = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(fs::read("/bin/true").unwrap());
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let key = fs::read_to_string(f.p("acme.pub")).unwrap();
    let key_id = key
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        out,
        format!("verified echo 1.0.0 publisher=acme key={key_id} sha256={sha}\n")
    );
    let manifest = fs::read_to_string(f.p("bundle/manifest.json")).unwrap();
    assert!(manifest.contains(&sha) && !manifest.contains("PLACEHOLDER"));
    let mode = fs::metadata(f.p("bundle/artifact"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        fs::metadata(f.p("acme.key")).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// A template that says a key twice is refused: a reader would see the first,
/// the signed manifest would carry the last.
#[test]
fn pack_refuses_a_template_with_a_key_twice() {
    let f = Fixture::new();
    fs::write(
        f.p("dup.json"),
        r#"{"id":"echo","version":"1.0.0","publisher":"acme","min_core":"0.1.0",
"capabilities":["log:write"],
"capabilities":["log:write","node:admin"]}"#,
    )
    .unwrap();
    let out = f.warden(&[
        "pack",
        "--manifest",
        "dup.json",
        "--artifact",
        "true",
        "--key",
        "acme.key",
        "--out",
        "dup-bundle",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("\"capabilities\" appears twice"), "{err}");
    assert!(!f.p("dup-bundle").exists());
}

/// A pack or keygen that fails part-way leaves what was there as it was: no
/// bundle whose manifest pins another artifact, no key without its public half.
/// (The failure is forced with a directory where a temporary file would go.)
#[test]
fn a_failed_pack_or_keygen_replaces_nothing() {
    let f = Fixture::new();
    ok(&f.verify());
    fs::create_dir_all(f.p("bundle/manifest.json.tmp/x")).unwrap();
    fs::copy("/bin/false", f.p("false")).unwrap();
    let out = f.warden(&[
        "pack",
        "--manifest",
        "template.json",
        "--artifact",
        "false",
        "--key",
        "acme.key",
        "--out",
        "bundle",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("manifest.json.tmp"), "{err}");
    fs::remove_dir_all(f.p("bundle/manifest.json.tmp")).unwrap();
    ok(&f.verify());

    let before = fs::read_to_string(f.p("acme.key")).unwrap();
    fs::create_dir_all(f.p("acme.pub.tmp/x")).unwrap();
    let out = f.warden(&["keygen", "--out", "acme", "--force"]);
    assert!(!out.status.success());
    assert_eq!(fs::read_to_string(f.p("acme.key")).unwrap(), before);
    fs::remove_dir_all(f.p("acme.pub.tmp")).unwrap();

    // A rename that fails after another succeeded is undone as well.
    let public = fs::read_to_string(f.p("acme.pub")).unwrap();
    fs::remove_file(f.p("acme.pub")).unwrap();
    fs::create_dir_all(f.p("acme.pub/x")).unwrap();
    let out = f.warden(&["keygen", "--out", "acme", "--force"]);
    assert!(!out.status.success());
    assert_eq!(fs::read_to_string(f.p("acme.key")).unwrap(), before);
    fs::remove_dir_all(f.p("acme.pub")).unwrap();
    fs::write(f.p("acme.pub"), public).unwrap();
    let names: Vec<String> = fs::read_dir(f.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".tmp") || n.contains("warden-old")),
        "{names:?}"
    );

    // An operator's own `acme.key.old` is not warden's to touch.
    fs::write(f.p("acme.key.old"), "last year's key\n").unwrap();
    ok(&f.warden(&["keygen", "--out", "acme", "--force"]));
    assert_eq!(
        fs::read_to_string(f.p("acme.key.old")).unwrap(),
        "last year's key\n"
    );
}

#[test]
fn pack_fills_in_a_missing_artifact_digest() {
    let f = Fixture::new();
    let without = TEMPLATE.replace("  \"artifact\": {\"sha256\": \"PLACEHOLDER\"},\n", "");
    fs::write(f.p("bare.json"), without).unwrap();
    f.pack("bare.json", "bundle", "acme.key");
    ok(&f.verify());
}

#[test]
fn flipped_artifact_byte_is_digest_mismatch() {
    let f = Fixture::new();
    flip_byte(&f.p("bundle/artifact"), 1000);
    let err = f.rejected("digest_mismatch");
    assert!(err.contains("bundle/artifact: sha256 is "), "{err}");
}

#[test]
fn flipped_manifest_byte_is_bad_signature() {
    let f = Fixture::new();
    let path = f.p("bundle/manifest.json");
    let text = fs::read_to_string(&path).unwrap();
    flip_byte(&path, text.find("1.0.0").unwrap() + 4); // 1.0.0 -> 1.0.1
    f.rejected("bad_signature");
}

#[test]
fn flipped_signature_byte_is_bad_signature() {
    let f = Fixture::new();
    flip_signature_byte(&f.p("bundle/manifest.json.minisig"), 1, 20);
    f.rejected("bad_signature");
}

#[test]
fn edited_trusted_comment_is_bad_global_signature() {
    let f = Fixture::new();
    let path = f.p("bundle/manifest.json.minisig");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(
        &path,
        text.replace(
            "trusted comment: timestamp:",
            "trusted comment: timestamp:9",
        ),
    )
    .unwrap();
    f.rejected("bad_global_signature");
    // and a flipped byte of the global signature itself
    let f = Fixture::new();
    flip_signature_byte(&f.p("bundle/manifest.json.minisig"), 3, 5);
    f.rejected("bad_global_signature");
}

#[test]
fn artifact_swapped_for_a_symlink_is_bad_artifact() {
    let f = Fixture::new();
    fs::rename(f.p("bundle/artifact"), f.p("real-artifact")).unwrap();
    std::os::unix::fs::symlink(f.p("real-artifact"), f.p("bundle/artifact")).unwrap();
    let err = f.rejected("bad_artifact");
    assert!(err.contains("is a symbolic link"), "{err}");
}

#[test]
fn missing_directory_or_fifo_artifact_is_bad_artifact() {
    let f = Fixture::new();
    fs::remove_file(f.p("bundle/artifact")).unwrap();
    assert!(f.rejected("bad_artifact").contains("is missing"));
    fs::create_dir(f.p("bundle/artifact")).unwrap();
    assert!(f.rejected("bad_artifact").contains("not a regular file"));
    fs::remove_dir(f.p("bundle/artifact")).unwrap();
    let c = std::ffi::CString::new(f.p("bundle/artifact").to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    assert!(f.rejected("bad_artifact").contains("not a regular file"));
}

#[test]
fn unpinned_key_is_key_mismatch() {
    let f = Fixture::new();
    ok(&f.warden(&["keygen", "--out", "rogue"]));
    f.resign_with(str::to_owned, "rogue.key");
    let err = f.rejected("key_mismatch");
    assert!(err.contains("not pinned for publisher acme"), "{err}");
}

/// A manifest nobody vouches for (signed by a key nobody pinned) cannot put
/// escape sequences or extra lines into the rejection: it stays one line.
#[test]
fn an_unauthenticated_manifest_cannot_drive_the_terminal() {
    let f = Fixture::new();
    ok(&f.warden(&["keygen", "--out", "rogue"]));
    f.resign_with(
        |t| {
            t.replacen(
                '{',
                "{\"\\u001b]0;owned\\u0007\\u001b[2J\\nverified echo 1.0.0\": 1,",
                1,
            )
        },
        "rogue.key",
    );
    let out = f.verify();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(!err.contains(['\u{1b}', '\u{7}']), "{err:?}");
}

/// With a key nobody pinned, what is wrong with the unverified manifest does
/// not decide the refusal: the key does (key_mismatch, not unknown_capability).
#[test]
fn an_unpinned_key_is_refused_before_the_manifest_is_judged() {
    let f = Fixture::new();
    ok(&f.warden(&["keygen", "--out", "rogue"]));
    f.resign_with(|t| t.replace("\"log:write\"", "\"root:all\""), "rogue.key");
    let err = f.rejected("key_mismatch");
    assert!(err.contains("not pinned for publisher acme"), "{err}");
}

#[test]
fn a_missing_manifest_says_so_without_a_position() {
    let f = Fixture::new();
    fs::remove_file(f.p("bundle/manifest.json")).unwrap();
    let err = f.rejected("bad_manifest");
    assert!(err.contains("manifest.json: is missing"), "{err}");
}

#[test]
fn another_publishers_key_is_key_mismatch() {
    let f = Fixture::new();
    ok(&f.warden(&["keygen", "--out", "other"]));
    fs::create_dir_all(f.p("trust/other")).unwrap();
    fs::copy(f.p("other.pub"), f.p("trust/other/k.pub")).unwrap();
    f.resign_with(str::to_owned, "other.key");
    let err = f.rejected("key_mismatch");
    assert!(err.contains("(it is pinned for other)"), "{err}");
}

/// docs/manifest.md orders key_mismatch before unknown_capability: with a key
/// pinned for another publisher, the key is the refusal (the unknown capability
/// was).
#[test]
fn another_publishers_key_is_refused_before_capabilities_are_judged() {
    let f = Fixture::new();
    ok(&f.warden(&["keygen", "--out", "other"]));
    fs::create_dir_all(f.p("trust/other")).unwrap();
    fs::copy(f.p("other.pub"), f.p("trust/other/k.pub")).unwrap();
    f.resign_with(|t| t.replace("\"log:write\"", "\"root:all\""), "other.key");
    let err = f.rejected("key_mismatch");
    assert!(err.contains("(it is pinned for other)"), "{err}");
}

#[test]
fn unknown_publisher() {
    let f = Fixture::new();
    f.resign_with(|m| m.replace("\"acme\"", "\"nobody\""), "acme.key");
    let err = f.rejected("unknown_publisher");
    assert!(err.contains("publisher nobody of echo"), "{err}");
}

#[test]
fn revoked_key_is_refused_even_when_pinned() {
    let f = Fixture::new();
    let key = fs::read_to_string(f.p("acme.pub")).unwrap();
    let key_id = key
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    fs::write(
        f.p("trust/revoked"),
        format!("# leaked 2026-11\n{key_id}\n"),
    )
    .unwrap();
    let err = f.rejected("revoked_key");
    assert!(err.contains(&key_id), "{err}");
    // docs/manifest.md's order: a bad signature comes before the revoked key.
    let path = f.p("bundle/manifest.json");
    let text = fs::read_to_string(&path).unwrap();
    flip_byte(&path, text.find("1.0.0").unwrap() + 4);
    f.rejected("bad_signature");
}

#[test]
fn rotation_keeps_old_and_new_keys_valid() {
    let f = Fixture::new();
    ok(&f.warden(&["keygen", "--out", "acme2"]));
    fs::copy(f.p("acme2.pub"), f.p("trust/acme/acme2.pub")).unwrap();
    ok(&f.verify());
    f.resign_with(str::to_owned, "acme2.key");
    ok(&f.verify());
}

#[test]
fn unknown_capability_is_refused_by_name() {
    let f = Fixture::new();
    f.resign_with(
        |m| m.replace("\"log:write\"", "\"root:everything\""),
        "acme.key",
    );
    let err = f.rejected("unknown_capability");
    assert!(err.contains("\"root:everything\""), "{err}");
}

#[test]
fn min_core_newer_than_warden_is_refused() {
    let f = Fixture::new();
    f.resign_with(
        |m| m.replace("\"min_core\": \"0.1.0\"", "\"min_core\": \"99.0.0\""),
        "acme.key",
    );
    let err = f.rejected("min_core_too_new");
    assert!(err.contains("needs warden >= 99.0.0"), "{err}");
}

#[test]
fn malformed_manifest_is_bad_manifest_with_line_and_column() {
    let f = Fixture::new();
    let edit = |m: &str| m.replace("\"capabilities\"", "\"colour\": 1,\n  \"capabilities\"");
    // `warden sign` refuses to sign it ...
    let path = f.p("bundle/manifest.json");
    let bad = edit(&fs::read_to_string(&path).unwrap());
    fs::write(&path, &bad).unwrap();
    let out = f.warden(&["sign", "bundle", "--key", "acme.key"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `colour`"));
    // ... and a publisher that signs it anyway is still refused, with the position.
    f.resign_with(str::to_owned, "acme.key");
    let err = f.rejected("bad_manifest");
    let line = bad.lines().position(|l| l.contains("colour")).unwrap() + 1;
    assert!(
        err.contains(&format!("line {line} column 10: unknown field `colour`")),
        "{err}"
    );
}

#[test]
fn manifest_that_is_not_json_is_bad_manifest() {
    let f = Fixture::new();
    f.resign_with(|m| m.replacen('{', "{{", 1), "acme.key");
    let err = f.rejected("bad_manifest");
    assert!(err.contains("line 1 column 2"), "{err}");
}

#[test]
fn usage_errors_exit_2_and_every_command_has_help() {
    let f = Fixture::new();
    assert_eq!(f.warden(&["verify", "bundle"]).status.code(), Some(2));
    assert_eq!(f.warden(&["frobnicate"]).status.code(), Some(2));
    for cmd in ["keygen", "pack", "sign", "verify"] {
        let help = ok(&f.warden(&[cmd, "--help"]));
        assert!(help.len() > 200, "{cmd} --help is too thin: {help}");
    }
}

#[test]
fn keygen_refuses_to_overwrite() {
    let f = Fixture::new();
    let out = f.warden(&["keygen", "--out", "acme"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists; pass --force"));
}

/// A prefix that is a directory (`--out keys/`) is refused with an example:
/// it wrote keys/.key and keys/.pub, hidden files a trust directory skips.
#[test]
fn keygen_refuses_a_directory_as_prefix() {
    let f = Fixture::new();
    fs::create_dir_all(f.p("keys")).unwrap();
    for out in ["keys/", "keys", "newdir/"] {
        let o = f.warden(&["keygen", "--out", out]);
        assert_eq!(o.status.code(), Some(1), "{out}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("give a path prefix with a name"),
            "{out}: {err}"
        );
    }
    assert!(!f.p("keys/.key").exists() && !f.p("keys/.pub").exists());
    assert!(!f.p("newdir").exists());
}

#[test]
fn broken_trust_store_names_the_file() {
    let f = Fixture::new();
    fs::write(f.p("trust/acme/bad.pub"), "not a key\n").unwrap();
    let out = f.verify();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("warden: trust store: ") && err.contains("bad.pub"),
        "{err}"
    );
}

#[test]
fn stock_minisign_accepts_what_warden_signs() {
    let f = Fixture::new();
    if !minisign_available() {
        return;
    }
    let out = Command::new("minisign")
        .args(["-V", "-p", "acme.pub", "-m", "bundle/manifest.json"])
        .current_dir(f.tmp.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Signature and comment signature verified"),
        "{text}"
    );
    assert!(text.contains("plugin:echo@1.0.0"), "{text}");
}

#[test]
fn warden_accepts_what_stock_minisign_signs() {
    let f = Fixture::new();
    if !minisign_available() {
        return;
    }
    // A key made by minisign itself (unencrypted), pinned for acme.
    f.minisign(&["-G", "-W", "-p", "mini.pub", "-s", "mini.key"]);
    fs::copy(f.p("mini.pub"), f.p("trust/acme/mini.pub")).unwrap();
    // Default (prehashed ED) signature.
    f.minisign(&[
        "-S",
        "-s",
        "mini.key",
        "-m",
        "bundle/manifest.json",
        "-t",
        "signed by minisign",
    ]);
    ok(&f.verify());
    // Legacy (plain Ed) signature.
    f.minisign(&["-S", "-l", "-s", "mini.key", "-m", "bundle/manifest.json"]);
    ok(&f.verify());
    // warden can sign with a minisign-made key too.
    ok(&f.warden(&["sign", "bundle", "--key", "mini.key"]));
    ok(&f.verify());
    // and a tampered trusted comment from minisign's signature is still caught.
    f.minisign(&[
        "-S",
        "-s",
        "mini.key",
        "-m",
        "bundle/manifest.json",
        "-t",
        "original",
    ]);
    let sig = f.p("bundle/manifest.json.minisig");
    let text = fs::read_to_string(&sig).unwrap();
    fs::write(
        &sig,
        text.replace("trusted comment: original", "trusted comment: forged"),
    )
    .unwrap();
    f.rejected("bad_global_signature");
}

/// The README's first publisher command, `warden keygen --out keys/acme`, works
/// in a fresh directory: keygen makes `keys/` as `pack --out` makes its own (it
/// failed, naming its internal temp file `keys/acme.key.tmp`).
#[test]
fn readme_keygen_into_a_fresh_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(WARDEN)
        .args(["keygen", "--out", "keys/acme"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !err.contains(".tmp"),
        "the error names an internal temp file: {err}"
    );
    assert!(
        out.status.success(),
        "README `warden keygen --out keys/acme` failed: {err}"
    );
    assert!(tmp.path().join("keys/acme.key").exists());
    assert!(tmp.path().join("keys/acme.pub").exists());
}

/// A template error is placed by the key it is about, not by a line and column of
/// the pretty-printed text `pack` generates from the template (which the author
/// never sees): a one-line template was told `line 11 column 3`.
#[test]
fn pack_error_names_the_key_not_a_position_in_generated_text() {
    let f = Fixture::new();
    fs::write(
        f.p("one-line.json"),
        r#"{"id":"echo","version":"1.0.0","publisher":"acme","min_core":"0.1.0","capabilities":["kv:read"],"resources":{"memory_mb":999999}}"#,
    )
    .unwrap();
    let out = f.warden(&[
        "pack",
        "--manifest",
        "one-line.json",
        "--artifact",
        "true",
        "--key",
        "acme.key",
        "--out",
        "one-line-bundle",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("warden: one-line.json: "), "{err}");
    assert!(
        err.contains("resources.memory_mb: 999999 is outside the allowed range"),
        "{err}"
    );
    assert!(
        !err.contains("line 11"),
        "a position in text pack made: {err}"
    );
    assert!(!f.p("one-line-bundle").exists());
}

/// A signature that stock minisign makes and verifies, with a long trusted
/// comment (minisign takes up to about 4 KiB of it), verifies in warden too: the
/// signature file was refused as larger than 4096 bytes.
#[test]
fn minisign_signature_with_a_long_trusted_comment_verifies() {
    let f = Fixture::new();
    if !minisign_available() {
        return;
    }
    f.minisign(&["-G", "-W", "-p", "mini.pub", "-s", "mini.key"]);
    fs::copy(f.p("mini.pub"), f.p("trust/acme/mini.pub")).unwrap();
    let trusted = format!("plugin:echo@1.0.0 {}", "x".repeat(4000));
    let untrusted = "u".repeat(1000);
    f.minisign(&[
        "-S",
        "-s",
        "mini.key",
        "-m",
        "bundle/manifest.json",
        "-t",
        &trusted,
        "-c",
        &untrusted,
    ]);
    assert!(
        fs::metadata(f.p("bundle/manifest.json.minisig"))
            .unwrap()
            .len()
            > 4096
    );
    f.minisign(&["-V", "-p", "mini.pub", "-m", "bundle/manifest.json"]);
    ok(&f.verify());
}

/// A trusted comment that is not UTF-8 (minisign takes any bytes, `-t` in a
/// Latin-1 locale) is signed and verified by stock minisign, and by warden too:
/// the signature file was refused as "cannot read: not UTF-8".
#[test]
fn minisign_trusted_comment_that_is_not_utf8_verifies() {
    use std::os::unix::ffi::OsStrExt;
    let f = Fixture::new();
    if !minisign_available() {
        return;
    }
    let os = |s: &str| std::ffi::OsStr::new(s).to_owned();
    f.minisign(&[
        &os("-G"),
        &os("-W"),
        &os("-p"),
        &os("mini.pub"),
        &os("-s"),
        &os("mini.key"),
    ]);
    fs::copy(f.p("mini.pub"), f.p("trust/acme/mini.pub")).unwrap();
    let latin1 = std::ffi::OsStr::from_bytes(b"built in caf\xe9");
    let sign = [
        &os("-S"),
        &os("-s"),
        &os("mini.key"),
        &os("-m"),
        &os("bundle/manifest.json"),
        &os("-t"),
        latin1,
        &os("-c"),
        latin1,
    ];
    f.minisign(&sign);
    f.minisign(&[
        &os("-V"),
        &os("-p"),
        &os("mini.pub"),
        &os("-m"),
        &os("bundle/manifest.json"),
    ]);
    ok(&f.verify());
    // Still bound to the signature: one byte of it changed is refused.
    let sig = f.p("bundle/manifest.json.minisig");
    let mut bytes = fs::read(&sig).unwrap();
    let at = bytes.windows(4).position(|w| w == b"caf\xe9").unwrap();
    let at = bytes[at + 1..]
        .windows(4)
        .position(|w| w == b"caf\xe9")
        .unwrap()
        + at
        + 1;
    bytes[at] = b'C';
    fs::write(&sig, bytes).unwrap();
    f.rejected("bad_global_signature");
}
