//! Memory: what an active entity and an idle node cost in resident memory (RSS, as the kernel
//! counts it in `/proc/.../status`, allocator overhead and all).
//!
//! - **Bytes per active counter.** One node in this process (loopback, in-memory replica
//!   store, passivation limits lifted so that nothing is evicted). Each repetition activates
//!   a fresh batch of built-in counters with one `ask` each (`Add(1)`, so each also has a
//!   stored state) and divides the growth of this process's RSS by the batch size. Batches
//!   pile up (the second measures 100 000 → 200 000 counters, and so on), so the figure is the
//!   marginal cost of one more active entity, table growth included.
//! - **RSS of an idle node.** Real `shoal node` processes (the `shoal` binary next to
//!   `shoal-bench`, as `cargo build --release` leaves it): a 3-node cluster on loopback,
//!   formed, then left idle; the sample holds each node's RSS. Without the binary, the RSS
//!   growth of this process when one in-process node starts and idles, which the figure's
//!   name then says (an approximation: the allocator may reuse memory freed by earlier
//!   scenarios).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal::entity::builtin::{Counter, CounterCommand};
use shoal::local_cluster::LocalCluster;
use shoal::transport::ClusterCa;
use shoal::{Node, NodeBuilder, loopback};

use super::Ctx;
use crate::measure::runtime;
use crate::report::{Better, Row, Sample};

/// The `VmRSS` line of a `/proc/.../status` text, in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(value * 1024),
        _ => None,
    }
}

/// Hands the allocator's free pages back to the kernel, so that this process's RSS counts
/// what is live rather than what earlier work left free (glibc only; elsewhere a no-op).
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// This process's resident set after [`trim`], in bytes.
fn live_rss() -> anyhow::Result<u64> {
    trim();
    rss(None)
}

/// The resident set of process `pid` (`None`: this one), in bytes.
fn rss(pid: Option<u32>) -> anyhow::Result<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read {path} (RSS is read from Linux's /proc): {e}"))?;
    parse_vm_rss(&status).ok_or_else(|| anyhow::anyhow!("no VmRSS line in {path}"))
}

/// Starts a loopback node that keeps every entity it activates.
async fn start_node(name: &str) -> anyhow::Result<Node> {
    let ca = ClusterCa::generate("bench")?;
    let mut config = loopback::config(name, &[]);
    config.entities.max_active = usize::MAX;
    config.entities.idle_after = Duration::from_secs(24 * 3600);
    let node = loopback::start(NodeBuilder::new(config), &ca).await?;
    loopback::wait_serving(&[&node]).await;
    Ok(node)
}

/// Activates counters `{prefix}-0 .. {prefix}-{count-1}` with one ask each, from 64 tasks.
async fn activate(node: &Node, prefix: &str, count: usize) -> anyhow::Result<()> {
    const TASKS: usize = 64;
    let prefix: Arc<str> = prefix.into();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (node, prefix) = (node.clone(), prefix.clone());
            tokio::spawn(async move {
                for i in (t..count).step_by(TASKS) {
                    node.ask::<Counter>(&format!("{prefix}-{i}"), CounterCommand::Add(1))
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Bytes of RSS per active counter, one value per batch.
fn per_counter(ctx: &Ctx) -> anyhow::Result<(usize, Vec<f64>)> {
    let batch = ctx.size(100_000, 20_000);
    let rt = runtime();
    let node = rt.block_on(start_node("mem"))?;
    let out = rt.block_on(async {
        // Warm-up: the first entities pay for per-shard structures, task pools and caches.
        activate(&node, "warm", 2_000).await?;
        let mut values = Vec::new();
        for rep in 0..ctx.reps() {
            let before = live_rss()?;
            activate(&node, &format!("b{rep}"), batch).await?;
            let active = node.entities().active_entities();
            let want = 2_000 + (rep + 1) * batch;
            anyhow::ensure!(
                active >= want,
                "{active} entities active after activating {want}: some were passivated"
            );
            let after = live_rss()?;
            values.push(after.saturating_sub(before) as f64 / batch as f64);
        }
        anyhow::Ok(values)
    });
    rt.block_on(node.stop());
    Ok((batch, out?))
}

/// The `shoal` binary next to this one, if it was built.
fn shoal_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let shoal = exe.with_file_name("shoal");
    shoal.is_file().then_some(shoal)
}

/// RSS of each node of an idle 3-node cluster of real processes.
fn idle_processes(binary: PathBuf, idle: Duration) -> anyhow::Result<Vec<f64>> {
    let rt = runtime();
    rt.block_on(async {
        let mut cluster = LocalCluster::in_temp_dir(binary)?;
        let names = ["n1", "n2", "n3"];
        cluster.add_node("n1", &[])?;
        cluster.add_node("n2", &["n1"])?;
        cluster.add_node("n3", &["n1"])?;
        for name in names {
            cluster.start(name)?;
        }
        let measured = async {
            for name in names {
                cluster
                    .wait_for(name, Duration::from_secs(60), "formed", |info| {
                        info.up().len() == 3
                            && info.config_members.len() == 3
                            && info.shards.len() == 3
                    })
                    .await?;
            }
            tokio::time::sleep(idle).await;
            names
                .iter()
                .map(|name| {
                    let pid = cluster
                        .node(name)?
                        .pid()
                        .ok_or_else(|| anyhow::anyhow!("{name} is not running"))?;
                    Ok(rss(Some(pid))? as f64)
                })
                .collect::<anyhow::Result<Vec<f64>>>()
        }
        .await;
        // SIGKILL: three nodes leaving gracefully at once wait out their handoff timeouts.
        for name in names {
            cluster.kill(name).await?;
        }
        measured
    })
}

/// RSS growth of this process when one in-process node starts and idles.
fn idle_in_process(ctx: &Ctx, idle: Duration) -> anyhow::Result<Vec<f64>> {
    let mut values = Vec::new();
    for rep in 0..ctx.reps() {
        let before = live_rss()?;
        let rt = runtime();
        let node = rt.block_on(async {
            let node = start_node(&format!("idle{rep}")).await?;
            tokio::time::sleep(idle).await;
            anyhow::Ok(node)
        })?;
        let after = live_rss()?;
        rt.block_on(node.stop());
        values.push(after.saturating_sub(before) as f64);
    }
    Ok(values)
}

pub fn footprint(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let (batch, bytes) = per_counter(ctx)?;
    rows.push(Row::new(
        "memory",
        &format!("RSS growth per active counter, batches of {batch}"),
        "bytes",
        Better::Lower,
        Sample::of(&bytes),
    ));
    let idle = Duration::from_secs(ctx.size(10, 3));
    let row = match shoal_binary() {
        Some(binary) => Row::new(
            "memory",
            &format!(
                "RSS of an idle `shoal node` process (3-node cluster, {} s idle)",
                idle.as_secs()
            ),
            "MiB",
            Better::Lower,
            Sample::of(&mib(idle_processes(binary, idle)?)),
        ),
        None => Row::new(
            "memory",
            "RSS growth of starting one in-process node, idle (no `shoal` binary built)",
            "MiB",
            Better::Lower,
            Sample::of(&mib(idle_in_process(ctx, idle)?)),
        ),
    };
    rows.push(row);
    Ok(rows)
}

fn mib(bytes: Vec<f64>) -> Vec<f64> {
    bytes.into_iter().map(|b| b / (1024.0 * 1024.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tshoal\nVmPeak:\t  20000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        assert!(rss(None).unwrap() > 0);
    }
}
