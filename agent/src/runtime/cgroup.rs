//! Resource limits of process tasks through cgroups, v1 or v2, whichever
//! the host has for each controller (found once, from `/proc/self/mounts`).
//!
//! A task that asks for a limit gets one cgroup per hierarchy it needs,
//! `<mount>/<parent>/<task id>` (parent `rswarm` by default); a task without
//! limits gets none. Owns creating those cgroups, writing their limits,
//! killing what is left in them and removing them; the shim puts the task
//! in (see `shim::records::CgroupPlacement`).
//!
//! Invariants: a controller is used on cgroup v1 when a v1 hierarchy has it,
//! else on cgroup v2 when the v2 root offers it; a missing controller is an
//! error naming it, never a silently unlimited task. Paths derive from the
//! task id alone, so removal needs no record.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::shim::records::CgroupPlacement;

/// CFS period for CPU limits (the kernel's default, Docker's too).
pub const CPU_PERIOD_US: i64 = 100_000;
/// Smallest CFS quota the kernel accepts.
const CPU_QUOTA_US_MIN: i64 = 1_000;
/// Attempts to remove a cgroup whose last processes are still exiting.
const REMOVE_ATTEMPTS_MAX: u32 = 20;
/// Pause between those attempts.
const REMOVE_RETRY_DELAY: Duration = Duration::from_millis(50);

/// The controllers rswarm sets limits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Controller {
    Cpu,
    Memory,
    Pids,
}

impl Controller {
    /// The kernel's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
        }
    }
}

/// The limits of one task; 0 means none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskLimits {
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    pub pids: i64,
}

impl TaskLimits {
    /// The limits `task`'s spec sets; a negative one rejects the task.
    pub fn of_task(task: &rswarm_proto::Task) -> Result<Self, crate::runtime::RuntimeError> {
        let resources = task.spec.as_ref().and_then(|s| s.resources.as_ref());
        let limits = resources.and_then(|r| r.limits.as_ref());
        let result = TaskLimits {
            nano_cpus: limits.map_or(0, |l| l.nano_cpus),
            memory_bytes: limits.map_or(0, |l| l.memory_bytes),
            pids: resources.map_or(0, |r| r.pids_limit),
        };
        for (limit, value) in [
            ("cpus", result.nano_cpus),
            ("memory", result.memory_bytes),
            ("pids", result.pids),
        ] {
            if value < 0 {
                return Err(crate::runtime::RuntimeError::NegativeLimit { limit, value });
            }
        }
        Ok(result)
    }

    /// The controllers these limits need.
    pub fn controllers(&self) -> Vec<Controller> {
        let mut needed = Vec::new();
        if self.nano_cpus > 0 {
            needed.push(Controller::Cpu);
        }
        if self.memory_bytes > 0 {
            needed.push(Controller::Memory);
        }
        if self.pids > 0 {
            needed.push(Controller::Pids);
        }
        needed
    }

    /// The CFS quota for `nano_cpus`, per `CPU_PERIOD_US`.
    pub fn cpu_quota_us(&self) -> i64 {
        (self.nano_cpus.saturating_mul(CPU_PERIOD_US) / 1_000_000_000).max(CPU_QUOTA_US_MIN)
    }
}

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    mount: PathBuf,
    /// Controllers bound to it (v1), or offered at its root (v2).
    controllers: Vec<String>,
    v2: bool,
}

/// Why a task's cgroups could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// No hierarchy has the controller a limit needs.
    #[error(
        "the task sets a {limit} limit but this node has no cgroup {controller} controller \
         (neither a cgroup v1 hierarchy nor the cgroup v2 root offers it); enable the controller \
         on the node or drop the limit"
    )]
    MissingController {
        controller: &'static str,
        limit: &'static str,
    },
    /// A cgroup file could not be written.
    #[error("cannot set up cgroup {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The cgroup hierarchies of this host.
#[derive(Debug, Clone)]
pub struct Cgroups {
    hierarchies: Vec<Hierarchy>,
    parent: String,
}

impl Cgroups {
    /// Finds the hierarchies from `/proc/self/mounts`; task cgroups go
    /// under `parent` in each. A host without cgroups gives an empty set
    /// (tasks with limits are then refused).
    pub fn detect(parent: &str) -> Self {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        Self::detect_from_mounts(&mounts, parent)
    }

