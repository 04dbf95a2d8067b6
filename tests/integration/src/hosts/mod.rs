//! Hosts made of network namespaces, and the network faults between them.
//!
//! A host is a network namespace with one link, `eth0`, and an address on
//! the underlay 192.0.2.0/24 (a documentation range): host `i` has
//! 192.0.2.(i+1). Its link is one end of a veth pair whose other end,
//! `p-<host name>`, is a port of the bridge `fabric0` in a namespace of its
//! own, the fabric. Every namespace and link is created inside the run's
//! own namespaces (`ip -n`), never in the root namespace, whose links,
//! routes and firewall stay untouched; two runs can use the same addresses
//! because each has its own fabric.
//!
//! Faults are nftables rules in the fabric's bridge table (see `faults`):
//! partitions between any sets of hosts (both ways or one way), random
//! packet loss on a host's link, a host cut off entirely; heal one host or
//! all. This kernel has no netem, so there is no delay or jitter injection.
//! Process faults (kill -9, SIGSTOP/SIGCONT, restart) are on [`crate::Node`].
//!
//! Everything is named after the run (`rswarm-t<pid>-<seq>-<host>`, see
//! `run`) and removed on drop, on interrupt, or by the next run if this one
//! was killed: the processes in each namespace are killed, then the
//! namespace is deleted, which deletes its links.
//!
//! Invariant: the hosts' indices, addresses and bridge ports never change
//! while the `Hosts` lives; a host is only ever added.

mod faults;
mod probe;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::run::{RunId, netns_path, remove_netns};
use faults::FaultSet;

/// The port every daemon on a host listens on: the default, since every
/// host has its own addresses.
pub const CLUSTER_PORT: u16 = 7377;

/// The first three octets of the underlay, 192.0.2.0/24 (TEST-NET-1).
const UNDERLAY_NET: [u8; 3] = [192, 0, 2];

/// The underlay's prefix length.
const UNDERLAY_PREFIX_LEN: u8 = 24;

/// Hosts per fabric: one address each in the /24, .1 to .250.
pub const HOSTS_MAX: usize = 250;

/// A host name's length limit: the bridge port `p-<name>` must fit the
/// kernel's 15-byte interface names.
const HOST_NAME_LEN_MAX: usize = 12;

/// How long a new host's link has to come up.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// The bridge in the fabric namespace.
const BRIDGE: &str = "fabric0";

/// The host's end of its link.
const HOST_LINK: &str = "eth0";

/// The tools the hosts are made with, and the Debian package of each.
const TOOLS: [(&str, &str); 4] = [
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("nsenter", "util-linux"),
    ("setpriv", "util-linux"),
];

/// One host: a network namespace with an underlay address.
#[derive(Debug, Clone)]
pub struct Host {
    name: String,
    index: usize,
    ip: Ipv4Addr,
    netns: String,
}

impl Host {
    /// Its name (the node name of the daemon on it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its underlay address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The name of its network namespace (for `ip netns exec`).
    pub fn netns_name(&self) -> &str {
        &self.netns
    }

    /// The path of its network namespace (for `nsenter --net=`).
    pub fn netns_path(&self) -> PathBuf {
        netns_path(&self.netns)
    }

    /// A command that runs `program` inside this host's network namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns_path().display()))
            .arg("--")
            .arg(program);
        command
    }

    /// The processes running in this host's network namespace: its daemon,
    /// task shims and tasks.
    pub fn pids(&self) -> Vec<u32> {
        crate::run::pids_in_netns(&self.netns_path())
    }

    fn port(&self) -> String {
        bridge_port(&self.name)
    }
}

/// The fabric-side end of a host's link.
fn bridge_port(host: &str) -> String {
    format!("p-{host}")
}

/// The hosts of one run, their fabric, and the network faults in force.
pub struct Hosts {
    run: Arc<RunId>,
    fabric: String,
    hosts: Vec<Host>,
    faults: Mutex<FaultSet>,
}

impl Hosts {
    /// Makes one host per name on a new fabric.
    pub fn new(names: &[&str]) -> Result<Self> {
        Self::create(Arc::new(RunId::new()), names)
    }

    /// Makes one host per name on a new fabric, named after `run`.
    pub(crate) fn create(run: Arc<RunId>, names: &[&str]) -> Result<Self> {
        check_prerequisites()?;
        let mut hosts = Self {
            fabric: run.name("fabric"),
            run,
            hosts: Vec::new(),
            faults: Mutex::new(FaultSet::default()),
        };
        hosts.create_fabric()?;
        for name in names {
            hosts.add_unwaited(name)?;
        }
        for host in &hosts.hosts {
            hosts.wait_link_up(host)?;
        }
        Ok(hosts)
    }

