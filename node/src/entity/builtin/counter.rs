//! `counter`: a signed 64-bit counter with add and get.

use serde::{Deserialize, Serialize};

use crate::entity::{Context, Entity, Rejection};

/// The `counter` kind.
pub struct Counter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterCommand {
    Add(i64),
    Get,
}

impl Entity for Counter {
    const KIND: &'static str = "counter";
    type State = i64;
    type Command = CounterCommand;
    /// The value after the command.
    type Reply = i64;

    async fn handle(
        &self,
        _ctx: &mut Context,
        state: &mut i64,
        cmd: CounterCommand,
    ) -> Result<i64, Rejection> {
        if let CounterCommand::Add(d) = cmd {
            *state = state
                .checked_add(d)
                .ok_or_else(|| Rejection::new(format!("adding {d} overflows {state}")))?;
        }
        Ok(*state)
    }
}
