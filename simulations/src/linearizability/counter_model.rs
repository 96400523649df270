//! The sequential specification of the `counter` entity kind, to check its histories against.
//!
//! It mirrors `shoal::entity::builtin::counter`: an `Add` that would overflow is rejected by
//! the entity, so it never succeeds here (and an unknown one can only have had no effect).

use shoal::entity::builtin::CounterCommand;

use super::Model;

/// The `counter` kind: the state is the value; every reply is the value after the command.
#[derive(Debug, Clone, Copy, Default)]
pub struct CounterModel;

impl CounterModel {
    /// The value after `input`, or `None` if the entity rejects it (overflow).
    pub fn apply(&self, state: i64, input: &CounterCommand) -> Option<i64> {
        match input {
            CounterCommand::Add(d) => state.checked_add(*d),
            CounterCommand::Get => Some(state),
        }
    }
}

impl Model for CounterModel {
    type State = i64;
    type Input = CounterCommand;
    type Output = i64;

    fn init(&self) -> i64 {
        0
    }

    fn step(&self, state: &i64, input: &CounterCommand, output: Option<&i64>) -> Option<i64> {
        self.apply(*state, input)
            .filter(|next| output.is_none_or(|out| out == next))
    }

    fn same_input(&self, a: &CounterCommand, b: &CounterCommand) -> bool {
        a == b
    }

    fn is_read_only(&self, input: &CounterCommand, _output: &i64) -> bool {
        matches!(input, CounterCommand::Get | CounterCommand::Add(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linearizability::{Operation, Verdict, check};

    type Op = Operation<CounterCommand, i64>;

    const STEPS: u64 = 1_000_000;

    fn add(client: u64, call: u64, ret: u64, d: i64, out: i64) -> Op {
        Operation::ok(client, call, ret, CounterCommand::Add(d), out)
    }

    fn get(client: u64, call: u64, ret: u64, out: i64) -> Op {
        Operation::ok(client, call, ret, CounterCommand::Get, out)
    }

    fn counterexample(history: &[Op]) -> String {
        match check(&CounterModel, history, STEPS) {
            Verdict::NotLinearizable(c) => c.to_string(),
            v => panic!("expected not linearizable, got {v:?} for {history:#?}"),
        }
    }

    #[test]
    fn step_follows_the_entity() {
        let m = CounterModel;
        assert_eq!(m.step(&0, &CounterCommand::Add(5), Some(&5)), Some(5));
        assert_eq!(m.step(&0, &CounterCommand::Add(5), Some(&4)), None);
        assert_eq!(m.step(&3, &CounterCommand::Add(-5), None), Some(-2));
        assert_eq!(m.step(&3, &CounterCommand::Get, Some(&3)), Some(3));
        assert_eq!(m.step(&3, &CounterCommand::Get, Some(&2)), None);
        assert_eq!(m.step(&i64::MAX, &CounterCommand::Add(1), None), None);
        assert_eq!(
            m.step(&i64::MAX, &CounterCommand::Add(1), Some(&i64::MIN)),
            None
        );
    }

    #[test]
    fn concurrent_adds_and_a_partial_sum() {
        // Adds of 1, 2 and 4 overlap each other and the get; the get saw 1 + 4, and the
        // replies of the adds say the order was 1, 4, 2.
        let history = [
            add(1, 0, 100, 1, 1),
            add(2, 10, 90, 2, 7),
            add(3, 20, 80, 4, 5),
            get(4, 30, 70, 5),
            get(4, 110, 120, 7),
        ];
        assert_eq!(check(&CounterModel, &history, STEPS), Verdict::Linearizable);
    }

    #[test]
    fn partial_sum_that_no_order_gives() {
        // 2 can only be the add of 2 alone, but its reply says the add of 1 came first.
        let text = counterexample(&[
            add(1, 0, 100, 1, 1),
            add(2, 10, 90, 2, 3),
            get(4, 30, 70, 2),
        ]);
        assert!(text.contains("#2 client 4 [30, 70] Get -> 2"), "{text}");
    }

    #[test]
    fn unknown_add_counts_once_or_never() {
        let once = [
            add(1, 0, 10, 1, 1),
            Operation::unknown(2, 20, CounterCommand::Add(10)),
            get(1, 30, 40, 1),
            get(3, 50, 60, 11),
            add(1, 70, 80, 1, 12),
        ];
        assert_eq!(check(&CounterModel, &once, STEPS), Verdict::Linearizable);
        let never = [
            add(1, 0, 10, 1, 1),
            Operation::unknown(2, 20, CounterCommand::Add(10)),
            get(3, 50, 60, 1),
            add(1, 70, 80, 1, 2),
        ];
        assert_eq!(check(&CounterModel, &never, STEPS), Verdict::Linearizable);
        let twice = [
            add(1, 0, 10, 1, 1),
            Operation::unknown(2, 20, CounterCommand::Add(10)),
            get(3, 50, 60, 21),
        ];
        let text = counterexample(&twice);
        assert!(text.contains("#2 client 3 [50, 60] Get -> 21"), "{text}");
    }

    #[test]
    fn get_that_goes_backwards() {
        let text = counterexample(&[
            add(1, 0, 10, 5, 5),
            get(2, 20, 30, 5),
            add(1, 40, 50, -2, 3),
            get(2, 60, 70, 5),
        ]);
        assert!(
            text.contains("#3 client 2 [60, 70] Get -> 5: impossible from this state"),
            "{text}"
        );
        assert!(text.contains("from state 3"), "{text}");
    }

    #[test]
    fn concurrent_gets_may_not_disagree_on_order() {
        // Two reads overlap an add; one saw it, so a read that starts after that one ended
        // must see it too.
        let text = counterexample(&[add(1, 0, 100, 1, 1), get(2, 10, 20, 1), get(3, 30, 40, 0)]);
        assert!(text.contains("#2 client 3 [30, 40] Get -> 0"), "{text}");
    }
}
