//! Whether the account a display manager runs its X server as can read our files.
//!
//! GDM starts its login screen's X server (and so guest-xwrap) as its own user, `Debian-gdm`
//! on Debian and `gdm` elsewhere, not as root. A key file only root can read then fails at the
//! first login screen, with nobody watching; `check`, run as root, says so beforehand.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::install::{self, Dm};

/// A local account, as /etc/passwd and /etc/group describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Account {
    /// Looks `name` up in the local account files (display-manager accounts are local).
    pub fn local(name: &str) -> Option<Account> {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        Self::parse(name, &passwd, &group)
    }

    fn parse(name: &str, passwd: &str, group: &str) -> Option<Account> {
        let fields: Vec<&str> = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && f[0] == name)?;
        let (uid, gid) = (fields[2].parse().ok()?, fields[3].parse().ok()?);
        let groups = group
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == name))
            .filter_map(|f| f[2].parse().ok())
            .collect();
        Some(Account {
            name: name.to_owned(),
            uid,
            gid,
            groups,
        })
    }
}

/// The account GDM runs the login screen's X server as, when guest-xwrap is installed for GDM.
pub fn gdm_x_server_account() -> Option<Account> {
    [Dm::Gdm3, Dm::GdmLegacy]
        .into_iter()
        .any(install::is_installed)
        .then(|| ["Debian-gdm", "gdm"].into_iter().find_map(Account::local))
        .flatten()
}

/// Opens `path` for reading as `account`, in a child process that has become that account.
pub fn can_read(account: &Account, path: &Path) -> io::Result<bool> {
    let path = CString::new(path.as_os_str().as_bytes())?;
    let groups: Vec<libc::gid_t> = std::iter::once(account.gid)
        .chain(account.groups.iter().copied())
        .collect();
    // SAFETY: between fork and _exit the child only makes async-signal-safe calls (setgroups,
    // setgid, setuid, open) on memory prepared before the fork.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            let became = libc::setgroups(groups.len(), groups.as_ptr()) == 0
                && libc::setgid(account.gid) == 0
                && libc::setuid(account.uid) == 0;
            if !became {
                libc::_exit(2);
            }
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            libc::_exit(if fd >= 0 { 0 } else { 1 });
        }
        let mut status = 0;
        if libc::waitpid(pid, &mut status, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(io::Error::other(format!(
                "cannot switch to user {} (needs root)",
                account.name
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_come_with_their_supplementary_groups() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nDebian-gdm:x:102:111:Gnome:/var/lib/gdm3:/bin/false\n";
        let group =
            "video:x:44:Debian-gdm,alice\ngdm-ish:x:50:Debian-gdmx\naudio:x:29:Debian-gdm\n";
        assert_eq!(
            Account::parse("Debian-gdm", passwd, group),
            Some(Account {
                name: "Debian-gdm".into(),
                uid: 102,
                gid: 111,
                groups: vec![44, 29],
            })
        );
        assert_eq!(Account::parse("gdm", passwd, group), None);
    }
}
