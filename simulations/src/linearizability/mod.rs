//! Linearizability of one entity's recorded history.
//!
//! An entity has one owner at a time, so what its clients see must be linearizable: there is
//! one sequential order of the operations, allowed by the entity's sequential specification
//! (a [`Model`]), in which each operation takes effect at an instant between its call and its
//! return. Linearizability is compositional, so a run is checked entity by entity, which
//! keeps each search small. An operation whose outcome the client never learned (a timeout,
//! lost contact) may have taken effect at any instant after its call, or never.
//!
//! The search is Wing & Gong's with Lowe's memoization, as in Knossos and Porcupine: walk the
//! call and return events in time order; next, linearize any operation whose call precedes
//! the earliest pending return, apply it to the model, go on, and backtrack when the model
//! refuses the recorded output or nothing can come next. A (set of linearized operations,
//! model state) pair that failed once is never explored again.
//!
//! Unknown-outcome operations have no return, so they never hold anything up; without care
//! they multiply the search by the subsets of them. So they are only placed in short blocks
//! right before a completed operation, a failed pair also rules out the same completed set
//! and state with more of them used up, and equal ones are used in call order. A read that
//! fits is placed at once (moving a read earlier, to where it fits, breaks nothing).

use std::collections::HashMap;
use std::fmt;

mod counter_model;
mod kv_model;

pub use counter_model::CounterModel;
pub use kv_model::KvModel;

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + std::hash::Hash + std::fmt::Debug;
    type Input: std::fmt::Debug;
    type Output: std::fmt::Debug;
    fn init(&self) -> Self::State;
    /// Applies `input` to `state`. Returns the next state if `output` is what the
    /// specification produces from `state` (when `output` is `None`, the outcome is unknown
    /// and any output is acceptable); `None` if `output` is impossible from `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Whether `a` and `b` are the same command. Two unknown-outcome operations of the same
    /// command are interchangeable, so the search only tries them in call order, which keeps
    /// it from exploring every subset of them. `false` is always correct, only slower.
    fn same_input(&self, a: &Self::Input, b: &Self::Input) -> bool {
        let _ = (a, b);
        false
    }

    /// Whether an operation with this input and output leaves the state as it is, in every
    /// state it is possible from (a read). Such an operation is linearized as soon as it
    /// fits, with no alternatives tried there. `false` is always correct, only slower.
    fn is_read_only(&self, input: &Self::Input, output: &Self::Output) -> bool {
        let _ = (input, output);
        false
    }
}

/// One operation of one client, as recorded: times are simulated nanoseconds.
#[derive(Debug, Clone)]
pub struct Operation<I, O> {
    pub client: u64,
    pub call: u64,
    /// `None`: the outcome is unknown (timed out, lost contact): the operation may have taken
    /// effect at any point after `call`, or never.
    pub ret: Option<u64>,
    pub input: I,
    /// The recorded output; `None` when `ret` is `None`.
    pub output: Option<O>,
}

impl<I, O> Operation<I, O> {
    /// An operation that returned `output` at `ret`.
    pub fn ok(client: u64, call: u64, ret: u64, input: I, output: O) -> Self {
        Operation {
            client,
            call,
            ret: Some(ret),
            input,
            output: Some(output),
        }
    }

    /// An operation whose outcome is unknown.
    pub fn unknown(client: u64, call: u64, input: I) -> Self {
        Operation {
            client,
            call,
            ret: None,
            input,
            output: None,
        }
    }
}

/// What [`check`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable(Counterexample),
    /// The search used up its `max_steps` before reaching a conclusion.
    Unknown,
}

/// Why a history is not linearizable, for a person to read: how far the best attempt got,
/// and what it could not place next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counterexample {
    /// Completed operations in the history.
    pub completed: usize,
    /// Completed operations in `prefix`.
    pub placed: usize,
    /// The longest linearizable prefix found (by completed operations placed), in order.
    pub prefix: Vec<Placed>,
    /// The model state after `prefix` (`Debug`).
    pub state: String,
    /// The completed operations that were next in line after `prefix` (their calls precede
    /// the earliest pending return); none of them leads to a full linearization.
    pub blocked: Vec<Blocked>,
}

/// One operation of a linearizable prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Index in the checked history.
    pub index: usize,
    /// The operation: client, [call, return], input -> output.
    pub op: String,
    /// The model state after it (`Debug`).
    pub state_after: String,
}

/// An operation that could not be placed after the longest prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// Index in the checked history.
    pub index: usize,
    /// The operation: client, [call, return], input -> output.
    pub op: String,
    /// The model refuses its recorded output from the prefix's state (otherwise it can be
    /// placed, but nothing can complete the linearization after it).
    pub impossible: bool,
}

/// How many prefix operations [`Counterexample`]'s `Display` shows (the last ones).
const SHOWN_PREFIX: usize = 8;

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "not linearizable: the longest linearizable prefix places {} of {} completed operations",
            self.placed, self.completed
        )?;
        let skipped = self.prefix.len().saturating_sub(SHOWN_PREFIX);
        if skipped > 0 {
            writeln!(f, "  ... {skipped} earlier operations")?;
        }
        for p in &self.prefix[skipped..] {
            writeln!(f, "  {} => {}", p.op, p.state_after)?;
        }
        write!(
            f,
            "then, from state {}, none of these can come next:",
            self.state
        )?;
        for b in &self.blocked {
            let why = if b.impossible {
                "impossible from this state"
            } else {
                "possible, but nothing can follow it"
            };
            write!(f, "\n  {}: {why}", b.op)?;
        }
        Ok(())
    }
}

