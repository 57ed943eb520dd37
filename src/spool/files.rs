//! File system steps the spool is built from: exclusive renames, durable writes and
//! directories, fsyncs.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Renames `from` to `to` unless `to` exists (`AlreadyExists` then): the check and the
/// rename are one step, so two stores of one id cannot both commit.
pub(super) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    };
    let (c_from, c_to) = (c(from)?, c(to)?);
    // SAFETY: both arguments are valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // A file system without RENAME_NOREPLACE: a hard link fails on an existing name
        // too, and the temporary name is then dropped.
        Some(libc::EINVAL | libc::ENOSYS) => {
            fs::hard_link(from, to)?;
            remove_if_exists(from)
        }
        _ => Err(e),
    }
}

/// Overwrites the existing file `path` with `parts` one after the other, cuts it to their
/// length and fsyncs it.
pub(super) fn overwrite_file(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut file = OpenOptions::new().write(true).open(path)?;
    // Never through a second name of a live queue file (see recovery).
    if file.metadata()?.nlink() != 1 {
        return Err(io::Error::other("free file has other names"));
    }
    for p in parts {
        file.write_all(p)?;
    }
    file.set_len(parts.iter().map(|p| p.len() as u64).sum())?;
    file.sync_all()
}

/// Creates `path` (O_EXCL, mode 0600) holding `parts` one after the other, fsynced. On
/// error, removes the file if this call created it.
pub(super) fn write_new_file(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let result = parts
        .iter()
        .try_for_each(|p| file.write_all(p))
        .and_then(|()| file.sync_all());
    if result.is_err() {
        drop(file);
        let _ = fs::remove_file(path);
    }
    result
}

pub(super) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(super) fn exists(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

pub(super) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist, fsyncing the
/// parent of every directory created so the new entries are durable.
pub(super) fn ensure_dir(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a directory", dir.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    ensure_dir(parent)?;
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => fsync_dir(parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}
