//! Traffic between hosts from inside the test process: a thread that
//! enters a host's network namespace opens sockets there, and those
//! sockets stay in that namespace whichever thread uses them afterwards.
//! The probes tell whether hosts reach each other and what share of
//! packets gets through, so the harness's own tests can check the faults.
//!
//! Invariant: only short-lived probe threads ever change namespace; the
//! test's own threads stay in the root namespace.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use super::Hosts;

/// How long a receiver waits for the next datagram before it concludes
/// that no more are coming.
const RECEIVE_IDLE: Duration = Duration::from_millis(300);

/// How long a receiver waits for the first datagram: the sender may start
/// late on a loaded machine.
const FIRST_DATAGRAM_TIMEOUT: Duration = Duration::from_secs(5);

/// Datagrams per pair in a reachability round: one lost packet does not
/// make a pair look blocked when no loss is in force.
const PROBES_PER_PAIR: usize = 3;

/// Datagrams a loss measurement may send.
const DATAGRAMS_MAX: usize = 100_000;

/// A pause after every this many datagrams, so the receiver keeps up and
/// only the faults drop packets.
const SEND_BURST: usize = 50;

impl Hosts {
    /// Runs `f` on a thread inside host `name`'s network namespace and
    /// returns its result. Sockets `f` opens belong to that host.
    pub fn in_host<T: Send>(&self, name: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
        let netns = std::fs::File::open(self.host(name)?.netns_path())
            .with_context(|| format!("cannot open host {name}'s namespace"))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    rustix::thread::move_into_link_name_space(
                        netns.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .context("cannot enter the host's network namespace (setns)")?;
                    Ok(f())
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?
        })
    }

    /// Whether a TCP connection from host `from` to `to` opens within
    /// `timeout`.
    pub fn tcp_connects(&self, from: &str, to: SocketAddr, timeout: Duration) -> Result<bool> {
        self.in_host(from, || TcpStream::connect_timeout(&to, timeout).is_ok())
    }

    /// A TCP listener on host `name`'s address, on a free port.
    pub fn tcp_listener(&self, name: &str) -> Result<TcpListener> {
        let ip = self.host(name)?.ip();
        self.in_host(name, || TcpListener::bind((ip, 0)))?
            .context("cannot listen on the host")
    }

    /// The (from, to) pairs of hosts between which UDP datagrams get
    /// through right now, probing every ordered pair at once.
    pub fn reachability(&self) -> Result<BTreeSet<(String, String)>> {
        let mut receivers = Vec::new();
        let mut senders = Vec::new();
        for host in self.all() {
            let ip = host.ip();
            receivers.push(self.in_host(host.name(), || UdpSocket::bind((ip, 0)))??);
            senders.push(self.in_host(host.name(), || UdpSocket::bind((ip, 0)))??);
        }
        let targets: Vec<SocketAddr> = receivers
            .iter()
            .map(UdpSocket::local_addr)
            .collect::<std::io::Result<_>>()?;
        for sender in &senders {
            for target in &targets {
                for _ in 0..PROBES_PER_PAIR {
                    // A blocked pair may refuse at once; that is the answer.
                    let _ = sender.send_to(b"probe", target);
                }
            }
        }
        let name_of = |ip: Ipv4Addr| {
            self.all()
                .iter()
                .find(|h| h.ip() == ip)
                .map(|h| h.name().to_string())
        };
        // Every datagram that gets through is there well within this.
        std::thread::sleep(RECEIVE_IDLE);
        let mut reached = BTreeSet::new();
        for (receiver, host) in receivers.iter().zip(self.all()) {
            for source in drain(receiver)? {
                let SocketAddr::V4(source) = source else {
                    continue;
                };
                if let Some(from) = name_of(*source.ip())
                    && from != host.name()
                {
                    reached.insert((from, host.name().to_string()));
                }
            }
        }
        Ok(reached)
    }

    /// How many of `count` UDP datagrams sent from host `from` to host `to`
    /// arrive.
    pub fn udp_delivered(&self, from: &str, to: &str, count: usize) -> Result<usize> {
        ensure!(count <= DATAGRAMS_MAX, "at most {DATAGRAMS_MAX} datagrams");
        let (from_ip, to_ip) = (self.host(from)?.ip(), self.host(to)?.ip());
        let receiver = self.in_host(to, || UdpSocket::bind((to_ip, 0)))??;
        let sender = self.in_host(from, || UdpSocket::bind((from_ip, 0)))??;
        let target = receiver.local_addr()?;
        let counting = std::thread::spawn(move || received_from(&receiver).map(|v| v.len()));
        for sent in 0..count {
            let _ = sender.send_to(&sent.to_be_bytes(), target);
            if sent % SEND_BURST == SEND_BURST - 1 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        counting
            .join()
            .map_err(|_| anyhow::anyhow!("the receiving thread panicked"))?
    }
}

/// The source of every datagram waiting on `socket`.
fn drain(socket: &UdpSocket) -> Result<Vec<SocketAddr>> {
    socket.set_nonblocking(true)?;
    let mut sources = Vec::new();
    let mut buffer = [0_u8; 64];
    while sources.len() <= DATAGRAMS_MAX {
        match socket.recv_from(&mut buffer) {
            Ok((_, source)) => sources.push(source),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(sources)
}

/// The source of every datagram `socket` receives until none came for
/// `RECEIVE_IDLE` (`FIRST_DATAGRAM_TIMEOUT` for the first one).
fn received_from(socket: &UdpSocket) -> Result<Vec<SocketAddr>> {
    socket.set_read_timeout(Some(FIRST_DATAGRAM_TIMEOUT))?;
    let mut sources = Vec::new();
    let mut buffer = [0_u8; 64];
    let started = Instant::now();
    // Bounded by the largest measurement, plus slack for stray packets.
    while sources.len() <= DATAGRAMS_MAX * 2 && started.elapsed() < Duration::from_secs(60) {
        match socket.recv_from(&mut buffer) {
            Ok((_, source)) => {
                if sources.is_empty() {
                    socket.set_read_timeout(Some(RECEIVE_IDLE))?;
                }
                sources.push(source);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(sources)
}
