//! The sequential specification of the `kv` entity kind, to check its histories against.
//!
//! It mirrors `shoal::entity::builtin::kv`, except that values are compared as exact text
//! (the workload writes canonical JSON, so equal values are equal strings) and a `Put` or
//! `Cas` of invalid JSON, which the entity rejects, is not modelled (rejected operations are
//! left out of the history).

use shoal::entity::builtin::{KvCommand, KvReply};

use super::Model;

/// The `kv` kind: the state is the value's JSON text, if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvModel;

impl KvModel {
    /// What `input` does to `state`: the next state and the reply.
    pub fn apply(&self, state: &Option<String>, input: &KvCommand) -> (Option<String>, KvReply) {
        match input {
            KvCommand::Get => (state.clone(), KvReply::Value(state.clone())),
            KvCommand::Put(v) => (Some(v.clone()), KvReply::Value(Some(v.clone()))),
            KvCommand::Cas { expected, new } if state == expected => {
                (Some(new.clone()), KvReply::Value(Some(new.clone())))
            }
            KvCommand::Cas { .. } => (state.clone(), KvReply::CasFailed(state.clone())),
            KvCommand::Delete => (None, KvReply::Value(state.clone())),
        }
    }
}

impl Model for KvModel {
    type State = Option<String>;
    type Input = KvCommand;
    type Output = KvReply;

    fn init(&self) -> Option<String> {
        None
    }

    fn step(
        &self,
        state: &Option<String>,
        input: &KvCommand,
        output: Option<&KvReply>,
    ) -> Option<Option<String>> {
        let (next, reply) = self.apply(state, input);
        match output {
            Some(out) if *out != reply => None,
            _ => Some(next),
        }
    }

    fn same_input(&self, a: &KvCommand, b: &KvCommand) -> bool {
        a == b
    }

