//! The secrets file: one secret per line, the first signs and all verify (rotation). Read
//! by every command that signs or checks addresses; created on the first start of `serve`
//! or `socketmap`, whole or not at all, mode 0600. Secrets are never logged or shown.

use std::path::Path;

use crate::config::ConfigError;

/// A new random secret (256 bits, base64 without padding): one line of a secrets file.
pub fn new_secret() -> Result<String, ConfigError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| ConfigError {
        key: None,
        message: format!("no randomness: {e}"),
    })?;
    Ok(data_encoding::BASE64_NOPAD.encode(&key))
}

/// Reads a secrets file: one secret per line, the first signs; blank lines and lines
/// starting with `#` are skipped; a trailing CR/LF is not part of a secret (the format
/// of postsrsd's secrets file, so the same file serves both).
pub fn read(path: &Path) -> Result<Vec<Vec<u8>>, ConfigError> {
    Ok(read_numbered(path)?.into_iter().map(|(_, s)| s).collect())
}

/// As [`read`], with each secret's line number in the file (from 1), to name a secret
/// without showing it.
pub fn read_numbered(path: &Path) -> Result<Vec<(usize, Vec<u8>)>, ConfigError> {
    read_numbered_for(path, "srs.secrets_file")
}

/// [`read_numbered`] for a file of the same format set by `key`.
fn read_numbered_for(path: &Path, key: &str) -> Result<Vec<(usize, Vec<u8>)>, ConfigError> {
    let data = std::fs::read(path)
        .map_err(|e| ConfigError::key(key, format!("cannot read {}: {e}", path.display())))?;
    let secrets: Vec<(usize, Vec<u8>)> = data
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace) && !line.starts_with(b"#"))
        .map(|(i, line)| (i + 1, line.to_vec()))
        .collect();
    if secrets.is_empty() {
        return Err(ConfigError::key(
            key,
            format!("{} holds no secret", path.display()),
        ));
    }
    Ok(secrets)
}

/// Reads the secrets file, creating it with a fresh random secret on first run; warns
/// when the file is open to group or others.
#[cfg(feature = "server")]
pub fn load_or_create(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    load_or_create_for(path, "srs.secrets_file")
}

/// [`load_or_create`] for another file of secrets, set by `key` (named in errors and
/// the log): the admin credentials.
#[cfg(feature = "server")]
pub fn load_or_create_for(path: &Path, key: &str) -> Result<Vec<Vec<u8>>, String> {
    if create_file(path, key)? {
        // The path only: the secret itself is never logged.
        tracing::info!(path = %path.display(), key, "created a new secrets file (mode 0600)");
    }
    warn_if_open(path);
    Ok(read_numbered_for(path, key)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(_, s)| s)
        .collect())
}

/// Creates `path` (mode 0600) holding one new secret, unless it exists; true if this call
/// made it. The file appears whole or not at all: the secret is written to a new file of
/// its own (`create_new`), fsynced, then hard-linked to `path`, which fails if `path`
/// exists. So of two processes starting at once, one secret wins and both read it.
#[cfg(feature = "server")]
fn create_file(path: &Path, key: &str) -> Result<bool, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if path.symlink_metadata().is_ok() {
        return Ok(false);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| format!("{key}: {}: not a file name", path.display()))?;
    let mut tag = [0u8; 8];
    getrandom::fill(&mut tag).map_err(|e| format!("no randomness: {e}"))?;
    let tmp = dir.join(format!(
        ".{}.{}.new",
        name.to_string_lossy(),
        data_encoding::HEXLOWER.encode(&tag)
    ));
    let line = format!("{}\n", new_secret().map_err(|e| e.to_string())?);
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(line.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match made {
        Ok(()) => {
            // The new name durable too (as the spool does it).
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(true)
        }
        // Another process made it first, whole (it was linked only once written).
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(format!("{key}: cannot create {}: {e}", path.display())),
    }
}

/// Warns (naming the file and its mode, never its content) when the secrets file is
/// open to group or others: anyone who reads it can sign addresses.
#[cfg(feature = "server")]
fn warn_if_open(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return; // reading it will say why
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = %format!("{mode:04o}"),
            "secrets file is open to group or others: run chmod 600 on it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    #[test]
    fn file_format() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"# rotated 2026-11\n\nnew-secret\r\nold secret\n  \n")
            .unwrap();
        let s = read(f.path()).unwrap();
        assert_eq!(s, vec![b"new-secret".to_vec(), b"old secret".to_vec()]);
        let empty = tempfile::NamedTempFile::new().unwrap();
        assert!(
            read(empty.path())
                .unwrap_err()
                .to_string()
                .starts_with("srs.secrets_file:")
        );
    }

    #[cfg(feature = "server")]
    #[test]
    fn concurrent_first_starts_end_with_one_secret() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = Config::default();
            cfg.srs.secrets_file = dir.path().join("srs-secrets");
            let cfg = Arc::new(cfg);
            let start = Arc::new(std::sync::Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let (cfg, start) = (cfg.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        load_or_create(&cfg.secrets_path())
                    })
                })
                .collect();
            let got: Vec<_> = threads
                .into_iter()
                .map(|t| t.join().unwrap().unwrap())
                .collect();
            assert_eq!(got[0].len(), 1);
            assert!(got.iter().all(|s| *s == got[0]), "different secrets");
            let path = cfg.secrets_path();
            assert_eq!(read(&path).unwrap(), got[0]);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            // No temporary file left behind.
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        }
    }
}
