//! From a task to what its shim runs: the program found on PATH, the user
//! and group resolved, the environment completed, the working directory
//! and the limits checked. Every error here means the task can never run
//! on this node as specified (REJECTED).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rswarm_proto::Task;

use crate::runtime::RuntimeError;
use crate::runtime::cgroup::{Cgroups, TaskLimits};
use crate::runtime::limits::DEFAULT_PATH;
use crate::runtime::task_dirs::check_task_id;
use crate::runtime::user::resolve_user;
use crate::shim::records::Credentials;

/// A task ready to hand to a shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ResolvedTask {
    pub program: PathBuf,
    /// The command as the user wrote it, for `argv[0]`.
    pub arg0: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub dir: PathBuf,
    pub credentials: Option<Credentials>,
    pub limits: TaskLimits,
}

/// Where the resolver reads the host's users and groups.
#[derive(Debug, Clone, Copy)]
pub(super) struct HostFiles<'a> {
    pub passwd: &'a Path,
    pub group: &'a Path,
}

impl HostFiles<'static> {
    /// The host's own `/etc/passwd` and `/etc/group`.
    pub(super) fn system() -> Self {
        HostFiles {
            passwd: Path::new("/etc/passwd"),
            group: Path::new("/etc/group"),
        }
    }
}

/// Resolves `task` on this host.
pub(super) fn resolve(
    task: &Task,
    cgroups: &Cgroups,
    files: HostFiles<'_>,
) -> Result<ResolvedTask, RuntimeError> {
    check_task_id(task.meta.as_ref().map_or("", |m| m.id.as_str()))?;
    let spec = task.spec.as_ref();
    let container = spec
        .and_then(|s| s.container.as_ref())
        .ok_or(RuntimeError::NoContainerSpec)?;
    if !container.image.is_empty() {
        return Err(RuntimeError::ImageGiven {
            image: container.image.clone(),
        });
    }
    let mut argv = container.command.iter().chain(&container.args).cloned();
    let arg0 = argv.next().ok_or(RuntimeError::NoCommand)?;
    if arg0.is_empty() {
        return Err(RuntimeError::NoCommand);
    }
    let (credentials, home) = resolve_credentials(&container.user, files)?;
    let env = task_env(&container.env, &home)?;
    let dir = workdir(&container.dir)?;
    let program = find_program(&arg0, &dir, path_of(&env))?;
    let limits = TaskLimits::of_task(task)?;
    cgroups.check(&limits)?;
    Ok(ResolvedTask {
        program,
        arg0,
        args: argv.collect(),
        env,
        dir,
        credentials,
        limits,
    })
}

fn resolve_credentials(
    user: &str,
    files: HostFiles<'_>,
) -> Result<(Option<Credentials>, PathBuf), RuntimeError> {
    if user.is_empty() {
        return Ok((None, PathBuf::from("/root")));
    }
    // A node without these files has no users but root and numeric ones.
    let passwd = std::fs::read_to_string(files.passwd).unwrap_or_default();
    let group = std::fs::read_to_string(files.group).unwrap_or_default();
    let user = resolve_user(user, &passwd, &group)?;
    let credentials = Credentials {
        uid: user.uid,
        gid: user.gid,
    };
    Ok((Some(credentials), user.home))
}

/// The task's environment: PATH and HOME unless the spec sets them, then
/// the spec's entries (a later entry wins over an earlier one).
fn task_env(entries: &[String], home: &Path) -> Result<Vec<String>, RuntimeError> {
    let mut env: Vec<String> = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOME={}", home.display()),
    ];
    for entry in entries {
        let key = match entry.split_once('=') {
            Some((key, _)) if !key.is_empty() && !entry.contains('\0') => key,
            _ => {
                return Err(RuntimeError::BadEnv {
                    entry: entry.clone(),
                });
            }
        };
        env.retain(|existing| existing.split_once('=').map(|(k, _)| k) != Some(key));
        env.push(entry.clone());
    }
    Ok(env)
}

pub(super) fn path_of(env: &[String]) -> &str {
    env.iter()
        .rev()
        .find_map(|entry| entry.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
}

fn workdir(dir: &str) -> Result<PathBuf, RuntimeError> {
    if dir.is_empty() {
        return Ok(PathBuf::from("/"));
    }
    let bad = |reason| RuntimeError::BadWorkdir {
        dir: dir.to_string(),
        reason,
    };
    let path = PathBuf::from(dir);
    if !path.is_absolute() {
        return Err(bad("is not an absolute path"));
    }
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => Ok(path),
        Ok(_) => Err(bad("is not a directory")),
        Err(_) => Err(bad("does not exist on this node")),
    }
}

