//! Root only as long as needed: `serve` started as root binds its SMTP listeners (port
//! 25) and opens the spool, then hands its state to `server.user` and becomes that user
//! and group for good, before it accepts a connection or delivers a message. Running as
//! root throughout needs `server.allow_root = true`.

use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User, getegid, geteuid, setgroups, setresgid, setresuid};

use crate::config::Config;

/// Whom to become.
#[derive(Debug, Clone)]
pub struct Target {
    name: String,
    uid: Uid,
    gid: Gid,
}

/// What `server.user`, `server.group` and `server.allow_root` ask of a process running as
/// whoever it is now: `Some` to switch, `None` to stay, or why it must not run.
pub fn plan(cfg: &Config) -> Result<Option<Target>, String> {
    let s = &cfg.server;
    let root = geteuid().is_root();
    let Some(name) = s.user.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
        if root && !s.allow_root {
            return Err(
                "running as root: set server.user (and server.group) to switch to \
                once the listeners are bound, or server.allow_root = true"
                    .into(),
            );
        }
        return Ok(None);
    };
    let user = match name.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(name),
    }
    .map_err(|e| format!("server.user: looking up {name:?}: {e}"))?
    .ok_or_else(|| format!("server.user: no such user {name:?}"))?;
    let gid = match s.group.as_deref().map(str::trim).filter(|g| !g.is_empty()) {
        None => user.gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => Gid::from_raw(gid),
            Err(_) => {
                Group::from_name(g)
                    .map_err(|e| format!("server.group: looking up {g:?}: {e}"))?
                    .ok_or_else(|| format!("server.group: no such group {g:?}"))?
                    .gid
            }
        },
    };
    if user.uid.is_root() && !s.allow_root {
        return Err("server.user is root: name an unprivileged user".into());
    }
    if !root {
        if geteuid() != user.uid || getegid() != gid {
            return Err(format!(
                "server.user = {name:?}: switching users needs srs-relay to start as root \
                 (it runs as uid {})",
                geteuid()
            ));
        }
        return Ok(None);
    }
    Ok(Some(Target {
        name: user.name,
        uid: user.uid,
        gid,
    }))
}

/// Hands `paths` (directories with all they hold) to `target`, then becomes it for good:
/// supplementary groups, group and user, real, effective and saved. Checks that root
/// cannot be had back.
pub fn switch(target: &Target, paths: &[PathBuf]) -> Result<(), String> {
    for path in paths {
        chown_tree(path, target)
            .map_err(|e| format!("{}: cannot hand it to {}: {e}", path.display(), target.name))?;
    }
    setgroups(&[target.gid]).map_err(|e| format!("setgroups: {e}"))?;
    setresgid(target.gid, target.gid, target.gid).map_err(|e| format!("setresgid: {e}"))?;
    setresuid(target.uid, target.uid, target.uid).map_err(|e| format!("setresuid: {e}"))?;
    if setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok() {
        return Err("could get root back after switching users; refusing to run".into());
    }
    tracing::info!(user = %target.name, uid = target.uid.as_raw(), gid = target.gid.as_raw(), "running as an unprivileged user");
    Ok(())
}

/// `path` and, for a directory, everything under it (symbolic links themselves, never
/// what they point to). A path that does not exist is skipped.
fn chown_tree(path: &Path, target: &Target) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    std::os::unix::fs::lchown(path, Some(target.uid.as_raw()), Some(target.gid.as_raw()))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), target)?;
        }
    }
    Ok(())
}
