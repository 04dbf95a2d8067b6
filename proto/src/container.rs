//! The values some `ContainerSpec` fields may take: part of the contract
//! between the managers, which refuse a spec outside it, and the agents,
//! which build containers from it.

/// The ulimit names a spec may use (`RLIMIT_` + the name in upper case).
pub const ULIMIT_NAMES: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// The IPC sysctls that are namespaced (Docker's list).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// How far a sysctl of a container reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlScope {
    /// `net.*`: the network namespace (the node's with `--network host`).
    Network,
    /// The container's IPC namespace.
    Ipc,
    /// Not namespaced: it would change the whole node.
    Node,
}

/// What setting the sysctl `name` inside a container would change.
pub fn sysctl_scope(name: &str) -> SysctlScope {
    if name.starts_with("net.") {
        SysctlScope::Network
    } else if IPC_SYSCTLS.contains(&name) || name.starts_with("fs.mqueue.") {
        SysctlScope::Ipc
    } else {
        SysctlScope::Node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_namespaced_sysctls_stay_in_the_container() {
        assert_eq!(sysctl_scope("net.core.somaxconn"), SysctlScope::Network);
        assert_eq!(sysctl_scope("kernel.shmmax"), SysctlScope::Ipc);
        assert_eq!(sysctl_scope("fs.mqueue.msg_max"), SysctlScope::Ipc);
        assert_eq!(sysctl_scope("kernel.pid_max"), SysctlScope::Node);
        assert_eq!(sysctl_scope("vm.swappiness"), SysctlScope::Node);
    }
}