/// The program `command` names: an absolute path, a path relative to the
/// working directory, or a name looked up in `path`.
pub(super) fn find_program(command: &str, dir: &Path, path: &str) -> Result<PathBuf, RuntimeError> {
    if command.contains('/') {
        let program = dir.join(command);
        return if is_executable(&program) {
            Ok(program)
        } else {
            Err(RuntimeError::NotExecutable { path: program })
        };
    }
    path.split(':')
        .filter(|entry| !entry.is_empty())
        .map(|entry| Path::new(entry).join(command))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| RuntimeError::CommandNotFound {
            command: command.to_string(),
            path: path.to_string(),
        })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rswarm_proto::{ContainerSpec, Meta, ResourceRequirements, Resources, TaskSpec};

    fn task(container: ContainerSpec) -> Task {
        Task {
            meta: Some(Meta {
                id: "t1".into(),
                ..Meta::default()
            }),
            spec: Some(TaskSpec {
                container: Some(container),
                driver: "process".into(),
                ..TaskSpec::default()
            }),
            ..Task::default()
        }
    }

    fn command(argv: &[&str]) -> ContainerSpec {
        ContainerSpec {
            command: argv.iter().map(|s| s.to_string()).collect(),
            ..ContainerSpec::default()
        }
    }

    fn no_cgroups() -> Cgroups {
        Cgroups::detect_from_mounts("", "rswarm")
    }

    fn resolve_here(task: &Task) -> Result<ResolvedTask, RuntimeError> {
        resolve(task, &no_cgroups(), HostFiles::system())
    }

    #[test]
    fn a_command_is_found_on_path_with_its_arguments() {
        let mut spec = command(&["sh", "-c"]);
        spec.args = vec!["exit 3".into()];
        let resolved = resolve_here(&task(spec)).unwrap();
        assert!(resolved.program.ends_with("sh"), "{resolved:?}");
        assert!(resolved.program.is_absolute());
        assert_eq!(resolved.arg0, "sh");
        assert_eq!(resolved.args, ["-c", "exit 3"]);
        assert_eq!(resolved.dir, PathBuf::from("/"));
        assert_eq!(resolved.credentials, None);
        assert!(resolved.env.contains(&format!("PATH={DEFAULT_PATH}")));
    }

    #[test]
    fn the_task_env_wins_over_the_defaults() {
        let mut spec = command(&["/bin/true"]);
        spec.env = vec![
            "PATH=/bin".into(),
            "A=1".into(),
            "A=2".into(),
            "B=x=y".into(),
        ];
        let resolved = resolve_here(&task(spec)).unwrap();
        assert_eq!(resolved.env, ["HOME=/root", "PATH=/bin", "A=2", "B=x=y"]);
    }

    #[test]
    fn specs_that_cannot_run_are_rejected_with_the_reason() {
        let cases: Vec<(ContainerSpec, &str)> = vec![
            (command(&[]), "needs a command"),
            (command(&["no-such-command-here"]), "not found in PATH"),
            (command(&["/etc/passwd"]), "not an executable"),
            (
                ContainerSpec {
                    image: "busybox".into(),
                    ..command(&["sh"])
                },
                "not images",
            ),
            (
                ContainerSpec {
                    dir: "relative".into(),
                    ..command(&["sh"])
                },
                "not an absolute path",
            ),
            (
                ContainerSpec {
                    dir: "/no/such/dir".into(),
                    ..command(&["sh"])
                },
                "does not exist",
            ),
            (
                ContainerSpec {
                    user: "no-such-user-here".into(),
                    ..command(&["sh"])
                },
                "not in /etc/passwd",
            ),
            (
                ContainerSpec {
                    env: vec!["NOEQUALS".into()],
                    ..command(&["sh"])
                },
                "KEY=VALUE",
            ),
        ];
        for (spec, expected) in cases {
            let err = resolve_here(&task(spec.clone())).unwrap_err();
            assert!(err.rejects_task(), "{spec:?}: {err}");
            assert!(err.to_string().contains(expected), "{spec:?}: {err}");
        }
    }

    #[test]
    fn limits_need_their_controllers() {
        let mut task = task(command(&["sh"]));
        if let Some(spec) = task.spec.as_mut() {
            spec.resources = Some(ResourceRequirements {
                limits: Some(Resources {
                    nano_cpus: 0,
                    memory_bytes: 64 << 20,
                }),
                reservations: None,
                pids_limit: 0,
            });
        }
        let err = resolve_here(&task).unwrap_err();
        assert!(err.rejects_task());
        assert!(err.to_string().contains("memory controller"), "{err}");
    }
}
