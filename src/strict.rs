//! Strict reading of the files warden is given (policies, the config, trust
//! files): regular files only, opened without waiting on a fifo, read up to a
//! cap; and strict JSON decoding of them: a field written as `null` is refused
//! as the wrong type rather than read as absent (which, for `grant`, would mean
//! "everything the manifest declares"), and a key said twice in an object is
//! refused rather than the last one silently winning.

use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::marker::PhantomData;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a regular file")]
    NotRegular,
    #[error("larger than {0} bytes")]
    TooLarge(u64),
}

/// Opens `path` for reading if it is a regular file (a symlink to one is
/// followed): a fifo is opened without waiting for a writer, then refused.
pub fn open_regular(path: &Path) -> Result<(File, Metadata), ReadError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular);
    }
    Ok((file, meta))
}

/// The first `max` bytes of `file`, or `TooLarge` if it holds more.
pub fn read_capped(file: File, max: u64) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    file.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(ReadError::TooLarge(max));
    }
    Ok(out)
}

/// Why a JSON text did not decode: serde_json's error, and the key it is about
/// (`restart.max_restarts`), when it is about one.
#[derive(Debug)]
pub struct Decode {
    pub error: serde_json::Error,
    pub key: Option<String>,
    /// The object the key sits in (`restart`), `None` at the top level.
    pub parent: Option<String>,
}

impl Decode {
    /// The message without serde_json's position (the caller says the line and
    /// column), with the key in front: `restart.max_restarts: invalid type: ...`.
    pub fn message(&self) -> String {
        let full = self.error.to_string();
        let msg = full
            .rfind(" at line ")
            .map_or(full.as_str(), |i| &full[..i]);
        // An unknown field's path ends in that field, which the message names:
        // the key is the object it sits in (none at the top level).
        let key = match &self.key {
            Some(_) if msg.starts_with("unknown field") => self.parent.as_deref(),
            k => k.as_deref(),
        };
        match key {
            Some(k) => format!("{k}: {msg}"),
            None => msg.to_owned(),
        }
    }
}

/// Decodes `bytes` as one JSON value of type `T` (nothing after it), saying
/// which key an error is about.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Decode> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let segments: Vec<String> = e.path().iter().map(ToString::to_string).collect();
        let join = |s: &[String]| (!s.is_empty()).then(|| s.join("."));
        Decode {
            key: join(&segments),
            parent: join(&segments[..segments.len().saturating_sub(1)]),
            error: e.into_inner(),
        }
    })?;
    de.end().map_err(|error| Decode {
        error,
        key: None,
        parent: None,
    })?;
    Ok(value)
}

/// `deserialize_with` for an `Option<T>` field that also has `#[serde(default)]`:
/// absent is `None`; present is `Some`, and `null` is an error.
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A JSON object's entries in the order written; a repeated key is an error.
#[derive(Debug, PartialEq)]
pub struct UniqueMap<V>(pub Vec<(String, V)>);

impl<V> Default for UniqueMap<V> {
    fn default() -> Self {
        UniqueMap(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Entries<V> {
            type Value = UniqueMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, V)> = Vec::new();
                while let Some(key) = m.next_key::<String>()? {
                    // Objects here are short (a few dozen keys at most).
                    if out.iter().any(|(seen, _)| *seen == key) {
                        return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
                    }
                    let value = m.next_value()?;
                    out.push((key, value));
                }
                Ok(UniqueMap(out))
            }
        }
        d.deserialize_map(Entries(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct S {
        #[serde(default, deserialize_with = "present")]
        list: Option<Vec<u32>>,
        #[serde(default)]
        map: UniqueMap<u32>,
    }

    #[test]
    fn null_is_refused_and_absent_is_none() {
        let s: S = serde_json::from_str("{}").unwrap();
        assert_eq!((s.list, s.map), (None, UniqueMap::default()));
        let e = serde_json::from_str::<S>(r#"{"list":null}"#).unwrap_err();
        assert!(e.to_string().contains("invalid type: null"), "{e}");
        let s: S = serde_json::from_str(r#"{"list":[1]}"#).unwrap();
        assert_eq!(s.list, Some(vec![1]));
    }

    #[test]
    fn only_a_regular_file_within_the_cap_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(open_regular(&fifo), Err(ReadError::NotRegular)));
        assert!(matches!(
            open_regular(dir.path()),
            Err(ReadError::NotRegular)
        ));
        let f = dir.path().join("f");
        std::fs::write(&f, "12345").unwrap();
        let read = |max| read_capped(open_regular(&f).unwrap().0, max);
        assert_eq!(read(5).unwrap(), b"12345");
        assert!(matches!(read(4), Err(ReadError::TooLarge(4))));
    }

    #[test]
    fn a_decoding_error_names_its_key() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct Inner {
            #[allow(dead_code)]
            n: u32,
        }
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct Outer {
            #[allow(dead_code)]
            inner: Inner,
        }
        let m = |t: &str| decode::<Outer>(t.as_bytes()).unwrap_err().message();
        assert_eq!(
            m(r#"{"inner":{"n":"x"}}"#),
            r#"inner.n: invalid type: string "x", expected u32"#
        );
        assert!(m(r#"{"inner":{"n":1,"m":2}}"#).starts_with("inner: unknown field `m`"));
        assert!(m(r#"{"other":1}"#).starts_with("unknown field `other`"));
        // A key with a dot in it at the top is not put under another object.
        assert!(m(r#"{"inner.n":1}"#).starts_with("unknown field `inner.n`"));
        assert!(m(r#"{"inner":{"n":1}} x"#).starts_with("trailing characters"));
    }

    #[test]
    fn a_repeated_key_is_refused_and_order_is_kept() {
        let s: S = serde_json::from_str(r#"{"map":{"b":1,"a":2}}"#).unwrap();
        assert_eq!(s.map.0, vec![("b".into(), 1), ("a".into(), 2)]);
        let e = serde_json::from_str::<S>(r#"{"map":{"a":1,"a":2}}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate key \"a\""), "{e}");
    }
}
