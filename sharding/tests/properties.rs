//! Properties of the shard table, over random clusters.

use proptest::prelude::*;
use shoal_sharding::{ShardId, ShardTable, TableSpec, plan, shard_of};

fn spec() -> TableSpec {
    TableSpec {
        shards: 1024,
        vnodes: 256,
        replicas: 3,
    }
}

/// 1 to 12 distinct member names.
fn members() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::btree_set("[a-z][a-z0-9-]{0,8}", 1..12)
        .prop_map(|s| s.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_same_members_in_any_order_give_the_same_table(
        names in members(),
        seed in any::<u64>(),
    ) {
        let mut shuffled = names.clone();
        // A deterministic shuffle from the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut doubled = shuffled.clone();
        doubled.extend(names.iter().cloned());
        let a = ShardTable::compute(&names, spec());
        prop_assert_eq!(&a, &ShardTable::compute(&shuffled, spec()));
        prop_assert_eq!(&a, &ShardTable::compute(&doubled, spec()));
    }

    #[test]
    fn every_shard_has_min_r_n_distinct_replicas(names in members()) {
        let t = ShardTable::compute(&names, spec());
        let want = names.len().min(3);
        for s in 0..t.shards() {
            let r: Vec<&str> = t.replicas(ShardId(s)).collect();
            prop_assert_eq!(r.len(), want);
            let mut d = r.clone();
            d.sort();
            d.dedup();
            prop_assert_eq!(d.len(), want, "distinct replicas for shard {}: {:?}", s, r);
        }
    }

    #[test]
    fn a_join_moves_about_one_in_n_plus_one_and_only_to_the_new_node(names in members()) {
        let new = "zz-new".to_string();
        prop_assume!(!names.contains(&new));
        let before = ShardTable::compute(&names, spec());
        let mut grown = names.clone();
        grown.push(new.clone());
        let after = ShardTable::compute(&grown, spec());
        let moves = plan(&before, &after);
        for m in &moves {
            // Every change brings the new node in; nobody else gains anything.
            let gained: Vec<&str> = m.gained().collect();
            prop_assert_eq!(gained, vec![new.as_str()], "{:?}", m);
        }
        let primary_moves = moves.iter().filter(|m| m.primary_changes()).count() as f64;
        let ideal = f64::from(spec().shards) / (names.len() + 1) as f64;
        // Consistent hashing with 256 points per member: within 35 % of the ideal share.
        prop_assert!(
            (primary_moves - ideal).abs() <= ideal * 0.35,
            "{} primaries moved, ideal {:.0} (n = {})", primary_moves, ideal, names.len()
        );
        for m in moves.iter().filter(|m| m.primary_changes()) {
            prop_assert_eq!(m.to[0].as_str(), new.as_str());
        }
    }

    #[test]
    fn a_departure_moves_only_the_departed_nodes_shards(names in members()) {
        prop_assume!(names.len() >= 2);
        let gone = names[0].clone();
        let before = ShardTable::compute(&names, spec());
        let after = ShardTable::compute(&names[1..], spec());
        for m in plan(&before, &after) {
            prop_assert!(m.from.contains(&gone), "{:?} did not involve {}", m, gone);
            prop_assert!(!m.to.contains(&gone));
        }
    }

    #[test]
    fn shards_are_stable_and_in_range(kind in "[a-z]{1,8}", id in proptest::collection::vec(any::<u8>(), 0..40)) {
        let s = shard_of(&kind, &id, 1024);
        prop_assert!(s.0 < 1024);
        prop_assert_eq!(s, shard_of(&kind, &id, 1024));
    }
}

/// Balance and movement at the sizes the documentation reports (printed with
/// `cargo test -p shoal-sharding -- --nocapture`).
#[test]
fn balance_and_movement_report() {
    for n in [3usize, 10, 30] {
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let t = ShardTable::compute(&names, spec());
        let mut grown = names.clone();
        grown.push(format!("n{}", n + 1));
        let moves = plan(&t, &ShardTable::compute(&grown, spec()));
        let moved = moves.iter().filter(|m| m.primary_changes()).count() as f64 / 1024.0;
        let ideal = 1.0 / (n as f64 + 1.0);
        println!(
            "n={n}: busiest/mean primaries {:.3}; join moves {:.3} of primaries (ideal {:.3}, ratio {:.2}); {} shards change replica sets",
            t.primary_balance(),
            moved,
            ideal,
            moved / ideal,
            moves.len()
        );
        assert!(
            t.primary_balance() < 1.35,
            "n={n}: balance {}",
            t.primary_balance()
        );
    }
}