fn describe<I: fmt::Debug, O: fmt::Debug>(index: usize, op: &Operation<I, O>) -> String {
    let ret = op.ret.map_or_else(|| "?".to_string(), |r| r.to_string());
    let output = op
        .output
        .as_ref()
        .map_or_else(|| "? (outcome unknown)".to_string(), |o| format!("{o:?}"));
    format!(
        "#{index} client {} [{}, {ret}] {:?} -> {output}",
        op.client, op.call, op.input
    )
}

/// Checks that `history` (one entity's operations, in any order) is linearizable with
/// respect to `model`. A step is one call of [`Model::step`]; past `max_steps` of them the
/// answer is [`Verdict::Unknown`]. Deterministic: the same history, in the same order, gets
/// the same verdict and counterexample.
///
/// An operation returning at the very instant another is called counts as concurrent
/// with it (the more lenient reading, as the simulated clock often stands still).
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    max_steps: u64,
) -> Verdict {
    Search::new(model, history).run(max_steps).0
}

/// A fixed-size set of small integers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }

    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn remove(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn is_subset(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
}

/// Search nodes known to fail. A node is (completed ops linearized, unknown-outcome ops
/// linearized, state). Beyond Lowe's exact match, a node is also pruned when a failed node
/// had the same completed ops and state and a subset of its unknown ops: having fewer
/// unknown ops used up leaves more choices, so if that one failed, this one fails too. This
/// keeps the unknown ops from multiplying the search by the subsets of them.
struct Memo<S> {
    /// Per completed set and state, the minimal failed unknown sets.
    failed: HashMap<Bits, HashMap<S, Vec<Bits>>>,
}

impl<S: Clone + Eq + std::hash::Hash> Memo<S> {
    fn new() -> Self {
        Memo {
            failed: HashMap::new(),
        }
    }

    fn dominated(&self, completed: &Bits, unknown: &Bits, state: &S) -> bool {
        self.failed
            .get(completed)
            .and_then(|by_state| by_state.get(state))
            .is_some_and(|sets| sets.iter().any(|s| s.is_subset(unknown)))
    }

    fn insert(&mut self, completed: &Bits, unknown: &Bits, state: &S) {
        let sets = self
            .failed
            .entry(completed.clone())
            .or_default()
            .entry(state.clone())
            .or_default();
        sets.retain(|s| !unknown.is_subset(s));
        sets.push(unknown.clone());
    }
}

/// A call or return, in the doubly linked list of events not yet linearized.
struct Event {
    op: usize,
    is_return: bool,
}

/// Where a block of unknown-outcome operations leads from a search node.
struct Reach<S> {
    /// The unknown-outcome operations linearized, with the block's.
    unknown: Bits,
    state: S,
    /// The block, in order.
    block: Vec<usize>,
}

/// A node of the search. Its children are: a block of unknown-outcome operations (maybe
/// empty), then one completed operation.
struct Node<S> {
    /// The completed operations that can come next (their calls precede the first pending
    /// return), in call order.
    completed_next: Vec<usize>,
    /// The unknown-outcome operations not yet linearized that can come next, in call order.
    unknown_next: Vec<usize>,
    /// A completed read-only operation ([`Model::is_read_only`]) that fits here. It is then
    /// the only child: moving a read earlier, to a point where it fits, breaks nothing.
    forced: Option<usize>,
    /// Where blocks lead: first the node itself (the empty block), then the rest, by
    /// breadth (fewest operations first), once the empty block has no children left. A block
    /// that leads to the state of an earlier one with a superset of its operations is left
    /// out: it only has fewer choices.
    reach: Vec<Reach<S>>,
    reach_done: bool,
    /// The next child to try: `reach[item]`, then `completed_next[op]`.
    item: usize,
    op: usize,
    /// The child being explored: (reach item, completed operation).
    taken: Option<(usize, usize)>,
}

/// What the search of a node's children found.
enum Next<S> {
    /// A child to explore: (reach item, completed operation, state after it).
    Child(usize, usize, S),
    Exhausted,
    OutOfSteps,
}

/// The steps allowed and used.
struct Budget {
    used: u64,
    max: u64,
}

impl Budget {
    /// Takes one step; `false` when none are left.
    fn spend(&mut self) -> bool {
        if self.used >= self.max {
            return false;
        }
        self.used += 1;
        true
    }
}

/// The best node reached so far, for the counterexample.
struct Best {
    completed: usize,
    /// The operations linearized, in order.
    path: Vec<usize>,
    /// The completed candidates at that node.
    next: Vec<usize>,
}

struct Search<'a, M: Model> {
    model: &'a M,
    history: &'a [Operation<M::Input, M::Output>],
    events: Vec<Event>,
    /// Links of the event list; `head` and `tail` are sentinels past the events.
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
    tail: usize,
    call_event: Vec<usize>,
    ret_event: Vec<Option<usize>>,
    /// Each operation's index in its bitset (completed or unknown).
    slot: Vec<usize>,
    /// For an unknown-outcome operation, the one called last before it with the same input
    /// (and no output): it must be linearized first.
    same_before: Vec<Option<usize>>,
    /// Completed and read-only.
    free: Vec<bool>,
    completed_ops: usize,
    unknown_ops: usize,
}

