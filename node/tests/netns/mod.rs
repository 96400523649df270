//! A small network of Linux network namespaces for real-network tests: one namespace per
//! host, all joined by a bridge in a namespace of its own (the "switch"), plus one veth from
//! the test's own namespace to the switch so the test can reach every host's HTTP port.
//! Partitions are nftables rules inside the hosts' namespaces. Everything is created under a
//! per-run prefix and removed on drop, panics included.

use std::net::Ipv4Addr;
use std::process::Command;

/// Why the machine cannot run namespace tests, if it cannot.
pub fn unavailable() -> Option<String> {
    for tool in ["ip", "nft"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!(
                "`{tool}` is not installed (apt-get install iproute2 nftables)"
            ));
        }
    }
    // Everything the fabric needs, tried in a throw-away namespace: a namespace, a bridge, a
    // veth pair and an nftables table (kernels without those modules fail here, not later).
    let probe = format!("shoalprobe{}", std::process::id());
    let steps: [&[&str]; 4] = [
        &["ip", "netns", "add", &probe],
        &["ip", "-n", &probe, "link", "add", "pbr", "type", "bridge"],
        &[
            "ip", "-n", &probe, "link", "add", "pva", "type", "veth", "peer", "name", "pvb",
        ],
        &[
            "ip", "netns", "exec", &probe, "nft", "add", "table", "inet", "probe",
        ],
    ];
    let mut failure = None;
    for step in steps {
        match Command::new(step[0]).args(&step[1..]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                failure = Some(format!(
                    "`{}` failed (root with CAP_SYS_ADMIN/CAP_NET_ADMIN and the bridge, veth and nf_tables modules are needed): {}",
                    step.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                break;
            }
            Err(e) => {
                failure = Some(format!("cannot run `{}`: {e}", step[0]));
                break;
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).output();
    failure
}

/// Runs a command that must succeed.
fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Fabric {
    prefix: String,
    subnet: [u8; 3],
    hosts: usize,
}

impl Fabric {
    /// `hosts` namespaces with addresses `subnet.1` .. `subnet.hosts`; the test's own
    /// namespace gets `subnet.254`.
    pub fn new(hosts: usize) -> Self {
        let pid = std::process::id();
        let fabric = Self {
            prefix: format!("sh{}", pid % 100_000),
            subnet: [10, 213, (pid % 250) as u8],
            hosts,
        };
        let sw = fabric.switch();
        run(&["ip", "netns", "add", &sw]);
        run(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        for i in 1..=hosts {
            let ns = fabric.namespace(i);
            let (inside, port) = (
                format!("{}n{i}", fabric.prefix),
                format!("{}b{i}", fabric.prefix),
            );
            run(&["ip", "netns", "add", &ns]);
            run(&[
                "ip", "link", "add", &inside, "type", "veth", "peer", "name", &port,
            ]);
            run(&["ip", "link", "set", &inside, "netns", &ns]);
            run(&["ip", "link", "set", &port, "netns", &sw]);
            run(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"]);
            let addr = format!("{}/24", fabric.addr(i));
            run(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &inside]);
            run(&["ip", "-n", &ns, "link", "set", &inside, "up"]);
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        let (host, port) = (
            format!("{}h", fabric.prefix),
            format!("{}hb", fabric.prefix),
        );
        run(&[
            "ip", "link", "add", &host, "type", "veth", "peer", "name", &port,
        ]);
        run(&["ip", "link", "set", &port, "netns", &sw]);
        run(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"]);
        let addr = format!("{}/24", fabric.addr(254));
        run(&["ip", "addr", "add", &addr, "dev", &host]);
        run(&["ip", "link", "set", &host, "up"]);
        fabric
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// Host `i`'s namespace (1-based).
    pub fn namespace(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }

    pub fn addr(&self, i: usize) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, i as u8)
    }

    /// Cuts every host in `side` off from every host not in it (both directions); the test's
    /// own address stays reachable from all.
    pub fn partition(&self, side: &[usize]) {
        let others: Vec<usize> = (1..=self.hosts).filter(|i| !side.contains(i)).collect();
        for (group, away) in [(side.to_vec(), others.clone()), (others, side.to_vec())] {
            let away: Vec<String> = away.iter().map(|i| self.addr(*i).to_string()).collect();
            let set = away.join(", ");
            for i in group {
                let rules = format!(
                    "table inet shoal_partition {{\n\
                       chain input {{ type filter hook input priority 0; ip saddr {{ {set} }} drop; }}\n\
                       chain output {{ type filter hook output priority 0; ip daddr {{ {set} }} drop; }}\n\
                     }}\n"
                );
                let path = std::env::temp_dir().join(format!("{}-n{i}.nft", self.prefix));
                std::fs::write(&path, rules).unwrap();
                run(&[
                    "ip",
                    "netns",
                    "exec",
                    &self.namespace(i),
                    "nft",
                    "-f",
                    path.to_str().unwrap(),
                ]);
            }
        }
    }

    /// Removes every partition rule.
    pub fn heal(&self) {
        for i in 1..=self.hosts {
            let _ = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.namespace(i),
                    "nft",
                    "delete",
                    "table",
                    "inet",
                    "shoal_partition",
                ])
                .output();
        }
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for i in 1..=self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.namespace(i)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch()])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}h", self.prefix)])
            .output();
    }
}