    fn is_read_only(&self, input: &KvCommand, output: &KvReply) -> bool {
        match (input, output) {
            (KvCommand::Get, _) | (KvCommand::Cas { .. }, KvReply::CasFailed(_)) => true,
            // Possible only from the value it writes.
            (KvCommand::Cas { expected, new }, _) => expected.as_ref() == Some(new),
            // Possible only from no value.
            (KvCommand::Delete, KvReply::Value(old)) => old.is_none(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linearizability::{Operation, Verdict, check};

    type Op = Operation<KvCommand, KvReply>;

    const STEPS: u64 = 1_000_000;

    fn put(v: &str) -> KvCommand {
        KvCommand::Put(v.to_string())
    }

    fn cas(expected: Option<&str>, new: &str) -> KvCommand {
        KvCommand::Cas {
            expected: expected.map(str::to_string),
            new: new.to_string(),
        }
    }

    fn value(v: Option<&str>) -> KvReply {
        KvReply::Value(v.map(str::to_string))
    }

    fn cas_failed(v: Option<&str>) -> KvReply {
        KvReply::CasFailed(v.map(str::to_string))
    }

    fn ok(client: u64, call: u64, ret: u64, input: KvCommand, output: KvReply) -> Op {
        Operation::ok(client, call, ret, input, output)
    }

    fn verdict(history: &[Op]) -> Verdict {
        check(&KvModel, history, STEPS)
    }

    fn assert_linearizable(history: &[Op]) {
        let v = verdict(history);
        assert_eq!(v, Verdict::Linearizable, "history {history:#?}");
    }

    /// Asserts the verdict and returns the counterexample's text.
    fn assert_not_linearizable(history: &[Op]) -> String {
        match verdict(history) {
            Verdict::NotLinearizable(c) => c.to_string(),
            v => panic!("expected not linearizable, got {v:?} for {history:#?}"),
        }
    }

    #[test]
    fn step_follows_the_entity() {
        let m = KvModel;
        let none: Option<String> = None;
        let one = Some("1".to_string());
        assert_eq!(
            m.step(&none, &KvCommand::Get, Some(&value(None))),
            Some(None)
        );
        assert_eq!(
            m.step(&none, &KvCommand::Get, Some(&value(Some("1")))),
            None
        );
        assert_eq!(
            m.step(&none, &put("1"), Some(&value(Some("1")))),
            Some(one.clone())
        );
        assert_eq!(m.step(&none, &put("1"), Some(&value(Some("2")))), None);
        assert_eq!(m.step(&none, &put("1"), None), Some(one.clone()));
        assert_eq!(
            m.step(&none, &cas(None, "2"), Some(&value(Some("2")))),
            Some(Some("2".to_string()))
        );
        assert_eq!(
            m.step(&one, &cas(None, "2"), Some(&cas_failed(Some("1")))),
            Some(one.clone())
        );
        assert_eq!(m.step(&one, &cas(None, "2"), Some(&value(Some("2")))), None);
        assert_eq!(
            m.step(&one, &cas(Some("1"), "2"), Some(&cas_failed(Some("1")))),
            None
        );
        assert_eq!(
            m.step(&one, &KvCommand::Delete, Some(&value(Some("1")))),
            Some(None)
        );
        assert_eq!(
            m.step(&none, &KvCommand::Delete, Some(&value(None))),
            Some(None)
        );
        assert_eq!(m.step(&one, &KvCommand::Delete, Some(&value(None))), None);
        // Exact text: `1.0` is not `1` here.
        assert_eq!(
            m.step(&one, &cas(Some("1.0"), "2"), None),
            Some(one.clone())
        );
    }

    #[test]
    fn sequential_history_is_linearizable() {
        assert_linearizable(&[
            ok(1, 0, 10, KvCommand::Get, value(None)),
            ok(1, 20, 30, put("1"), value(Some("1"))),
            ok(2, 40, 50, KvCommand::Get, value(Some("1"))),
            ok(2, 60, 70, cas(Some("1"), "2"), value(Some("2"))),
            ok(1, 80, 90, cas(Some("1"), "3"), cas_failed(Some("2"))),
            ok(3, 100, 110, KvCommand::Delete, value(Some("2"))),
            ok(3, 120, 130, KvCommand::Get, value(None)),
        ]);
    }

    #[test]
    fn concurrent_get_sees_either_value() {
        for seen in [Some("1"), Some("2")] {
            assert_linearizable(&[
                ok(1, 0, 10, put("1"), value(Some("1"))),
                ok(1, 20, 60, put("2"), value(Some("2"))),
                ok(2, 30, 50, KvCommand::Get, value(seen)),
            ]);
        }
        // Even the value before both puts, when the get overlaps both.
        assert_linearizable(&[
            ok(1, 10, 30, put("1"), value(Some("1"))),
            ok(2, 20, 40, put("2"), value(Some("2"))),
            ok(3, 0, 50, KvCommand::Get, value(None)),
        ]);
    }

    #[test]
    fn cas_chain_is_linearizable() {
        // Three clients race from "0"; the replies say the order was 1, 3, 2.
        assert_linearizable(&[
            ok(1, 0, 10, put("0"), value(Some("0"))),
            ok(1, 20, 100, cas(Some("0"), "1"), value(Some("1"))),
            ok(2, 25, 90, cas(Some("3"), "2"), value(Some("2"))),
            ok(3, 30, 80, cas(Some("1"), "3"), value(Some("3"))),
            ok(4, 35, 85, cas(Some("0"), "4"), cas_failed(Some("1"))),
            ok(4, 110, 120, KvCommand::Get, value(Some("2"))),
        ]);
    }

    #[test]
    fn unknown_put_that_shows_up_later() {
        assert_linearizable(&[
            ok(1, 0, 10, put("1"), value(Some("1"))),
            Operation::unknown(2, 20, put("2")),
            ok(1, 30, 40, KvCommand::Get, value(Some("1"))),
            ok(3, 1_000, 1_010, KvCommand::Get, value(Some("2"))),
            ok(3, 1_020, 1_030, KvCommand::Get, value(Some("2"))),
        ]);
    }

    #[test]
    fn unknown_put_that_never_shows_up() {
        assert_linearizable(&[
            ok(1, 0, 10, put("1"), value(Some("1"))),
            Operation::unknown(2, 20, put("2")),
            ok(1, 30, 40, KvCommand::Get, value(Some("1"))),
            ok(3, 1_000, 1_010, KvCommand::Get, value(Some("1"))),
        ]);
    }

    #[test]
    fn unknown_put_cannot_take_effect_before_its_call() {
        let text = assert_not_linearizable(&[
            ok(1, 0, 10, KvCommand::Get, value(Some("2"))),
            Operation::unknown(2, 20, put("2")),
        ]);
        assert!(text.contains("#0 client 1 [0, 10] Get"), "{text}");
    }

    #[test]
    fn unknown_put_takes_effect_at_most_once() {
        let text = assert_not_linearizable(&[
            Operation::unknown(1, 0, put("2")),
            ok(2, 10, 20, KvCommand::Get, value(Some("2"))),
            ok(2, 30, 40, put("3"), value(Some("3"))),
            ok(2, 50, 60, KvCommand::Get, value(Some("2"))),
        ]);
        assert!(text.contains("#3 client 2 [50, 60] Get"), "{text}");
    }

    #[test]
    fn stale_read_after_a_completed_write() {
        let text = assert_not_linearizable(&[
            ok(1, 0, 10, put("1"), value(Some("1"))),
            ok(1, 20, 30, put("2"), value(Some("2"))),
            ok(2, 40, 50, KvCommand::Get, value(Some("1"))),
        ]);
        assert!(
            text.contains(r#"#2 client 2 [40, 50] Get -> Value(Some("1")): impossible"#),
            "{text}"
        );
        assert!(text.contains(r#"from state Some("2")"#), "{text}");
    }

    #[test]
    fn stale_read_of_nothing() {
        // The read starts when the put has returned; it cannot see the empty key.
        assert_not_linearizable(&[
            ok(1, 0, 10, put("1"), value(Some("1"))),
            ok(2, 11, 20, KvCommand::Get, value(None)),
        ]);
        // At the same instant they count as concurrent.
        assert_linearizable(&[
            ok(1, 0, 10, put("1"), value(Some("1"))),
            ok(2, 10, 20, KvCommand::Get, value(None)),
        ]);
    }

    #[test]
    fn lost_update_two_cas_on_the_same_value_both_succeed() {
        let text = assert_not_linearizable(&[
            ok(1, 0, 10, put("0"), value(Some("0"))),
            ok(1, 20, 40, cas(Some("0"), "1"), value(Some("1"))),
            ok(2, 25, 45, cas(Some("0"), "2"), value(Some("2"))),
        ]);
        assert!(text.contains("Cas"), "{text}");
        assert!(text.contains("impossible from this state"), "{text}");
    }

    #[test]
    fn read_of_a_value_never_written() {
        let text = assert_not_linearizable(&[
            ok(1, 0, 10, put("1"), value(Some("1"))),
            ok(2, 5, 30, put("2"), value(Some("2"))),
            ok(3, 6, 40, KvCommand::Get, value(Some("7"))),
            Operation::unknown(4, 7, put("3")),
        ]);
        assert!(
            text.contains(r#"#2 client 3 [6, 40] Get -> Value(Some("7"))"#),
            "{text}"
        );
    }

    #[test]
    fn value_disappears_then_reappears() {
        let text = assert_not_linearizable(&[
            ok(1, 0, 10, put("1"), value(Some("1"))),
            ok(2, 20, 30, KvCommand::Get, value(Some("1"))),
            ok(3, 40, 50, KvCommand::Get, value(None)),
            ok(2, 60, 70, KvCommand::Get, value(Some("1"))),
        ]);
        assert!(
            text.contains("#2 client 3 [40, 50] Get -> Value(None): impossible"),
            "{text}"
        );
        // With a delete and a put of the same value between them, it is fine.
        assert_linearizable(&[
            ok(1, 0, 10, put("1"), value(Some("1"))),
            ok(2, 20, 30, KvCommand::Get, value(Some("1"))),
            Operation::unknown(4, 32, KvCommand::Delete),
            ok(3, 40, 50, KvCommand::Get, value(None)),
            Operation::unknown(4, 52, put("1")),
            ok(2, 60, 70, KvCommand::Get, value(Some("1"))),
        ]);
    }

    #[test]
    fn failed_cas_must_see_a_real_value() {
        assert_not_linearizable(&[
            ok(1, 0, 10, put("1"), value(Some("1"))),
            ok(2, 20, 30, cas(Some("5"), "6"), cas_failed(Some("4"))),
        ]);
    }

    #[test]
    fn delete_reply_is_the_old_value() {
        assert_linearizable(&[
            ok(1, 0, 10, put("1"), value(Some("1"))),
            ok(1, 20, 30, KvCommand::Delete, value(Some("1"))),
            ok(2, 25, 35, KvCommand::Delete, value(None)),
        ]);
        assert_not_linearizable(&[
            ok(1, 0, 10, put("1"), value(Some("1"))),
            ok(1, 20, 30, KvCommand::Delete, value(Some("1"))),
            ok(2, 40, 50, KvCommand::Delete, value(Some("1"))),
        ]);
    }
}
