//! Memory per entity and per idle node.

use super::Ctx;
use crate::report::Row;

pub fn footprint(_ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    anyhow::bail!("not built yet")
}
