//! A shopping-cart service embedding Shoal: its own entity kind, a three-node cluster in one
//! process, and carts reached from any node.
//!
//! ```text
//! cargo run -p shoal --example cart
//! ```
//!
//! Each cart is an entity (kind `cart`, id = the user); its commands run one at a time, so
//! two concurrent "add" never lose an item. A checkout asks the built-in `counter` entity
//! `orders` for an order number: an entity calling another entity.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal::entity::builtin::{Counter, CounterCommand};
use shoal::entity::{Context, Entity, Rejection};
use shoal::transport::ClusterCa;
use shoal::{Node, NodeBuilder, loopback};

/// The cart kind.
struct Cart;

#[derive(Debug, Default, Serialize, Deserialize)]
struct CartState {
    items: BTreeMap<String, u32>,
    checked_out: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
enum CartCommand {
    Add { item: String, quantity: u32 },
    Remove { item: String },
    View,
    Checkout,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum CartReply {
    Items(BTreeMap<String, u32>),
    Order {
        number: i64,
        items: BTreeMap<String, u32>,
    },
}

impl Entity for Cart {
    const KIND: &'static str = "cart";
    type State = CartState;
    type Command = CartCommand;
    type Reply = CartReply;

    async fn handle(
        &self,
        ctx: &mut Context,
        cart: &mut CartState,
        cmd: CartCommand,
    ) -> Result<CartReply, Rejection> {
        if cart.checked_out.is_some() && !matches!(cmd, CartCommand::View) {
            return Err(Rejection::new("this cart is checked out"));
        }
        match cmd {
            CartCommand::Add { item, quantity } => {
                *cart.items.entry(item).or_default() += quantity;
            }
            CartCommand::Remove { item } => {
                cart.items.remove(&item);
            }
            CartCommand::View => {}
            CartCommand::Checkout => {
                if cart.items.is_empty() {
                    return Err(Rejection::new("nothing to check out"));
                }
                // Another entity, wherever it lives: the order-number counter.
                let number = ctx.ask::<Counter>("orders", CounterCommand::Add(1)).await?;
                cart.checked_out = Some(number);
                return Ok(CartReply::Order {
                    number,
                    items: cart.items.clone(),
                });
            }
        }
        Ok(CartReply::Items(cart.items.clone()))
    }
}

async fn start_node(ca: &ClusterCa, name: &str, seeds: &[&Node]) -> anyhow::Result<Node> {
    let mut config = loopback::config(name, seeds);
    config.gossip_interval = Duration::from_millis(200);
    Ok(loopback::start(NodeBuilder::new(config).register(Cart), ca).await?)
}

/// Starts three nodes, fills carts through all of them, checks out, and returns the orders.
async fn run() -> anyhow::Result<Vec<(String, i64, BTreeMap<String, u32>)>> {
    let ca = ClusterCa::generate("cart-demo")?;
    let n1 = start_node(&ca, "shop-1", &[]).await?;
    let n2 = start_node(&ca, "shop-2", &[&n1]).await?;
    let n3 = start_node(&ca, "shop-3", &[&n1]).await?;
    let nodes = [n1, n2, n3];
    // Wait until all three are members and serve their shards.
    tokio::time::timeout(
        Duration::from_secs(30),
        loopback::wait_serving(&nodes.iter().collect::<Vec<_>>()),
    )
    .await?;
    println!(
        "3 nodes up; shards per node: {:?}",
        nodes[0].entities().table().map(|(_, t)| t
            .primaries_per_member()
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect::<Vec<_>>())
    );

    let users = ["ada", "grace", "linus", "margaret"];
    for (i, user) in users.iter().enumerate() {
        // Each item goes in through a different node; the cart lives on one of them.
        for (j, item) in ["apple", "bread", "coffee"].iter().enumerate() {
            let via = &nodes[(i + j) % 3];
            via.ask::<Cart>(
                user,
                CartCommand::Add {
                    item: item.to_string(),
                    quantity: (j + 1) as u32,
                },
            )
            .await?;
        }
    }
    let mut orders = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let via = &nodes[(i + 2) % 3];
        match via.ask::<Cart>(user, CartCommand::Checkout).await? {
            CartReply::Order { number, items } => {
                println!(
                    "{user}: order #{number} {items:?} (asked through {})",
                    via.name()
                );
                orders.push((user.to_string(), number, items));
            }
            other => anyhow::bail!("unexpected reply {other:?}"),
        }
    }
    // A checked-out cart refuses changes.
    let refused = nodes[0]
        .ask::<Cart>(
            "ada",
            CartCommand::Add {
                item: "tea".into(),
                quantity: 1,
            },
        )
        .await;
    println!("adding to a checked-out cart: {refused:?}");
    for n in &nodes {
        n.stop().await;
    }
    Ok(orders)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cart_service_runs() {
        let orders = super::run().await.unwrap();
        assert_eq!(orders.len(), 4);
        let mut numbers: Vec<i64> = orders.iter().map(|o| o.1).collect();
        numbers.sort();
        assert_eq!(
            numbers,
            [1, 2, 3, 4],
            "order numbers come from one counter entity"
        );
        for (_, _, items) in &orders {
            assert_eq!(items.values().copied().collect::<Vec<_>>(), [1, 2, 3]);
        }
    }
}
