//! The pairing key: 32 random bytes shared by the host agent and the guest, stored as one hex line.
//!
//! Like ssh with private keys, a key file that group or others can read is refused: the key
//! is what stands between any local user and the host display.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Length of the pairing key in bytes.
pub const KEY_LEN: usize = 32;

/// The pairing key. Its `Debug` output never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Why a key file could not be created or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("cannot {action} key file {path}: {cause}")]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    /// Group or others may read or write the file.
    #[error("key file {path} is accessible by group or others (mode {mode:04o}); it must be private: run `chmod 600 {path}`")]
    TooOpen { path: PathBuf, mode: u32 },
    /// The file does not hold one line of 64 hex digits.
    #[error("key file {path} does not hold a key ({reason}); create a new one with `host-agent init --force --key {path}`")]
    Malformed { path: PathBuf, reason: String },
    /// `init` found an existing key and was not told to replace it.
    #[error("key file {path} already exists; pass --force to replace it (every paired guest will need the new key)")]
    Exists { path: PathBuf },
}

impl Key {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Key(bytes)
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Key(crate::random_bytes())
    }

    /// The raw key, for computing proofs.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The file format: 64 lowercase hex digits and a newline.
    pub fn to_hex_line(&self) -> String {
        format!("{}\n", hex::encode(self.0))
    }

    /// Parses the file format; surrounding whitespace is allowed.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = hex::decode(text).map_err(|e| format!("not hex: {e}"))?;
        let bytes: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("{} bytes where {KEY_LEN} are needed", b.len()))?;
        Ok(Key(bytes))
    }

    /// Loads a key file, refusing one that group or others can access.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io_err = |source| KeyError::Io {
            action: "read",
            path: path.to_owned(),
            cause: source,
        };
        let meta = fs::metadata(path).map_err(io_err)?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
        let text = fs::read_to_string(path).map_err(io_err)?;
        Key::from_hex(&text).map_err(|reason| KeyError::Malformed {
            path: path.to_owned(),
            reason,
        })
    }

    /// Writes a new key file (mode 0600), creating its directory (mode 0700) if needed.
    pub fn create(path: &Path, force: bool) -> Result<Self, KeyError> {
        let io_err = |source| KeyError::Io {
            action: "create",
            path: path.to_owned(),
            cause: source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io_err)?;
            }
        }
        if !force && path.exists() {
            return Err(KeyError::Exists {
                path: path.to_owned(),
            });
        }
        // Write a sibling and rename, so a reader never sees half a key.
        let tmp = path.with_extension("new");
        let _ = fs::remove_file(&tmp);
        let key = Key::generate();
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err)?;
        file.write_all(key.to_hex_line().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_err)?;
        fs::rename(&tmp, path).map_err(io_err)?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_load() {
        let dir = tempdir();
        let path = dir.join("sub/guest.key");
        let key = Key::create(&path, false).unwrap();
        assert_eq!(Key::load(&path).unwrap(), key);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert!(matches!(
            Key::create(&path, false),
            Err(KeyError::Exists { .. })
        ));
        assert_ne!(Key::create(&path, true).unwrap(), key);
    }

    #[test]
    fn loose_permissions_are_refused_with_the_fix() {
        let dir = tempdir();
        let path = dir.join("guest.key");
        Key::create(&path, false).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let message = Key::load(&path).unwrap_err().to_string();
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
        assert!(message.contains("0644"), "{message}");
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(Key::from_hex("abc").is_err());
        assert!(Key::from_hex(&"ab".repeat(31))
            .unwrap_err()
            .contains("31 bytes"));
        assert!(Key::from_hex(&format!("{}\n", "ab".repeat(32))).is_ok());
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = Key::from_bytes([0xab; KEY_LEN]);
        assert!(!format!("{key:?}").contains("ab"));
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "xbridge-key-test-{}",
            hex::encode(crate::random_bytes::<8>())
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