    /// As `detect`, from the given text of `/proc/self/mounts`.
    pub fn detect_from_mounts(mounts: &str, parent: &str) -> Self {
        let mut hierarchies = parse_mounts(mounts);
        for hierarchy in hierarchies.iter_mut().filter(|h| h.v2) {
            hierarchy.controllers =
                std::fs::read_to_string(hierarchy.mount.join("cgroup.controllers"))
                    .map(|text| text.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default();
        }
        Self {
            hierarchies,
            parent: parent.to_string(),
        }
    }

    /// Checks that every controller `limits` need is there.
    pub fn check(&self, limits: &TaskLimits) -> Result<(), CgroupError> {
        for controller in limits.controllers() {
            self.hierarchy_for(controller)?;
        }
        Ok(())
    }

    /// Makes the task's cgroups and writes its limits; returns where the
    /// shim must put the task.
    pub fn create(
        &self,
        task_id: &str,
        limits: &TaskLimits,
    ) -> Result<Vec<CgroupPlacement>, CgroupError> {
        let mut placements: Vec<CgroupPlacement> = Vec::new();
        for controller in limits.controllers() {
            let hierarchy = self.hierarchy_for(controller)?;
            let dir = self.task_dir(hierarchy, task_id);
            if !placements.iter().any(|p| p.dir == dir) {
                self.make_dir(hierarchy, &dir, &limits.controllers())?;
                placements.push(CgroupPlacement {
                    dir: dir.clone(),
                    mount: hierarchy.mount.clone(),
                    hierarchy: if hierarchy.v2 {
                        String::new()
                    } else {
                        hierarchy.controllers.join(",")
                    },
                });
            }
            write_limit(&dir, controller, hierarchy.v2, limits)?;
        }
        Ok(placements)
    }

    /// Kills what is left in the task's cgroups and removes them.
    pub async fn remove(&self, task_id: &str) -> Result<(), CgroupError> {
        for hierarchy in &self.hierarchies {
            let dir = self.task_dir(hierarchy, task_id);
            if dir.exists() {
                remove_dir(&dir).await?;
            }
        }
        Ok(())
    }

    /// The memory cgroup runc makes for a container whose `cgroupsPath`
    /// is `/<parent>/<task id>`, with whether it is on cgroup v2.
    pub fn memory_dir(&self, task_id: &str) -> Option<(PathBuf, bool)> {
        let hierarchy = self.hierarchy_for(Controller::Memory).ok()?;
        Some((self.task_dir(hierarchy, task_id), hierarchy.v2))
    }

    /// The cgroup under which task cgroups go, in each hierarchy.
    pub fn parent(&self) -> &str {
        &self.parent
    }

    fn hierarchy_for(&self, controller: Controller) -> Result<&Hierarchy, CgroupError> {
        let offers = |h: &&Hierarchy| h.controllers.iter().any(|c| c == controller.name());
        self.hierarchies
            .iter()
            .filter(|h| !h.v2)
            .find(offers)
            .or_else(|| self.hierarchies.iter().filter(|h| h.v2).find(offers))
            .ok_or(CgroupError::MissingController {
                controller: controller.name(),
                limit: match controller {
                    Controller::Cpu => "CPU",
                    Controller::Memory => "memory",
                    Controller::Pids => "pids",
                },
            })
    }

    fn task_dir(&self, hierarchy: &Hierarchy, task_id: &str) -> PathBuf {
        hierarchy.mount.join(&self.parent).join(task_id)
    }

    /// Creates `dir`; on v2 first lets the controllers down to it.
    fn make_dir(
        &self,
        hierarchy: &Hierarchy,
        dir: &Path,
        controllers: &[Controller],
    ) -> Result<(), CgroupError> {
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CgroupError::Io { path, source }
        };
        if hierarchy.v2 {
            let parent = hierarchy.mount.join(&self.parent);
            std::fs::create_dir_all(&parent).map_err(io_error(&parent))?;
            let enable: Vec<String> = controllers
                .iter()
                .map(|c| c.name())
                .filter(|c| hierarchy.controllers.iter().any(|offered| offered == c))
                .map(|c| format!("+{c}"))
                .collect();
            for level in [&hierarchy.mount, &parent] {
                let file = level.join("cgroup.subtree_control");
                std::fs::write(&file, enable.join(" ")).map_err(io_error(&file))?;
            }
        }
        std::fs::create_dir_all(dir).map_err(io_error(dir))
    }
}

