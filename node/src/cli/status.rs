//! `shoal status`: a node's view of the cluster as a table or JSON.

use std::time::Duration;

use crate::api::ClusterInfo;
use crate::local_cluster::fetch_cluster;

use super::StatusArgs;

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let info = fetch_cluster(&client, args.http)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#} (is a node running with --http {}?)", args.http))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print!("{}", table(&info));
    }
    Ok(())
}

/// The members as an aligned table, with a one-line summary above.
pub fn table(info: &ClusterInfo) -> String {
    let up = info.up().len();
    let mut out = format!(
        "cluster {}  ·  epoch {} ({} members{})  ·  seen from {}  ·  {} live and up\n",
        info.cluster_id,
        info.epoch,
        info.config_members.len(),
        if info.epoch == 0 {
            String::new()
        } else if info.in_majority {
            ", majority reachable".to_string()
        } else {
            ", NO MAJORITY REACHABLE: changes cannot commit on this side".to_string()
        },
        info.self_name,
        up
    );
    for p in &info.pending {
        out.push_str(&format!("pending: {p}\n"));
    }
    if let Some(p) = &info.proposing {
        out.push_str(&format!("proposing: {p}\n"));
    }
    let rows: Vec<[String; 7]> = info
        .members
        .iter()
        .map(|m| {
            [
                if m.name == info.self_name {
                    format!("{} *", m.name)
                } else {
                    m.name.clone()
                },
                m.addr.clone(),
                m.status.clone(),
                if m.live { "yes".into() } else { "NO".into() },
                if m.member { "yes".into() } else { "no".into() },
                info.shards
                    .get(&m.name)
                    .map_or("-".into(), |n| n.to_string()),
                m.generation.to_string(),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "ADDRESS",
        "STATUS",
        "LIVE",
        "MEMBER",
        "SHARDS",
        "GENERATION",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.push('\n');
        s
    };
    out.push_str(&line(&header.map(String::from)));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}