impl<'a, M: Model> Search<'a, M> {
    fn new(model: &'a M, history: &'a [Operation<M::Input, M::Output>]) -> Self {
        // (time, return?, op): calls before returns at the same instant.
        let mut keyed: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * history.len());
        let mut slot = Vec::with_capacity(history.len());
        let (mut completed_ops, mut unknown_ops) = (0, 0);
        for (i, op) in history.iter().enumerate() {
            keyed.push((op.call, false, i));
            match op.ret {
                Some(ret) => {
                    // A return before the call is a recording error; read it as instantaneous.
                    keyed.push((ret.max(op.call), true, i));
                    slot.push(completed_ops);
                    completed_ops += 1;
                }
                None => {
                    slot.push(unknown_ops);
                    unknown_ops += 1;
                }
            }
        }
        keyed.sort_unstable();

        let n = keyed.len();
        let (head, tail) = (n, n + 1);
        let mut call_event = vec![0; history.len()];
        let mut ret_event = vec![None; history.len()];
        let events = keyed
            .iter()
            .enumerate()
            .map(|(e, &(_, is_return, op))| {
                if is_return {
                    ret_event[op] = Some(e);
                } else {
                    call_event[op] = e;
                }
                Event { op, is_return }
            })
            .collect();
        let mut next = vec![tail; n + 2];
        let mut prev = vec![head; n + 2];
        let order: Vec<usize> = std::iter::once(head)
            .chain(0..n)
            .chain(std::iter::once(tail))
            .collect();
        for pair in order.windows(2) {
            next[pair[0]] = pair[1];
            prev[pair[1]] = pair[0];
        }

        let mut same_before = vec![None; history.len()];
        let mut unknown_by_call: Vec<usize> = Vec::new();
        for &(_, is_return, op) in &keyed {
            let o = &history[op];
            if is_return || o.ret.is_some() {
                continue;
            }
            if o.output.is_none() {
                same_before[op] = unknown_by_call.iter().rev().copied().find(|&u| {
                    history[u].output.is_none() && model.same_input(&history[u].input, &o.input)
                });
            }
            unknown_by_call.push(op);
        }

