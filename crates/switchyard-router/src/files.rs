//! The credential files a route's build read (its `transport.tls` and `transport.auth`
//! certificates and keys), stamped, so a renewal on disk rebuilds the route without a restart.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

/// A file as the route's build read it: its modification time and length, and a digest of its
/// content; `None` if it could not be read then (a route broken by a missing or unreadable file
/// is rebuilt once it can be read). A check stats the file and reads it only when the time or
/// length moved, so an unchanged file costs one `stat` per poll; the content decides, so a
/// rewrite with the same bytes (a renewal agent re-rendering the same certificate) rebuilds
/// nothing (though, its stamp kept, such a file is read again at each poll until the route is
/// next rebuilt). The digest only tells a change apart; it is not a security measure.
type Stamp = Option<Seen>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    modified: SystemTime,
    len: u64,
    digest: u64,
}

/// The credential files of one route, as they were when it was built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CredentialFiles {
    files: Vec<(PathBuf, Stamp)>,
}

/// The keys of `transport.tls` and `transport.auth` that name files.
const FILE_KEYS: [&str; 3] = ["ca_file", "cert_file", "key_file"];

impl CredentialFiles {
    /// The files a route config names, stamped now. A config that does not parse names none
    /// (the route is broken by it, and its row must change to fix it).
    pub(crate) fn of_config(config: Option<&str>) -> Self {
        let Some(transport) = config
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .and_then(|mut v| v.get_mut("transport").map(Value::take))
        else {
            return Self::default();
        };
        let mut files = Vec::new();
        for section in ["tls", "auth"] {
            for key in FILE_KEYS {
                if let Some(path) = transport
                    .get(section)
                    .and_then(|s| s.get(key))
                    .and_then(Value::as_str)
                {
                    let path = PathBuf::from(path);
                    if !files.iter().any(|(p, _)| *p == path) {
                        let stamp = stamp(&path);
                        files.push((path, stamp));
                    }
                }
            }
        }
        Self { files }
    }

    /// Whether any file's content differs from when it was stamped.
    pub(crate) fn changed(&self) -> bool {
        self.files.iter().any(|(path, then)| match then {
            // Unreadable then: changed once it can be read.
            None => std::fs::read(path).is_ok(),
            Some(then) => match std::fs::metadata(path) {
                Err(_) => true,
                Ok(meta)
                    if meta.modified().ok() == Some(then.modified) && meta.len() == then.len =>
                {
                    false
                }
                Ok(_) => stamp(path).is_none_or(|now| now.digest != then.digest),
            },
        })
    }

    /// Whether the route reads no file.
    pub(crate) fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

fn stamp(path: &Path) -> Stamp {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(Seen {
        modified,
        len: bytes.len() as u64,
        digest: hasher.finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_of_tls_and_auth_are_stamped_and_a_change_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let key = dir.path().join("client.key");
        std::fs::write(&ca, "one").unwrap();
        let config = serde_json::json!({ "transport": {
            "tls": { "ca_file": ca, "server_name": "x" },
            "auth": { "method": "mtls", "cert_file": ca, "key_file": key },
        }})
        .to_string();
        let files = CredentialFiles::of_config(Some(&config));
        // The CA named twice counts once; the missing key is stamped as missing.
        assert_eq!(files.files.len(), 2);
        assert!(!files.changed());
        std::fs::write(&key, "appeared").unwrap();
        assert!(files.changed(), "a file that appears is a change");
        let files = CredentialFiles::of_config(Some(&config));
        std::fs::write(&ca, "one").unwrap();
        assert!(
            !files.changed(),
            "the same bytes written again are no change"
        );
        std::fs::write(&ca, "two").unwrap();
        assert!(files.changed(), "new bytes of the same length are a change");
    }

    #[test]
    fn configs_without_files_or_unparsable_name_none() {
        for config in [
            None,
            Some(""),
            Some("{"),
            Some(r#"{"timeout": "1s"}"#),
            Some(r#"{"transport": {"tls": {"ca_file": 5}}}"#),
        ] {
            let files = CredentialFiles::of_config(config);
            assert!(files.is_empty(), "{config:?}");
            assert!(!files.changed());
        }
    }
}