    fn create_fabric(&self) -> Result<()> {
        let fabric = self.fabric.as_str();
        ip(&["netns", "add", fabric])?;
        ip(&["-n", fabric, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", fabric, "link", "set", BRIDGE, "up"])?;
        let table = format!(
            "add table bridge {t}\nadd chain bridge {t} {c} {{ type filter hook forward priority 0; policy accept; }}\n",
            t = faults::TABLE,
            c = faults::CHAIN,
        );
        self.nft(&table).context(
            "cannot make the fabric's nftables table: this kernel needs nf_tables with the bridge family",
        )
    }

    /// Adds a host `name` to the fabric and returns it once its link
    /// carries traffic.
    pub fn add(&mut self, name: &str) -> Result<&Host> {
        let index = self.add_unwaited(name)?.index;
        self.wait_link_up(&self.hosts[index])?;
        Ok(&self.hosts[index])
    }

    /// Adds a host `name` to the fabric; its link may not carry traffic yet.
    fn add_unwaited(&mut self, name: &str) -> Result<&Host> {
        check_host_name(name)?;
        ensure!(
            self.hosts.iter().all(|h| h.name != name),
            "host {name} already exists"
        );
        ensure!(
            self.hosts.len() < HOSTS_MAX,
            "a fabric holds at most {HOSTS_MAX} hosts"
        );
        let index = self.hosts.len();
        let [a, b, c] = UNDERLAY_NET;
        let octet = u8::try_from(index + 1).context("host index out of the /24")?;
        let host = Host {
            name: name.to_string(),
            index,
            ip: Ipv4Addr::new(a, b, c, octet),
            netns: self.run.name(name),
        };
        if let Err(e) = self.link_host(&host) {
            remove_netns(&host.netns);
            return Err(e.context(format!("cannot make host {name}")));
        }
        self.hosts.push(host);
        Ok(&self.hosts[index])
    }

    /// Makes `host`'s namespace and plugs it into the bridge.
    fn link_host(&self, host: &Host) -> Result<()> {
        let (fabric, netns, port) = (self.fabric.as_str(), host.netns.as_str(), host.port());
        let address = format!("{}/{UNDERLAY_PREFIX_LEN}", host.ip);
        ip(&["netns", "add", netns])?;
        ip(&[
            "-n", fabric, "link", "add", &port, "type", "veth", "peer", "name", HOST_LINK, "netns",
            netns,
        ])?;
        ip(&["-n", fabric, "link", "set", &port, "master", BRIDGE, "up"])?;
        ip(&["-n", netns, "addr", "add", &address, "dev", HOST_LINK])?;
        ip(&["-n", netns, "link", "set", HOST_LINK, "up"])?;
        ip(&["-n", netns, "link", "set", "lo", "up"])
    }

    /// Waits until both ends of `host`'s link are up and its bridge port
    /// forwards. Until the kernel has processed the carrier change (its
    /// link watch runs late on a loaded machine), a new link drops
    /// everything.
    fn wait_link_up(&self, host: &Host) -> Result<()> {
        let port = host.port();
        let up = |netns: &str, link: &str, forwarding: bool| -> Result<bool> {
            let out = Command::new("ip")
                .args(["-n", netns, "-d", "-o", "link", "show", link])
                .output()
                .context("cannot run ip (iproute2)")?;
            let text = String::from_utf8_lossy(&out.stdout);
            Ok(text.contains("state UP")
                && (!forwarding || text.contains("bridge_slave state forwarding")))
        };
        crate::wait_until(LINK_UP_TIMEOUT, || {
            Ok(up(&self.fabric, &port, true)? && up(&host.netns, HOST_LINK, false)?)
        })
        .with_context(|| format!("the link of host {} did not come up", host.name))
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .with_context(|| format!("no host {name}"))
    }

    /// Every host, in creation order.
    pub fn all(&self) -> &[Host] {
        &self.hosts
    }

    /// The prefix every name of this run starts with.
    pub fn prefix(&self) -> &str {
        self.run.prefix()
    }

    /// The name of the fabric's network namespace.
    pub fn fabric_netns(&self) -> &str {
        &self.fabric
    }

    fn indices(&self, names: &[&str]) -> Result<Vec<usize>> {
        names
            .iter()
            .map(|n| self.host(n).map(|h| h.index))
            .collect()
    }

    /// Drops all IP traffic between every host of `side_a` and every host
    /// of `side_b`, both ways. Adds to the faults in force.
    pub fn partition(&self, side_a: &[&str], side_b: &[&str]) -> Result<()> {
        let (a, b) = (self.indices(side_a)?, self.indices(side_b)?);
        self.change_faults(|f| {
            f.block(&a, &b);
            f.block(&b, &a);
        })
    }

    /// Drops IP traffic from every host of `from` to every host of `to`;
    /// the other direction still flows.
    pub fn partition_one_way(&self, from: &[&str], to: &[&str]) -> Result<()> {
        let (from, to) = (self.indices(from)?, self.indices(to)?);
        self.change_faults(|f| f.block(&from, &to))
    }

    /// Cuts host `name` off: no IP traffic to or from it.
    pub fn isolate(&self, name: &str) -> Result<()> {
        let host = self.host(name)?.index;
        self.change_faults(|f| f.cut(host))
    }

    /// Makes host `name`'s link drop `percent` % of IP packets each way,
    /// at random (0 restores it).
    pub fn set_loss(&self, name: &str, percent: u8) -> Result<()> {
        ensure!(percent <= 100, "loss is a percentage: {percent} > 100");
        let host = self.host(name)?.index;
        self.change_faults(|f| f.set_loss(host, percent))
    }

    /// Removes every fault that involves host `name`.
    pub fn heal(&self, name: &str) -> Result<()> {
        let host = self.host(name)?.index;
        self.change_faults(|f| f.heal(host))
    }

    /// Removes every fault.
    pub fn heal_all(&self) -> Result<()> {
        self.change_faults(|f| *f = FaultSet::default())
    }

    /// The faults in force, in words (`m1 -/-> m2, w1 loses 20%`).
    pub fn describe_faults(&self) -> String {
        let name = |i: usize| self.hosts[i].name.clone();
        self.faults().describe(name)
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, FaultSet> {
        self.faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies `change` to the faults and installs the result; on failure
    /// the faults in force stay as they were.
    fn change_faults(&self, change: impl FnOnce(&mut FaultSet)) -> Result<()> {
        let mut faults = self.faults();
        let mut next = faults.clone();
        change(&mut next);
        let port = |i: usize| self.hosts[i].port();
        self.nft(&next.render(port))
            .context("cannot install the network faults")?;
        *faults = next;
        Ok(())
    }

    /// Runs an nftables script in the fabric namespace, as one transaction.
    fn nft(&self, script: &str) -> Result<()> {
        use std::io::Write;
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", netns_path(&self.fabric).display()))
            .args(["--", "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run nft")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "nft failed: {}\nscript:\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for host in &self.hosts {
            remove_netns(&host.netns);
        }
        remove_netns(&self.fabric);
    }
}

// A nemesis thread injects faults while client threads use the same hosts.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Hosts>();
};

/// Runs `ip ARGS`; fails with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ip (iproute2)")?;
    ensure!(
        out.status.success(),
        "'ip {}' failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn check_host_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= HOST_NAME_LEN_MAX
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ensure!(
        valid && name != "fabric",
        "invalid host name {name:?}: use 1 to {HOST_NAME_LEN_MAX} lower-case letters, digits or '-', starting with a letter (not \"fabric\")"
    );
    Ok(())
}

/// Fails with the fix when this process cannot make hosts: it must be root
/// and have `ip`, `nft`, `nsenter` and `setpriv`. Checked once.
pub fn check_prerequisites() -> Result<()> {
    static CHECKED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        if !rustix::process::geteuid().is_root() {
            return Err("the multi-host harness makes network namespaces and needs root \
                 (CAP_SYS_ADMIN and CAP_NET_ADMIN): run the tests as root"
                .to_string());
        }
        let missing: Vec<String> = TOOLS
            .iter()
            .filter(|(tool, _)| !on_path(tool))
            .map(|(tool, package)| format!("{tool} (Debian package {package})"))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the multi-host harness needs {}: install them with 'apt-get install -y iproute2 nftables util-linux', or run deploy/test.sh, which does",
                missing.join(", ")
            ));
        }
        Ok(())
    });
    match checked {
        Ok(()) => Ok(()),
        Err(message) => bail!("{message}"),
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| is_file(&dir.join(tool))))
        .unwrap_or(false)
}

fn is_file(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file())
}
