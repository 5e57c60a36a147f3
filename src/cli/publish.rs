//! The publisher's commands: `keygen`, `pack` and `sign`.
//!
//! Keys are minisign files (unencrypted secret key, so automation can sign), and
//! signatures are minisign signatures that the stock `minisign -V` accepts.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Args;

use super::Failure;
use crate::bundle::manifest::{Manifest, ManifestError, MAX_MANIFEST_BYTES};
use crate::bundle::minisign::{SecretKey, MAX_KEY_BYTES};
use crate::bundle::verify::read_artifact_file;
use crate::bundle::{ARTIFACT_FILE, MANIFEST_FILE, SIGNATURE_FILE};

/// Generate a publisher key pair.
///
/// Writes PREFIX.key (the secret key, mode 0600, unencrypted minisign format) and
/// PREFIX.pub (the public key in minisign format, to pin in an operator's trust
/// directory as <publisher>/<name>.pub), creating their directory (mode 0700) if
/// missing. Refuses to overwrite existing files unless --force is given.
#[derive(Args)]
pub struct KeygenArgs {
    /// Path prefix for the two files, e.g. `keys/acme` writes keys/acme.key and keys/acme.pub.
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
}

/// Build a complete signed bundle from a manifest template and an executable.
///
/// Copies the artifact into DIR/artifact (mode 0755), writes its sha256 into the
/// manifest's `artifact.sha256` (replacing any placeholder there), validates the
/// manifest, writes DIR/manifest.json and signs it into DIR/manifest.json.minisig.
#[derive(Args)]
pub struct PackArgs {
    /// The manifest template (JSON); `artifact.sha256` may be a placeholder or absent.
    #[arg(long, value_name = "FILE")]
    pub manifest: PathBuf,
    /// The plugin executable.
    #[arg(long, value_name = "FILE")]
    pub artifact: PathBuf,
    /// The publisher's secret key (from `warden keygen` or `minisign -G -W`).
    #[arg(long, value_name = "KEYFILE")]
    pub key: PathBuf,
    /// The bundle directory to write (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Sign an existing bundle's manifest as it stands.
///
/// Validates DIR/manifest.json and writes DIR/manifest.json.minisig. Use after editing
/// a manifest by hand; `pack` signs for you.
#[derive(Args)]
pub struct SignArgs {
    /// The bundle directory.
    pub dir: PathBuf,
    /// The publisher's secret key (from `warden keygen` or `minisign -G -W`).
    #[arg(long, value_name = "KEYFILE")]
    pub key: PathBuf,
}

pub fn keygen(a: KeygenArgs) -> Result<(), Failure> {
    // A prefix that names a directory (`--out keys/`) would write the hidden
    // files keys/.key and keys/.pub, which a trust directory skips.
    let name = a.out.file_name().map(|n| n.to_string_lossy());
    let dir_like = a.out.as_os_str().to_string_lossy().ends_with('/') || a.out.is_dir();
    if dir_like || name.as_deref().is_none_or(|n| n.starts_with('.')) {
        return Err(Failure::general(format_args!(
            "--out {}: give a path prefix with a name, e.g. {}/acme (writes acme.key and acme.pub there)",
            a.out.display(),
            a.out.display().to_string().trim_end_matches('/')
        )));
    }
    let key_path = with_suffix(&a.out, "key");
    let pub_path = with_suffix(&a.out, "pub");
    if !a.force {
        for p in [&key_path, &pub_path] {
            if p.symlink_metadata().is_ok() {
                return Err(Failure::general(format_args!(
                    "{} exists; pass --force to replace it",
                    p.display()
                )));
            }
        }
    }
    // The directory it goes in is made (0700: it holds a secret key), as `pack
    // --out` makes its own: `warden keygen --out keys/acme` in a fresh place.
    if let Some(dir) = key_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Failure::general(format_args!("{}: {e}", dir.display())))?;
    }
    let sk =
        SecretKey::generate().map_err(|e| Failure::general(format_args!("random source: {e}")))?;
    // Both written before either replaces anything: a failure leaves the old
    // pair as it was, never a key without its public half.
    let mut files = Staged::default();
    files.stage(&key_path, sk.to_file().as_bytes(), 0o600)?;
    files.stage(&pub_path, sk.public().to_file().as_bytes(), 0o644)?;
    if a.force {
        files.commit()?;
    } else {
        // A key file made since the check above is not replaced either.
        files.commit_new()?;
    }
    println!(
        "key {} written: {} (secret, keep private) and {} (pin this one)",
        sk.key_id,
        key_path.display(),
        pub_path.display()
    );
    Ok(())
}