/// Writes the limit of `controller` into the task's cgroup `dir`.
fn write_limit(
    dir: &Path,
    controller: Controller,
    v2: bool,
    limits: &TaskLimits,
) -> Result<(), CgroupError> {
    let files: Vec<(&str, String)> = match (controller, v2) {
        (Controller::Memory, false) => {
            vec![("memory.limit_in_bytes", limits.memory_bytes.to_string())]
        }
        (Controller::Memory, true) => vec![("memory.max", limits.memory_bytes.to_string())],
        (Controller::Pids, _) => vec![("pids.max", limits.pids.to_string())],
        (Controller::Cpu, false) => vec![
            ("cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
            ("cpu.cfs_quota_us", limits.cpu_quota_us().to_string()),
        ],
        (Controller::Cpu, true) => vec![(
            "cpu.max",
            format!("{} {CPU_PERIOD_US}", limits.cpu_quota_us()),
        )],
    };
    for (name, value) in files {
        let path = dir.join(name);
        std::fs::write(&path, value).map_err(|source| CgroupError::Io { path, source })?;
    }
    Ok(())
}

/// Kills the processes left in `dir`, then removes it, retrying while they
/// exit.
async fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    let mut attempt = 0;
    loop {
        kill_all(dir);
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) if attempt + 1 >= REMOVE_ATTEMPTS_MAX => {
                return Err(CgroupError::Io {
                    path: dir.to_path_buf(),
                    source,
                });
            }
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(REMOVE_RETRY_DELAY).await;
            }
        }
    }
}

fn kill_all(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), b"1").is_ok() {
        return;
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    let pids = procs.lines().filter_map(|l| l.trim().parse::<i32>().ok());
    for pid in pids.filter_map(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// The cgroup hierarchies in the text of `/proc/self/mounts`: v1 ones with
/// their controllers, v2 ones with none yet (read from the mount later).
fn parse_mounts(mounts: &str) -> Vec<Hierarchy> {
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (mount, fstype, options) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
            let mount = PathBuf::from(unescape_mount(mount));
            match *fstype {
                "cgroup2" => Some(Hierarchy {
                    mount,
                    controllers: Vec::new(),
                    v2: true,
                }),
                "cgroup" => Some(Hierarchy {
                    mount,
                    controllers: options
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o))
                        .map(str::to_string)
                        .collect(),
                    v2: false,
                }),
                _ => None,
            }
        })
        .collect()
}

/// The controller names a v1 mount's options may list (the rest are mount
/// options such as `rw` or `name=systemd`).
const V1_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "blkio",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// `/proc/mounts` writes spaces and a few others as octal escapes.
fn unescape_mount(path: &str) -> String {
    path.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,memory 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    fn cgroups(hierarchies: Vec<Hierarchy>) -> Cgroups {
        Cgroups {
            hierarchies,
            parent: "rswarm".into(),
        }
    }

    #[test]
    fn v1_mounts_list_their_controllers() {
        let found = parse_mounts(HYBRID);
        assert_eq!(found.len(), 4);
        assert_eq!(found[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(found[1].controllers, ["memory"]);
        assert!(
            found[2].controllers.is_empty(),
            "name=systemd is no controller"
        );
        assert!(found[3].v2);
    }

    #[test]
    fn v1_is_preferred_and_v2_fills_in() {
        let mut hierarchies = parse_mounts(HYBRID);
        hierarchies[3].controllers = vec!["pids".into(), "memory".into()];
        let cgroups = cgroups(hierarchies);
        let memory = cgroups.hierarchy_for(Controller::Memory).unwrap();
        assert_eq!(memory.mount, PathBuf::from("/sys/fs/cgroup/memory"));
        let pids = cgroups.hierarchy_for(Controller::Pids).unwrap();
        assert!(pids.v2);
        assert_eq!(
            cgroups.task_dir(pids, "t1"),
            PathBuf::from("/sys/fs/cgroup/unified/rswarm/t1")
        );
    }

    #[test]
    fn a_missing_controller_is_named() {
        let cgroups = cgroups(parse_mounts(HYBRID));
        let limits = TaskLimits {
            pids: 10,
            ..TaskLimits::default()
        };
        let err = cgroups.check(&limits).unwrap_err();
        assert!(matches!(
            err,
            CgroupError::MissingController {
                controller: "pids",
                ..
            }
        ));
        assert!(err.to_string().contains("pids controller"), "{err}");
        assert!(
            cgroups.check(&TaskLimits::default()).is_ok(),
            "no limit, no cgroup"
        );
    }

    #[test]
    fn cpu_quota_follows_nano_cpus_with_a_floor() {
        let quota = |nano_cpus| {
            TaskLimits {
                nano_cpus,
                ..TaskLimits::default()
            }
            .cpu_quota_us()
        };
        assert_eq!(quota(1_000_000_000), 100_000);
        assert_eq!(quota(1_500_000_000), 150_000);
        assert_eq!(quota(1), CPU_QUOTA_US_MIN);
    }

    #[test]
    fn escaped_mount_points_are_read_back() {
        let found = parse_mounts("cgroup2 /mnt/my\\040cgroups cgroup2 rw 0 0\n");
        assert_eq!(found[0].mount, PathBuf::from("/mnt/my cgroups"));
    }
}
