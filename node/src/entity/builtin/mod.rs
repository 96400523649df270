//! Built-in kinds, usable without writing Rust: `kv` and `counter`.

mod counter;
mod kv;

pub use counter::{Counter, CounterCommand};
pub use kv::{Kv, KvCommand, KvReply};
