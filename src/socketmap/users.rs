//! User and group names of `socketmap.socket_owner` / `socket_group` to numeric ids.

use crate::config::ConfigError;

/// A user name or numeric uid.
pub(super) fn user_id(key: &str, name: &str) -> Result<u32, ConfigError> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    let c_name = std::ffi::CString::new(name).map_err(|_| ConfigError::key(key, "NUL in name"))?;
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the use of `entry`.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(ConfigError::key(key, format!("no such user {name:?}")));
    }
    Ok(entry.pw_uid)
}

/// A group name or numeric gid.
pub(super) fn group_id(key: &str, name: &str) -> Result<u32, ConfigError> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    let c_name = std::ffi::CString::new(name).map_err(|_| ConfigError::key(key, "NUL in name"))?;
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the use of `entry`.
    let rc = unsafe {
        libc::getgrnam_r(
            c_name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(ConfigError::key(key, format!("no such group {name:?}")));
    }
    Ok(entry.gr_gid)
}
