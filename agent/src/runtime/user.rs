//! Who a task runs as: `ContainerSpec.user` (`name`, `uid`, `name:group`,
//! `uid:gid`, …) resolved against the host's `/etc/passwd` and `/etc/group`.
//!
//! The files are read directly, as runc does, rather than through NSS: the
//! answer does not depend on the daemon's libc or on a directory service
//! being reachable. A numeric uid that has no passwd entry is accepted (with
//! gid 0 unless a group is given, and home `/`), as Docker does.

use std::path::PathBuf;

/// The resolved user of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskUser {
    pub uid: u32,
    pub gid: u32,
    /// The user's home directory, for `HOME`.
    pub home: PathBuf,
}

/// Why a user spec does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    #[error("user {user:?} is not in /etc/passwd on this node; create it or give a numeric uid")]
    UnknownUser { user: String },
    #[error("group {group:?} is not in /etc/group on this node; create it or give a numeric gid")]
    UnknownGroup { group: String },
}

/// One `/etc/passwd` entry (the fields we use).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

/// Resolves `spec` (non-empty) with the text of the passwd and group files.
pub fn resolve_user(spec: &str, passwd: &str, group: &str) -> Result<TaskUser, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let entry = passwd_entries(passwd).find(|e| match user_part.parse::<u32>() {
        Ok(uid) => e.uid == uid,
        Err(_) => e.name == user_part,
    });
    let (uid, primary_gid, home) = match (entry, user_part.parse::<u32>()) {
        (Some(entry), _) => (entry.uid, entry.gid, PathBuf::from(entry.home)),
        (None, Ok(uid)) => (uid, 0, PathBuf::from("/")),
        (None, Err(_)) => {
            return Err(UserError::UnknownUser {
                user: user_part.to_string(),
            });
        }
    };
    let gid = match group_part {
        None | Some("") => primary_gid,
        Some(group_part) => resolve_group(group_part, group)?,
    };
    Ok(TaskUser { uid, gid, home })
}

/// The groups of the group file that list the user with uid `uid` (by
/// its passwd name) as a member: its supplementary groups.
pub fn supplementary_gids(uid: u32, passwd: &str, group: &str) -> Vec<u32> {
    let Some(name) = passwd_entries(passwd)
        .find(|e| e.uid == uid)
        .map(|e| e.name)
    else {
        return Vec::new();
    };
    group
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let _name = fields.next()?;
            let _password = fields.next()?;
            let gid = fields.next()?.parse::<u32>().ok()?;
            let members = fields.next()?;
            members
                .split(',')
                .any(|member| member.trim() == name)
                .then_some(gid)
        })
        .collect()
}

fn resolve_group(spec: &str, group: &str) -> Result<u32, UserError> {
    if let Ok(gid) = spec.parse::<u32>() {
        return Ok(gid);
    }
    group
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let _password = fields.next()?;
            let gid = fields.next()?.parse::<u32>().ok()?;
            Some((name, gid))
        })
        .find(|(name, _)| *name == spec)
        .map(|(_, gid)| gid)
        .ok_or_else(|| UserError::UnknownGroup {
            group: spec.to_string(),
        })
}

/// The well-formed entries of a passwd file; comments and broken lines are
/// skipped.
fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 7 {
            return None;
        }
        Some(PasswdEntry {
            name: fields[0],
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: fields[5],
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment
broken line
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
app:x:1000:1001:App,,,:/home/app:/bin/sh
";
    const GROUP: &str = "root:x:0:\nstaff:x:50:app\napp:x:1001:\n";

    fn user(uid: u32, gid: u32, home: &str) -> TaskUser {
        TaskUser {
            uid,
            gid,
            home: PathBuf::from(home),
        }
    }

    #[test]
    fn users_resolve_by_name_or_number_with_their_primary_group() {
        assert_eq!(
            resolve_user("app", PASSWD, GROUP),
            Ok(user(1000, 1001, "/home/app"))
        );
        assert_eq!(
            resolve_user("1000", PASSWD, GROUP),
            Ok(user(1000, 1001, "/home/app"))
        );
        assert_eq!(
            resolve_user("nobody", PASSWD, GROUP),
            Ok(user(65534, 65534, "/nonexistent"))
        );
    }

    #[test]
    fn a_group_overrides_the_primary_one() {
        assert_eq!(
            resolve_user("app:staff", PASSWD, GROUP),
            Ok(user(1000, 50, "/home/app"))
        );
        assert_eq!(
            resolve_user("app:7", PASSWD, GROUP),
            Ok(user(1000, 7, "/home/app"))
        );
        assert_eq!(
            resolve_user("app:", PASSWD, GROUP),
            Ok(user(1000, 1001, "/home/app"))
        );
    }

    #[test]
    fn unknown_numeric_users_are_accepted_like_docker() {
        assert_eq!(resolve_user("4242", PASSWD, GROUP), Ok(user(4242, 0, "/")));
        assert_eq!(
            resolve_user("4242:4243", PASSWD, GROUP),
            Ok(user(4242, 4243, "/"))
        );
    }

    #[test]
    fn unknown_names_are_errors_that_say_what_to_do() {
        let err = resolve_user("ghost", PASSWD, GROUP).unwrap_err();
        assert_eq!(
            err,
            UserError::UnknownUser {
                user: "ghost".into()
            }
        );
        assert!(err.to_string().contains("numeric uid"), "{err}");
        let err = resolve_user("app:ghosts", PASSWD, GROUP).unwrap_err();
        assert_eq!(
            err,
            UserError::UnknownGroup {
                group: "ghosts".into()
            }
        );
    }

    #[test]
    fn supplementary_groups_list_the_user_by_name() {
        assert_eq!(supplementary_gids(1000, PASSWD, GROUP), [50]);
        assert!(supplementary_gids(0, PASSWD, GROUP).is_empty());
        assert!(supplementary_gids(4242, PASSWD, GROUP).is_empty());
    }

    proptest! {
        #[test]
        fn any_spec_and_files_resolve_or_fail_without_panicking(
            spec in "\\PC{0,20}", passwd in "\\PC{0,200}", group in "\\PC{0,200}"
        ) {
            let _ = resolve_user(&spec, &passwd, &group);
        }
    }
}
