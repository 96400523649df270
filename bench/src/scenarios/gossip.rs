//! Gossip convergence in the simulator.

use super::Ctx;
use crate::report::Row;

pub fn convergence(_ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    anyhow::bail!("not built yet")
}