pub fn pack(a: PackArgs) -> Result<(), Failure> {
    let sk = load_key(&a.key)?;
    let template = read_limited(&a.manifest, MAX_MANIFEST_BYTES)?;
    // A key said twice: whoever reads the template sees the first, the signed
    // manifest would carry the last.
    serde_json::from_slice::<NoDuplicateKeys>(&template)
        .map_err(|e| Failure::general(format_args!("{}: {e}", a.manifest.display())))?;
    let mut value: serde_json::Value = serde_json::from_slice(&template)
        .map_err(|e| Failure::general(format_args!("{}: {e}", a.manifest.display())))?;
    let (artifact, digest) = read_artifact_file(&a.artifact).map_err(|why| {
        Failure::general(format_args!("artifact {}: {why}", a.artifact.display()))
    })?;
    let obj = value.as_object_mut().ok_or_else(|| {
        Failure::general(format_args!(
            "{}: the manifest must be a JSON object",
            a.manifest.display()
        ))
    })?;
    let slot = obj
        .entry("artifact")
        .or_insert_with(|| serde_json::json!({}));
    let slot = slot.as_object_mut().ok_or_else(|| {
        Failure::general(format_args!(
            "{}: `artifact` must be an object",
            a.manifest.display()
        ))
    })?;
    slot.insert("sha256".into(), digest.to_string().into());
    let mut text = serde_json::to_string_pretty(&value).expect("a JSON value serializes");
    text.push('\n');
    let manifest = Manifest::parse(text.as_bytes()).map_err(|e| {
        // A line and column would be in the text generated above, not in the
        // template the author wrote: the message names the key instead.
        let why = match e {
            ManifestError::Syntax { msg, .. } => msg,
            e => e.to_string(),
        };
        Failure::general(format_args!(
            "{}: invalid manifest: {why}",
            a.manifest.display()
        ))
    })?;

    fs::create_dir_all(&a.out)
        .map_err(|e| Failure::general(format_args!("{}: {e}", a.out.display())))?;
    let in_out = |name: &std::ffi::CStr| a.out.join(name.to_str().expect("ASCII name"));
    // All three written before any replaces what is there: a failure leaves an
    // earlier bundle in the directory as it was.
    let sig = sk.sign(text.as_bytes(), &trusted_comment(&manifest));
    let mut files = Staged::default();
    files.stage(&in_out(ARTIFACT_FILE), &artifact, 0o755)?;
    files.stage(&in_out(MANIFEST_FILE), text.as_bytes(), 0o644)?;
    files.stage(&in_out(SIGNATURE_FILE), &sig.to_file(), 0o644)?;
    files.commit()?;
    println!(
        "packed {} {} into {} key={} sha256={}",
        manifest.id,
        manifest.version,
        a.out.display(),
        sk.key_id,
        digest
    );
    Ok(())
}

pub fn sign(a: SignArgs) -> Result<(), Failure> {
    let sk = load_key(&a.key)?;
    let path = a.dir.join(MANIFEST_FILE.to_str().expect("ASCII name"));
    let text = read_limited(&path, MAX_MANIFEST_BYTES)?;
    let manifest = Manifest::parse(&text)
        .map_err(|e| Failure::general(format_args!("{}: invalid manifest: {e}", path.display())))?;
    let sig = sk.sign(&text, &trusted_comment(&manifest));
    let sig_path = a.dir.join(SIGNATURE_FILE.to_str().expect("ASCII name"));
    let mut files = Staged::default();
    files.stage(&sig_path, &sig.to_file(), 0o644)?;
    files.commit()?;
    println!(
        "signed {} {} with key {} -> {}",
        manifest.id,
        manifest.version,
        sk.key_id,
        sig_path.display()
    );
    Ok(())
}

/// The signed trusted comment: minisign's usual fields plus what was signed.
fn trusted_comment(m: &Manifest) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "timestamp:{now}\tfile:manifest.json\thashed\tplugin:{}@{}",
        m.id, m.version
    )
}

fn load_key(path: &Path) -> Result<SecretKey, Failure> {
    let bytes = read_limited(path, MAX_KEY_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        Failure::general(format_args!("{}: not a minisign key file", path.display()))
    })?;
    SecretKey::parse(&text).map_err(|e| Failure::general(format_args!("{}: {e}", path.display())))
}

fn read_limited(path: &Path, cap: usize) -> Result<Vec<u8>, Failure> {
    let fail =
        |e: &dyn std::fmt::Display| Failure::general(format_args!("{}: {e}", path.display()));
    let meta = fs::metadata(path).map_err(|e| fail(&e))?;
    if meta.len() > cap as u64 {
        return Err(fail(&format_args!("larger than the {cap}-byte limit")));
    }
    fs::read(path).map_err(|e| fail(&e))
}

/// Writes `bytes` to `path` atomically (temporary file in the same directory, fsync,
/// rename) with `mode`.
/// Files written next to where they go (`NAME.tmp`, synced) and then renamed
/// into place together; dropped uncommitted, the temporary files are removed.
#[derive(Default)]
struct Staged {
    files: Vec<(PathBuf, PathBuf)>,
}

