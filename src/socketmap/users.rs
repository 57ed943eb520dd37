//! User and group names of `socketmap.socket_owner` / `socket_group` to numeric ids.

use nix::unistd::{Group, User};

use crate::config::ConfigError;

/// A user name or numeric uid.
pub(super) fn user_id(key: &str, name: &str) -> Result<u32, ConfigError> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    match User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(ConfigError::key(key, format!("no such user {name:?}"))),
        Err(e) => Err(ConfigError::key(
            key,
            format!("looking up user {name:?}: {e}"),
        )),
    }
}

/// A group name or numeric gid.
pub(super) fn group_id(key: &str, name: &str) -> Result<u32, ConfigError> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(ConfigError::key(key, format!("no such group {name:?}"))),
        Err(e) => Err(ConfigError::key(
            key,
            format!("looking up group {name:?}: {e}"),
        )),
    }
}