        Search {
            model,
            history,
            events,
            next,
            prev,
            head,
            tail,
            call_event,
            ret_event,
            slot,
            same_before,
            free: history
                .iter()
                .map(|o| {
                    o.ret.is_some()
                        && o.output
                            .as_ref()
                            .is_some_and(|out| model.is_read_only(&o.input, out))
                })
                .collect(),
            completed_ops,
            unknown_ops,
        }
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    /// Undoes `unlink(e)`; valid when unlinks are undone in reverse order.
    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        self.prev[n] = e;
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_event[op]);
        if let Some(r) = self.ret_event[op] {
            self.unlink(r);
        }
    }

    fn unlift(&mut self, op: usize) {
        if let Some(r) = self.ret_event[op] {
            self.relink(r);
        }
        self.relink(self.call_event[op]);
    }

    /// A node with `unknown` linearized and `state`, over the current event list.
    fn enter(&self, unknown: Bits, state: M::State, budget: &mut Budget) -> Option<Node<M::State>> {
        let (mut completed_next, mut unknown_next) = (Vec::new(), Vec::new());
        let mut e = self.next[self.head];
        while e != self.tail && !self.events[e].is_return {
            let op = self.events[e].op;
            if self.history[op].ret.is_some() {
                completed_next.push(op);
            } else {
                unknown_next.push(op);
            }
            e = self.next[e];
        }
        let mut forced = None;
        for &op in completed_next.iter().filter(|&&op| self.free[op]) {
            if !budget.spend() {
                return None;
            }
            let o = &self.history[op];
            if self
                .model
                .step(&state, &o.input, o.output.as_ref())
                .as_ref()
                == Some(&state)
            {
                forced = Some(op);
                break;
            }
        }
        Some(Node {
            completed_next,
            unknown_next,
            forced,
            reach: vec![Reach {
                unknown,
                state,
                block: Vec::new(),
            }],
            reach_done: false,
            item: 0,
            op: 0,
            taken: None,
        })
    }

    /// The next child of `node` worth exploring. `completed` is the node's completed set.
    fn next_child(
        &self,
        node: &mut Node<M::State>,
        completed: &mut Bits,
        memo: &Memo<M::State>,
        budget: &mut Budget,
    ) -> Next<M::State> {
        if let Some(op) = node.forced {
            if node.op > 0 {
                return Next::Exhausted;
            }
            node.op = 1;
            let here = &node.reach[0];
            if self.failed_after(memo, completed, op, &here.unknown, &here.state) {
                return Next::Exhausted;
            }
            return Next::Child(0, op, here.state.clone());
        }
        loop {
            if node.item == node.reach.len() {
                if node.reach_done {
                    return Next::Exhausted;
                }
                if !self.expand_reach(node, completed, memo, budget) {
                    return Next::OutOfSteps;
                }
                node.reach_done = true;
                continue;
            }
            let from = &node.reach[node.item];
            while node.op < node.completed_next.len() {
                let op = node.completed_next[node.op];
                node.op += 1;
                if !budget.spend() {
                    return Next::OutOfSteps;
                }
                let o = &self.history[op];
                let Some(state) = self.model.step(&from.state, &o.input, o.output.as_ref()) else {
                    continue;
                };
                if !self.failed_after(memo, completed, op, &from.unknown, &state) {
                    return Next::Child(node.item, op, state);
                }
            }
            node.item += 1;
            node.op = 0;
        }
    }

    /// Whether the node after `op` is known to fail.
    fn failed_after(
        &self,
        memo: &Memo<M::State>,
        completed: &mut Bits,
        op: usize,
        unknown: &Bits,
        state: &M::State,
    ) -> bool {
        completed.insert(self.slot[op]);
        let failed = memo.dominated(completed, unknown, state);
        completed.remove(self.slot[op]);
        failed
    }

    /// Fills `node.reach` past the node itself, breadth first; `false` if out of steps.
    fn expand_reach(
        &self,
        node: &mut Node<M::State>,
        completed: &Bits,
        memo: &Memo<M::State>,
        budget: &mut Budget,
    ) -> bool {
        // Items by state, to find the ones a new item is dominated by.
        let mut by_state: HashMap<M::State, Vec<usize>> = HashMap::new();
        by_state.insert(node.reach[0].state.clone(), vec![0]);
        let mut i = 0;
        while i < node.reach.len() {
            for &u in &node.unknown_next {
                let from = &node.reach[i];
                if from.unknown.contains(self.slot[u])
                    || self.same_before[u].is_some_and(|p| !from.unknown.contains(self.slot[p]))
                {
                    continue;
                }
                if !budget.spend() {
                    return false;
                }
                let o = &self.history[u];
                let Some(state) = self.model.step(&from.state, &o.input, o.output.as_ref()) else {
                    continue;
                };
                // An unknown operation that changes nothing only uses up a choice.
                if state == from.state {
                    continue;
                }
                let mut unknown = from.unknown.clone();
                unknown.insert(self.slot[u]);
                let seen = by_state.get(&state).is_some_and(|items| {
                    items
                        .iter()
                        .any(|&j| node.reach[j].unknown.is_subset(&unknown))
                });
                if seen || memo.dominated(completed, &unknown, &state) {
                    continue;
                }
                let mut block = from.block.clone();
                block.push(u);
                by_state
                    .entry(state.clone())
                    .or_default()
                    .push(node.reach.len());
                node.reach.push(Reach {
                    unknown,
                    state,
                    block,
                });
            }
            i += 1;
        }
        true
    }

    /// The verdict, and the steps it took.
    fn run(mut self, max_steps: u64) -> (Verdict, u64) {
        let mut budget = Budget {
            used: 0,
            max: max_steps,
        };
        let mut remaining = self.completed_ops;
        if remaining == 0 {
            return (Verdict::Linearizable, 0);
        }
        let mut completed = Bits::new(self.completed_ops);
        let mut memo = Memo::new();
        let Some(root) = self.enter(Bits::new(self.unknown_ops), self.model.init(), &mut budget)
        else {
            return (Verdict::Unknown, budget.used);
        };
        let mut best = Best {
            completed: 0,
            path: Vec::new(),
            next: root.completed_next.clone(),
        };
        let mut stack = vec![root];
        loop {
            let node = stack.last_mut().expect("the root is never popped here");
            match self.next_child(node, &mut completed, &memo, &mut budget) {
                Next::OutOfSteps => return (Verdict::Unknown, budget.used),
                Next::Child(item, op, state) => {
                    node.taken = Some((item, op));
                    let unknown = node.reach[item].unknown.clone();
                    for &u in &node.reach[item].block {
                        self.lift(u);
                    }
                    self.lift(op);
                    completed.insert(self.slot[op]);
                    remaining -= 1;
                    if remaining == 0 {
                        return (Verdict::Linearizable, budget.used);
                    }
                    let Some(child) = self.enter(unknown, state, &mut budget) else {
                        return (Verdict::Unknown, budget.used);
                    };
                    stack.push(child);
                    if stack.len() - 1 > best.completed {
                        best = Best {
                            completed: stack.len() - 1,
                            path: Self::path(&stack),
                            next: stack[stack.len() - 1].completed_next.clone(),
                        };
                    }
                }
                Next::Exhausted => {
                    // The node fails, and so does every place a block led it to.
                    let node = stack.pop().expect("a node to pop");
                    for r in &node.reach {
                        memo.insert(&completed, &r.unknown, &r.state);
                    }
                    let Some(parent) = stack.last_mut() else {
                        return (
                            Verdict::NotLinearizable(self.counterexample(best)),
                            budget.used,
                        );
                    };
                    let (item, op) = parent.taken.take().expect("the child explored");
                    self.unlift(op);
                    for &u in parent.reach[item].block.iter().rev() {
                        self.unlift(u);
                    }
                    completed.remove(self.slot[op]);
                    remaining += 1;
                }
            }
        }
    }

    /// The operations linearized on the way to the last node of `stack`.
    fn path(stack: &[Node<M::State>]) -> Vec<usize> {
        let mut path = Vec::new();
        for node in stack {
            if let Some((item, op)) = node.taken {
                path.extend_from_slice(&node.reach[item].block);
                path.push(op);
            }
        }
        path
    }

    fn counterexample(&self, best: Best) -> Counterexample {
        let mut state = self.model.init();
        let mut prefix = Vec::with_capacity(best.path.len());
        for &op in &best.path {
            let o = &self.history[op];
            state = self
                .model
                .step(&state, &o.input, o.output.as_ref())
                .expect("the path was linearized");
            prefix.push(Placed {
                index: op,
                op: describe(op, o),
                state_after: format!("{state:?}"),
            });
        }
        Counterexample {
            completed: self.completed_ops,
            placed: best.completed,
            prefix,
            blocked: best
                .next
                .iter()
                .map(|&op| {
                    let o = &self.history[op];
                    Blocked {
                        index: op,
                        op: describe(op, o),
                        impossible: self
                            .model
                            .step(&state, &o.input, o.output.as_ref())
                            .is_none(),
                    }
                })
                .collect(),
            state: format!("{state:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use shoal::entity::builtin::{CounterCommand, KvCommand, KvReply};

    use super::*;

    /// xorshift64: a fixed, dependency-free source of test histories.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// The shape of a generated history.
    struct Shape {
        ops: usize,
        clients: u64,
        /// How far an interval may be widened on each side, in operations.
        spread: u64,
        /// Operations recorded with an unknown outcome; half of them took effect.
        unknown_percent: u64,
    }

    impl Shape {
        fn random(rng: &mut Rng, max_ops: u64) -> Shape {
            Shape {
                ops: 5 + rng.below(max_ops - 4) as usize,
                clients: 1 + rng.below(6),
                spread: rng.below(5),
                unknown_percent: rng.below(25),
            }
        }
    }

    /// A history recorded from a sequential execution: operation `i` takes effect at
    /// `100 (i + 1)` (plus a constant), and its interval is widened randomly on each side,
    /// which keeps the real-time order consistent with the execution, so the history is
    /// linearizable. `op(rng, takes_effect)` draws an input and gives the output it has in
    /// the execution, where it is applied only if it `takes_effect`. The history comes out
    /// shuffled.
    fn widened<I, O>(
        rng: &mut Rng,
        shape: &Shape,
        mut op: impl FnMut(&mut Rng, bool) -> (I, O),
    ) -> Vec<Operation<I, O>> {
        let mut history = Vec::with_capacity(shape.ops);
        let width = 100 * shape.spread;
        for i in 0..shape.ops {
            let at = 100 * (i as u64 + 1) + width;
            let call = at - rng.below(width + 1);
            let ret = at + rng.below(width + 1);
            let client = rng.below(shape.clients);
            let unknown = rng.chance(shape.unknown_percent);
            let takes_effect = !unknown || rng.chance(50);
            let (input, output) = op(rng, takes_effect);
            history.push(if unknown {
                Operation::unknown(client, call, input)
            } else {
                Operation::ok(client, call, ret, input, output)
            });
        }
        for i in (1..history.len()).rev() {
            history.swap(i, rng.below(i as u64 + 1) as usize);
        }
        history
    }

    /// A `kv` history over four values: many operations lead to the same state, the hard
    /// case for the search.
    fn kv_few_values(rng: &mut Rng, shape: &Shape) -> Vec<Operation<KvCommand, KvReply>> {
        let mut state = None;
        let value = |rng: &mut Rng| rng.below(4).to_string();
        widened(rng, shape, |rng, takes_effect| {
            let input = match rng.below(10) {
                0..=2 => KvCommand::Get,
                3..=5 => KvCommand::Put(value(rng)),
                6..=8 => KvCommand::Cas {
                    expected: (!rng.chance(20)).then(|| value(rng)),
                    new: value(rng),
                },
                _ => KvCommand::Delete,
            };
            let (next, reply) = KvModel.apply(&state, &input);
            if takes_effect {
                state = next;
            }
            (input, reply)
        })
    }

    /// A `kv` history as the simulator's workload makes them: every written value is new,
    /// and a CAS mostly expects the current value.
    fn kv_unique_values(rng: &mut Rng, shape: &Shape) -> Vec<Operation<KvCommand, KvReply>> {
        let mut state: Option<String> = None;
        let mut seq = 0u64;
        widened(rng, shape, |rng, takes_effect| {
            seq += 1;
            let new = seq.to_string();
            let input = match rng.below(20) {
                0..=7 => KvCommand::Get,
                8..=13 => KvCommand::Put(new),
                14..=18 => KvCommand::Cas {
                    expected: if rng.chance(70) {
                        state.clone()
                    } else {
                        Some(rng.below(seq).to_string())
                    },
                    new,
                },
                _ => KvCommand::Delete,
            };
            let (next, reply) = KvModel.apply(&state, &input);
            if takes_effect {
                state = next;
            }
            (input, reply)
        })
    }

    /// A `counter` history with adds of 1 to `max_add`.
    fn counter_history(
        rng: &mut Rng,
        shape: &Shape,
        max_add: u64,
    ) -> Vec<Operation<CounterCommand, i64>> {
        let mut state = 0;
        widened(rng, shape, |rng, takes_effect| {
            let input = if rng.chance(40) {
                CounterCommand::Get
            } else {
                // Positive: the counter never goes below zero.
                CounterCommand::Add(1 + rng.below(max_add) as i64)
            };
            let next = CounterModel.apply(state, &input).unwrap();
            if takes_effect {
                state = next;
            }
            (input, next)
        })
    }

    fn is_kv_get(input: &KvCommand) -> bool {
        *input == KvCommand::Get
    }

    fn is_counter_get(input: &CounterCommand) -> bool {
        *input == CounterCommand::Get
    }

    const NEVER_WRITTEN: &str = "\"never written\"";

    /// Checks a generated history, which must be linearizable, then the same with the first
    /// completed read's output made impossible, which must not be; returns the
    /// counterexample.
    fn check_both_ways<M: Model>(
        model: &M,
        mut history: Vec<Operation<M::Input, M::Output>>,
        is_read: impl Fn(&M::Input) -> bool,
        impossible: M::Output,
        max_steps: u64,
    ) -> Option<Counterexample> {
        assert_eq!(
            check(model, &history, max_steps),
            Verdict::Linearizable,
            "{history:#?}"
        );
        let read = history
            .iter()
            .position(|op| op.ret.is_some() && is_read(&op.input))?;
        history[read].output = Some(impossible);
        match check(model, &history, max_steps) {
            Verdict::NotLinearizable(c) => {
                assert!(
                    c.blocked.iter().any(|b| b.index == read && b.impossible),
                    "#{read} is not named: {c}"
                );
                Some(c)
            }
            v => panic!("expected not linearizable, got {v:?} for {history:#?}"),
        }
    }

    #[test]
    fn random_widened_kv_histories() {
        for seed in 1..=300 {
            let mut rng = Rng(seed);
            let shape = Shape::random(&mut rng, 45);
            let history = if seed % 2 == 0 {
                kv_few_values(&mut rng, &shape)
            } else {
                kv_unique_values(&mut rng, &shape)
            };
            let never = KvReply::Value(Some(NEVER_WRITTEN.to_string()));
            check_both_ways(&KvModel, history, is_kv_get, never, 10_000_000);
        }
    }

    #[test]
    fn random_widened_counter_histories() {
        for seed in 1..=300 {
            let mut rng = Rng(seed);
            let shape = Shape::random(&mut rng, 45);
            let history = counter_history(&mut rng, &shape, 1 + seed % 3);
            check_both_ways(&CounterModel, history, is_counter_get, -1, 10_000_000);
        }
    }

    /// A few hundred operations with dozens of unknown outcomes, as a long simulation run
    /// records for one busy entity.
    #[test]
    fn large_histories_with_many_unknown_outcomes() {
        let shape = Shape {
            ops: 400,
            clients: 8,
            spread: 3,
            unknown_percent: 12,
        };
        for seed in 1..=3 {
            let mut rng = Rng(seed);
            let history = kv_unique_values(&mut rng, &shape);
            let unknown = history.iter().filter(|op| op.ret.is_none()).count();
            assert!(unknown >= 30, "{unknown} unknown");
            let never = KvReply::Value(Some(NEVER_WRITTEN.to_string()));
            check_both_ways(&KvModel, history, is_kv_get, never, 10_000_000).unwrap();

            let history = counter_history(&mut rng, &shape, 1);
            check_both_ways(&CounterModel, history, is_counter_get, -1, 10_000_000).unwrap();
        }
    }

    /// Fewer operations, but drawn from few values and adds of several sizes, so that many
    /// orders and many choices of unknown-outcome operations reach the same states.
    #[test]
    fn ambiguous_histories_with_many_unknown_outcomes() {
        let shape = Shape {
            ops: 150,
            clients: 8,
            spread: 3,
            unknown_percent: 15,
        };
        for seed in 1..=3 {
            let mut rng = Rng(seed);
            let history = kv_few_values(&mut rng, &shape);
            let never = KvReply::Value(Some(NEVER_WRITTEN.to_string()));
            check_both_ways(&KvModel, history, is_kv_get, never, 10_000_000).unwrap();

            let history = counter_history(&mut rng, &shape, 3);
            check_both_ways(&CounterModel, history, is_counter_get, -1, 10_000_000).unwrap();
        }
    }

    /// Whether some order of `history` is allowed, trying them all: the definition, for
    /// histories small enough.
    fn brute_force<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> bool {
        fn search<M: Model>(
            model: &M,
            history: &[Operation<M::Input, M::Output>],
            placed: &mut [bool],
            state: &M::State,
        ) -> bool {
            let done = history
                .iter()
                .zip(placed.iter())
                .all(|(op, &p)| p || op.ret.is_none());
            if done {
                return true;
            }
            for i in 0..history.len() {
                // Next can be anything not placed whose call no pending return precedes.
                let must_wait = history.iter().enumerate().any(|(j, other)| {
                    !placed[j] && other.ret.is_some_and(|ret| ret < history[i].call)
                });
                if placed[i] || must_wait {
                    continue;
                }
                let op = &history[i];
                if let Some(next) = model.step(state, &op.input, op.output.as_ref()) {
                    placed[i] = true;
                    let found = search(model, history, placed, &next);
                    placed[i] = false;
                    if found {
                        return true;
                    }
                }
            }
            false
        }
        search(
            model,
            history,
            &mut vec![false; history.len()],
            &model.init(),
        )
    }

    /// Small random histories with random outputs, judged by the checker and by brute
    /// force. Returns how many were linearizable.
    fn agrees_with_brute_force<M: Model>(
        model: &M,
        seeds: u64,
        mut draw: impl FnMut(&mut Rng) -> (M::Input, M::Output),
    ) -> u64 {
        let mut linearizable = 0;
        for seed in 1..=seeds {
            let mut rng = Rng(seed);
            let history: Vec<_> = (0..2 + rng.below(7))
                .map(|i| {
                    let call = rng.below(60);
                    let (input, output) = draw(&mut rng);
                    if rng.chance(40) {
                        Operation::unknown(i, call, input)
                    } else {
                        Operation::ok(i, call, call + rng.below(30), input, output)
                    }
                })
                .collect();
            let expected = brute_force(model, &history);
            let verdict = check(model, &history, 1_000_000);
            match (&verdict, expected) {
                (Verdict::Linearizable, true) => linearizable += 1,
                (Verdict::NotLinearizable(_), false) => {}
                _ => panic!("seed {seed}: {verdict:?}, brute force says {expected}: {history:#?}"),
            }
        }
        linearizable
    }

    #[test]
    fn kv_agrees_with_brute_force() {
        let value = |rng: &mut Rng| (rng.below(4) > 0).then(|| rng.below(3).to_string());
        let linearizable = agrees_with_brute_force(&KvModel, 4_000, |rng| {
            let input = match rng.below(8) {
                0..=1 => KvCommand::Get,
                2..=4 => KvCommand::Put(rng.below(3).to_string()),
                5..=6 => KvCommand::Cas {
                    expected: value(rng),
                    new: rng.below(3).to_string(),
                },
                _ => KvCommand::Delete,
            };
            // The output the command has from some state.
            let (_, output) = KvModel.apply(&value(rng), &input);
            (input, output)
        });
        assert!((400..=3_600).contains(&linearizable), "{linearizable}");
    }

    #[test]
    fn counter_agrees_with_brute_force() {
        let linearizable = agrees_with_brute_force(&CounterModel, 4_000, |rng| {
            let input = match rng.below(6) {
                0..=1 => CounterCommand::Get,
                2 => CounterCommand::Add(0),
                3 => CounterCommand::Add(-1),
                _ => CounterCommand::Add(1),
            };
            (input, rng.below(3) as i64)
        });
        assert!((400..=3_600).contains(&linearizable), "{linearizable}");
    }

    #[test]
    fn empty_and_unknown_only_histories_are_linearizable() {
        let empty: [Operation<CounterCommand, i64>; 0] = [];
        assert_eq!(check(&CounterModel, &empty, 0), Verdict::Linearizable);
        let unknown = [
            Operation::unknown(1, 0, CounterCommand::Add(1)),
            Operation::unknown(2, 5, CounterCommand::Get),
        ];
        assert_eq!(check(&CounterModel, &unknown, 0), Verdict::Linearizable);
    }

    #[test]
    fn order_of_the_history_does_not_matter() {
        let get =
            |client, call, ret, out| Operation::ok(client, call, ret, CounterCommand::Get, out);
        let add = |client, call, ret, d, out| {
            Operation::ok(client, call, ret, CounterCommand::Add(d), out)
        };
        let mut history = vec![
            add(1, 0, 10, 1, 1),
            get(2, 20, 30, 1),
            add(1, 40, 50, 1, 2),
            get(2, 60, 70, 1),
        ];
        let first = check(&CounterModel, &history, 1_000);
        history.reverse();
        let reversed = check(&CounterModel, &history, 1_000);
        assert!(matches!(first, Verdict::NotLinearizable(_)), "{first:?}");
        assert!(
            matches!(reversed, Verdict::NotLinearizable(_)),
            "{reversed:?}"
        );
        // And the same input gives the same answer, to the letter.
        assert_eq!(check(&CounterModel, &history, 1_000), reversed);
    }

    #[test]
    fn return_before_call_reads_as_instantaneous() {
        let history = [
            Operation::ok(1, 10, 5, CounterCommand::Add(1), 1),
            Operation::ok(2, 11, 12, CounterCommand::Get, 0),
        ];
        assert!(matches!(
            check(&CounterModel, &history, 1_000),
            Verdict::NotLinearizable(_)
        ));
    }

    #[test]
    fn budget_exhausted_is_unknown() {
        // Unknown adds of distinct powers of two, then a read no sum gives: every subset of
        // the adds is a distinct state, 2^40 of them.
        let mut adds: Vec<_> = (0..40)
            .map(|i| Operation::unknown(i, i, CounterCommand::Add(1 << i)))
            .collect();
        adds.push(Operation::ok(99, 100, 110, CounterCommand::Get, -1));
        // Concurrent puts of distinct values, then a read of a value none wrote: every
        // subset of the puts, with each of them last, is a distinct node.
        let mut puts: Vec<_> = (0..40)
            .map(|i| {
                let v = i.to_string();
                Operation::ok(
                    i,
                    i,
                    1_000,
                    KvCommand::Put(v.clone()),
                    KvReply::Value(Some(v)),
                )
            })
            .collect();
        let never = KvReply::Value(Some(NEVER_WRITTEN.to_string()));
        puts.push(Operation::ok(99, 2_000, 2_010, KvCommand::Get, never));
        for max_steps in [0, 1, 10_000, 300_000] {
            assert_eq!(check(&CounterModel, &adds, max_steps), Verdict::Unknown);
            assert_eq!(check(&KvModel, &puts, max_steps), Verdict::Unknown);
        }
        // The steps are the budget.
        let (_, steps) = Search::new(&KvModel, &puts).run(12_345);
        assert_eq!(steps, 12_345);
        // The same budget is plenty for honest histories of the same shape.
        let mut honest: Vec<_> = (0..40)
            .map(|i| Operation::ok(i, i, 1_000, CounterCommand::Add(1), i as i64 + 1))
            .collect();
        honest.push(Operation::ok(99, 2_000, 2_010, CounterCommand::Get, 40));
        assert_eq!(check(&CounterModel, &honest, 10_000), Verdict::Linearizable);
        let last = KvReply::Value(Some("39".to_string()));
        *puts.last_mut().unwrap() = Operation::ok(99, 2_000, 2_010, KvCommand::Get, last);
        assert_eq!(check(&KvModel, &puts, 10_000), Verdict::Linearizable);
    }

    #[test]
    fn counterexample_shows_the_end_of_a_long_prefix() {
        let mut history: Vec<_> = (0..20)
            .map(|i| {
                let t = 10 * i as u64;
                Operation::ok(1, t, t + 5, CounterCommand::Add(1), i + 1)
            })
            .collect();
        history.push(Operation::ok(2, 300, 310, CounterCommand::Get, 3));
        let Verdict::NotLinearizable(c) = check(&CounterModel, &history, 1_000) else {
            panic!("expected not linearizable");
        };
        assert_eq!((c.placed, c.completed, c.prefix.len()), (20, 21, 20));
        assert_eq!(c.state, "20");
        let text = c.to_string();
        let expected = "\
not linearizable: the longest linearizable prefix places 20 of 21 completed operations
  ... 12 earlier operations
  #12 client 1 [120, 125] Add(1) -> 13 => 13";
        assert!(text.starts_with(expected), "{text}");
        assert!(
            text.ends_with(
                "  #19 client 1 [190, 195] Add(1) -> 20 => 20\n\
                 then, from state 20, none of these can come next:\n  \
                 #20 client 2 [300, 310] Get -> 3: impossible from this state"
            ),
            "{text}"
        );
    }

    #[test]
    fn counterexample_marks_unknown_outcomes() {
        let history = [
            Operation::unknown(1, 0, CounterCommand::Add(5)),
            Operation::ok(2, 10, 20, CounterCommand::Get, 5),
            Operation::ok(2, 30, 40, CounterCommand::Get, 6),
        ];
        let Verdict::NotLinearizable(c) = check(&CounterModel, &history, 1_000) else {
            panic!("expected not linearizable");
        };
        let text = c.to_string();
        assert!(
            text.contains("#0 client 1 [0, ?] Add(5) -> ? (outcome unknown) => 5"),
            "{text}"
        );
        assert!(
            text.contains("#2 client 2 [30, 40] Get -> 6: impossible"),
            "{text}"
        );
    }

    #[test]
    fn counterexample_says_when_an_operation_fits_but_leads_nowhere() {
        // Both adds fit after the first one, but whichever goes first, the other's reply
        // is then wrong.
        let history = [
            Operation::ok(1, 0, 10, CounterCommand::Add(1), 1),
            Operation::ok(2, 20, 40, CounterCommand::Add(1), 2),
            Operation::ok(3, 20, 40, CounterCommand::Add(2), 3),
        ];
        let Verdict::NotLinearizable(c) = check(&CounterModel, &history, 1_000) else {
            panic!("expected not linearizable");
        };
        assert_eq!(c.placed, 2);
        let text = c.to_string();
        assert!(
            text.contains("possible, but nothing can follow it") || text.contains("impossible"),
            "{text}"
        );
    }

    #[test]
    fn bits() {
        let mut a = Bits::new(130);
        let mut b = Bits::new(130);
        a.insert(129);
        assert!(!a.is_subset(&b));
        assert!(!b.contains(129));
        b.insert(129);
        b.insert(3);
        assert!(a.is_subset(&b));
        assert!(b.contains(129) && b.contains(3) && !b.contains(4));
        b.remove(129);
        assert!(!a.is_subset(&b));
        assert!(Bits::new(130).is_subset(&b));
    }

    #[test]
    fn memo_keeps_minimal_failed_sets() {
        let completed = Bits::new(4);
        let mut one = Bits::new(4);
        one.insert(1);
        let mut both = one.clone();
        both.insert(2);
        let mut memo = Memo::new();
        memo.insert(&completed, &both, &7);
        assert!(memo.dominated(&completed, &both, &7));
        assert!(!memo.dominated(&completed, &one, &7));
        assert!(!memo.dominated(&completed, &both, &8));
        memo.insert(&completed, &one, &7);
        assert!(memo.dominated(&completed, &both, &7));
        assert_eq!(memo.failed[&completed][&7], vec![one]);
    }
}