impl Staged {
    fn stage(&mut self, path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failure> {
        let tmp = with_suffix(path, "tmp");
        let fail = |e: std::io::Error| Failure::general(format_args!("{}: {e}", tmp.display()));
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(fail)?;
        self.files.push((tmp.clone(), path.to_owned()));
        f.write_all(bytes).and_then(|()| f.sync_all()).map_err(fail)
    }

    /// Renames every staged file into place. A file it replaces is first
    /// hard-linked to a name of warden's own (`.NAME.warden-old.PID`, never an
    /// existing one): should a later rename fail, the earlier ones are undone from
    /// those, so that the set changes whole or not at all. Where such a copy
    /// cannot be made, nothing is replaced.
    fn commit(mut self) -> Result<(), Failure> {
        let files = std::mem::take(&mut self.files);
        let mut copies: Vec<Option<PathBuf>> = Vec::new();
        let undo = |copies: &[Option<PathBuf>]| {
            for c in copies.iter().flatten() {
                let _ = fs::remove_file(c);
            }
        };
        for (_, path) in &files {
            if path.symlink_metadata().is_err() {
                copies.push(None);
                continue;
            }
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let copy = path.with_file_name(format!(
                ".{}.warden-old.{}",
                name.unwrap_or_default(),
                std::process::id()
            ));
            if let Err(e) = fs::hard_link(path, &copy) {
                undo(&copies);
                for (t, _) in &files {
                    let _ = fs::remove_file(t);
                }
                return Err(Failure::general(format_args!(
                    "{}: cannot keep a copy of {} to undo with ({e}); nothing was replaced",
                    copy.display(),
                    path.display()
                )));
            }
            copies.push(Some(copy));
        }
        for (i, (tmp, path)) in files.iter().enumerate() {
            if let Err(e) = fs::rename(tmp, path) {
                for (left, _) in &files[i..] {
                    let _ = fs::remove_file(left);
                }
                for ((_, done), copy) in files[..i].iter().zip(&copies) {
                    match copy {
                        Some(copy) => {
                            let _ = fs::rename(copy, done);
                        }
                        None => {
                            let _ = fs::remove_file(done);
                        }
                    }
                }
                undo(&copies[i..]);
                return Err(Failure::general(format_args!("{}: {e}", path.display())));
            }
        }
        undo(&copies);
        Ok(())
    }
}

impl Staged {
    /// Links every staged file into place where nothing is yet, or none: a
    /// path that exists by now (made after any earlier check) is not replaced,
    /// and what this call linked before it is removed again.
    fn commit_new(mut self) -> Result<(), Failure> {
        let files = std::mem::take(&mut self.files);
        for (i, (tmp, path)) in files.iter().enumerate() {
            if let Err(e) = fs::hard_link(tmp, path) {
                for (_, made) in &files[..i] {
                    let _ = fs::remove_file(made);
                }
                for (t, _) in &files {
                    let _ = fs::remove_file(t);
                }
                return Err(Failure::general(
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        format!("{} exists; pass --force to replace it", path.display())
                    } else {
                        format!("{}: {e}", path.display())
                    },
                ));
            }
        }
        for (t, _) in &files {
            let _ = fs::remove_file(t);
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (tmp, _) in &self.files {
            let _ = fs::remove_file(tmp);
        }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// Any JSON in which no object says the same key twice (deserializing fails,
/// naming the key, when one does).
struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeysVisitor)
    }
}

struct NoDuplicateKeysVisitor;

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeysVisitor {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(NoDuplicateKeys)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "key {key:?} appears twice in one object"
                )));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(NoDuplicateKeys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that appears between keygen's check and its commit (another
    /// keygen, say) is not replaced: the commit fails naming it, and leaves
    /// neither the other file nor a temporary one behind. (A rename replaced it.)
    #[test]
    fn commit_new_replaces_nothing_made_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = (dir.path().join("k.key"), dir.path().join("k.pub"));
        let mut files = Staged::default();
        files.stage(&key, b"secret", 0o600).unwrap();
        files.stage(&public, b"public", 0o644).unwrap();
        fs::write(&public, "someone else's").unwrap();
        let e = files.commit_new().unwrap_err();
        assert!(e.line.contains("k.pub exists; pass --force"), "{}", e.line);
        assert_eq!(fs::read_to_string(&public).unwrap(), "someone else's");
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("k.pub")]);
        let mut files = Staged::default();
        files.stage(&key, b"secret", 0o600).unwrap();
        files.commit_new().unwrap();
        assert_eq!(fs::read_to_string(&key).unwrap(), "secret");
        assert!(!with_suffix(&key, "tmp").exists());
    }
}
