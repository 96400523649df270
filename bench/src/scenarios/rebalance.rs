//! Shard movement on join, and balance, from the sharding crate's own table (the code every
//! node runs on each configuration): for N = 3, 10, 30 members with the default table shape
//! (1024 shards, 256 virtual nodes per member, 3 replicas), the share of shards whose primary
//! changes when one node joins, against the ideal 1/(N+1), and the busiest member's primary
//! count over the mean, against perfect balance. Each repetition is another set of node
//! names (names place the ring points, so they are what varies between real clusters).

use shoal_sharding::{ShardTable, TableSpec, plan};

use super::Ctx;
use crate::report::{Better, Row, Sample};

/// Naming schemes seen in real deployments; with the repetition number they give distinct
/// name sets.
const SCHEMES: &[&str] = &[
    "n{i}",
    "node-{i}",
    "shoal-{i}",
    "10.0.{r}.{i}",
    "host{i}.dc{r}",
];

/// The names of name set `rep`, `n` of them (`n + 1` for the joiner: the last one).
fn names(rep: usize, n: usize) -> Vec<String> {
    let scheme = SCHEMES[rep % SCHEMES.len()];
    let round = rep / SCHEMES.len();
    (1..=n)
        .map(|i| {
            let name = scheme
                .replace("{i}", &i.to_string())
                .replace("{r}", &round.to_string());
            // Rounds past the first get a suffix too, so that schemes without `{r}` repeat
            // no name set.
            if round > 0 && !scheme.contains("{r}") {
                format!("{name}-r{round}")
            } else {
                name
            }
        })
        .collect()
}

/// What one join does to a table of `members`, with `joiner` added.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Join {
    /// Share of shards whose primary changes.
    moved: f64,
    /// Share of those that move to anyone but the joiner (0 with minimal movement).
    moved_elsewhere: f64,
    /// Busiest member's primaries over the mean, before the join.
    busiest: f64,
}

fn join(members: &[String], joiner: &str, spec: TableSpec) -> Join {
    let before = ShardTable::compute(members, spec);
    let mut grown = members.to_vec();
    grown.push(joiner.to_string());
    let after = ShardTable::compute(&grown, spec);
    let moves = plan(&before, &after);
    let primary_moves: Vec<_> = moves.iter().filter(|m| m.primary_changes()).collect();
    let elsewhere = primary_moves
        .iter()
        .filter(|m| m.to.first().map(String::as_str) != Some(joiner))
        .count();
    Join {
        moved: primary_moves.len() as f64 / spec.shards as f64,
        moved_elsewhere: if primary_moves.is_empty() {
            0.0
        } else {
            elsewhere as f64 / primary_moves.len() as f64
        },
        busiest: busiest_over_mean(&before),
    }
}

/// The busiest member's primary count over the mean (1.0 is perfect balance).
fn busiest_over_mean(t: &ShardTable) -> f64 {
    let counts = t.primaries_per_member();
    let max = counts.values().copied().max().unwrap_or(0) as f64;
    let mean = t.shards() as f64 / t.members().len().max(1) as f64;
    if mean == 0.0 { 1.0 } else { max / mean }
}

pub fn movement(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let spec = TableSpec::default();
    let sets = ctx.size(21, 5);
    let mut rows = Vec::new();
    for n in [3usize, 10, 30] {
        let (mut moved, mut busiest, mut elsewhere) = (Vec::new(), Vec::new(), 0.0f64);
        for rep in 0..sets {
            let all = names(rep, n + 1);
            let j = join(&all[..n], &all[n], spec);
            moved.push(j.moved);
            busiest.push(j.busiest);
            elsewhere = elsewhere.max(j.moved_elsewhere);
        }
        anyhow::ensure!(
            elsewhere == 0.0,
            "N = {n}: a join moved primaries between old members too ({:.1} % of the moves)",
            elsewhere * 100.0
        );
        let ideal = 1.0 / (n as f64 + 1.0);
        let row = Row::new(
            "rebalance",
            &format!("N = {n}: primaries moved by a join, {sets} name sets"),
            "share of shards",
            Better::Lower,
            Sample::of(&moved),
        )
        .against("ideal 1/(N+1)", Sample::of(&[ideal]));
        let met = row.shoal.median <= 1.1 * ideal;
        rows.push(row.target("≤ 1.1 × 1/(N+1)", met));
        let row = Row::new(
            "rebalance",
            &format!("N = {n}: busiest member's primaries / mean, {sets} name sets"),
            "ratio",
            Better::Lower,
            Sample::of(&busiest),
        )
        .against("perfect balance", Sample::of(&[1.0]));
        rows.push(if n == 10 {
            let met = row.shoal.median <= 1.15;
            row.target("≤ 1.15 at N = 10", met)
        } else {
            row
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> TableSpec {
        TableSpec {
            shards: 256,
            vnodes: 64,
            replicas: 3,
        }
    }

    #[test]
    fn name_sets_are_distinct_and_sized() {
        let sets: Vec<Vec<String>> = (0..20).map(|r| names(r, 11)).collect();
        for s in &sets {
            assert_eq!(s.len(), 11);
            let mut d = s.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 11, "{s:?}");
        }
        for (i, a) in sets.iter().enumerate() {
            for b in &sets[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(names(0, 2), ["n1", "n2"]);
        assert_eq!(names(5, 1), ["n1-r1"]);
        assert_eq!(names(8, 1), ["10.0.1.1"]);
    }

    #[test]
    fn a_join_moves_only_to_the_joiner_and_about_its_share() {
        let all = names(1, 11);
        let j = join(&all[..10], &all[10], small());
        assert_eq!(j.moved_elsewhere, 0.0);
        assert!(j.moved > 0.0 && j.moved < 0.25, "{j:?}");
        assert!(j.busiest >= 1.0, "{j:?}");
    }

    #[test]
    fn adding_a_member_already_there_moves_nothing() {
        let all = names(0, 3);
        let j = join(&all, &all[0], small());
        assert_eq!(j.moved, 0.0);
    }

    #[test]
    fn one_member_holds_every_primary() {
        let t = ShardTable::compute(&["a"], small());
        assert_eq!(busiest_over_mean(&t), 1.0);
    }
}
