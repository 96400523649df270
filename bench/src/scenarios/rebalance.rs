//! Shard movement on join.

use super::Ctx;
use crate::report::Row;

pub fn movement(_ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    anyhow::bail!("not built yet")
}
