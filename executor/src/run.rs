//! One DAG call in flight, as a state machine with no threads and no I/O:
//! [`DagRun::start`] yields the first triggers (the sources), and each
//! completed function ([`DagRun::complete`]) yields the triggers it made
//! ready, or the call's outcome. Whoever completes a function advances the
//! run — the shard for inline functions, an executor thread for the others —
//! so triggers flow executor to executor without returning to the shard.
//!
//! * **Wait-all fan-in**: a function becomes ready once every upstream has a
//!   result; its arguments are its call arguments (sources only) followed by
//!   its upstreams' results in DAG function-list order.
//! * **Chains**: [`chain`] finds the functions that follow one another
//!   with nothing else in between (each the only input of the next); a
//!   chain run elsewhere in one go completes at once
//!   ([`DagRun::complete_chain`]): its inner results are never seen here.
//! * **Competitive execution**: a function with `replicas > 1` is triggered
//!   once per replica; the first successful result wins and later ones are
//!   ignored. A replica that fails or declares its result invalid is
//!   discarded; only when every replica failed does the call fail.

use std::collections::HashMap;
use std::sync::Arc;

use crate::dag::Dag;
use crate::function::FnError;

/// A call argument: bytes, or a reference to a KVS key whose (LWW) value is
/// read just before the function runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    Value(Vec<u8>),
    Ref(Vec<u8>),
}

/// One function of the run, ready to execute (once per replica).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    pub node: usize,
    pub args: Vec<Arg>,
}

/// What completing a function led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// These functions are now ready (possibly none).
    Ready(Vec<Trigger>),
    /// The call is over: the sink's result, or why it failed.
    Finished(Result<Vec<u8>, FnError>),
    /// The run was already over, or another replica had already won.
    Ignored,
}

/// Refuses arguments for functions that are not sources of `dag`.
pub fn check_sources<V>(dag: &Dag, args: &HashMap<String, V>) -> Result<(), String> {
    match args
        .keys()
        .find(|f| !dag.sources().iter().any(|&s| dag.node(s).name == **f))
    {
        Some(f) => Err(format!(
            "{f:?} is not a source function of DAG {:?}",
            dag.name()
        )),
        None => Ok(()),
    }
}

/// The state of one DAG call.
#[derive(Debug)]
pub struct DagRun {
    dag: Arc<Dag>,
    /// Upstreams each node still waits for.
    waiting: Vec<usize>,
    results: Vec<Option<Vec<u8>>>,
    /// Replicas of each node not yet completed.
    outstanding: Vec<u32>,
    finished: bool,
}

impl DagRun {
    /// Starts a call. `args` gives source functions their arguments by name;
    /// naming a function that is not a source is refused.
    pub fn start(
        dag: Arc<Dag>,
        mut args: HashMap<String, Vec<Arg>>,
    ) -> Result<(DagRun, Vec<Trigger>), String> {
        check_sources(&dag, &args)?;
        let triggers = dag
            .sources()
            .iter()
            .map(|&s| Trigger {
                node: s,
                args: args.remove(&dag.node(s).name).unwrap_or_default(),
            })
            .collect();
        let n = dag.nodes().len();
        let run = DagRun {
            waiting: dag.nodes().iter().map(|node| node.upstream.len()).collect(),
            outstanding: dag
                .nodes()
                .iter()
                .map(|node| node.options.replicas)
                .collect(),
            results: vec![None; n],
            finished: false,
            dag,
        };
        Ok((run, triggers))
    }

    #[must_use]
    pub fn dag(&self) -> &Arc<Dag> {
        &self.dag
    }

    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Ends the run from outside (deadline passed): later completions are
    /// ignored.
    pub fn abandon(&mut self) {
        self.finished = true;
    }

    /// One replica of `node` completed with `result`.
    pub fn complete(&mut self, node: usize, result: Result<Vec<u8>, FnError>) -> Progress {
        if self.finished || self.results[node].is_some() {
            return Progress::Ignored;
        }
        // Only a triggered function completes: all its upstreams are in,
        // and each of its replicas completes once.
        debug_assert_eq!(self.waiting[node], 0, "completed before its inputs");
        debug_assert!(self.outstanding[node] > 0, "more completions than replicas");
        self.outstanding[node] = self.outstanding[node].saturating_sub(1);
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                let replicas = self.dag.node(node).options.replicas;
                if self.outstanding[node] > 0 {
                    return Progress::Ignored; // another replica may still win
                }
                self.finished = true;
                return Progress::Finished(Err(if replicas > 1 {
                    FnError::Failed {
                        function: self.dag.node(node).name.clone(),
                        message: format!("all {replicas} replicas failed; the last: {e}"),
                    }
                } else {
                    e
                }));
            }
        };
        if node == self.dag.sink() {
            self.finished = true;
            return Progress::Finished(Ok(out));
        }
        self.results[node] = Some(out);
        let mut ready = Vec::new();
        for &d in &self.dag.node(node).downstream {
            debug_assert!(self.waiting[d] > 0, "an input arrived twice");
            self.waiting[d] -= 1;
            if self.waiting[d] == 0 {
                let args = self
                    .dag
                    .node(d)
                    .upstream
                    .iter()
                    .map(|&u| Arg::Value(self.results[u].clone().unwrap_or_default()))
                    .collect();
                ready.push(Trigger { node: d, args });
            }
        }
        Progress::Ready(ready)
    }
}

/// The chain of functions starting at `from`: `from`, then for as long as
/// the last has exactly one downstream function, which has no other
/// upstream, one replica and `goes(d)`, that one.
pub fn chain(dag: &Dag, from: usize, goes: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut chain = vec![from];
    loop {
        let last = dag.node(chain[chain.len() - 1]);
        let &[d] = last.downstream.as_slice() else {
            return chain;
        };
        let next = dag.node(d);
        if next.upstream.len() != 1 || next.options.replicas != 1 || !goes(d) {
            return chain;
        }
        chain.push(d);
    }
}

impl DagRun {
    /// The functions of `chain` (from [`chain`]; its first one triggered)
    /// ran one after another elsewhere; `result` is the last one's. The
    /// inner ones complete with no result of their own (only the next one
    /// took it), and trigger nothing: the next one already ran.
    pub fn complete_chain(
        &mut self,
        chain: &[usize],
        result: Result<Vec<u8>, FnError>,
    ) -> Progress {
        let Some((&last, inner)) = chain.split_last() else {
            return Progress::Ignored;
        };
        if result.is_err() {
            return self.complete(chain[0], result);
        }
        for (i, &node) in inner.iter().enumerate() {
            if self.finished || self.results[node].is_some() {
                return Progress::Ignored;
            }
            debug_assert_eq!(self.dag.node(node).downstream, [chain[i + 1]]);
            self.outstanding[node] = self.outstanding[node].saturating_sub(1);
            self.results[node] = Some(Vec::new());
            self.waiting[chain[i + 1]] -= 1;
        }
        self.complete(last, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::{DagSpec, FunctionOptions};

    fn v(s: &str) -> Arg {
        Arg::Value(s.as_bytes().to_vec())
    }

    fn diamond(replicas_of_b: u32) -> Arc<Dag> {
        // a → b, a → c, then b, c → d; listed a, c, b, d.
        let mut spec = DagSpec::chain("x", &["a", "c", "b", "d"]);
        spec.edges = vec![
            ("a".into(), "b".into()),
            ("a".into(), "c".into()),
            ("b".into(), "d".into()),
            ("c".into(), "d".into()),
        ];
        spec.functions[2].1 = FunctionOptions {
            replicas: replicas_of_b,
            batch_max: 1,
        };
        Arc::new(Dag::validate(&spec, |_| true).unwrap())
    }

    #[test]
    fn fan_out_then_wait_all_fan_in_in_list_order() {
        let args = HashMap::from([("a".to_owned(), vec![v("in")])]);
        let (mut run, t) = DagRun::start(diamond(1), args).unwrap();
        assert_eq!(
            t,
            vec![Trigger {
                node: 0,
                args: vec![v("in")]
            }]
        );
        let Progress::Ready(t) = run.complete(0, Ok(b"A".to_vec())) else {
            panic!()
        };
        assert_eq!(t.iter().map(|t| t.node).collect::<Vec<_>>(), [1, 2]);
        // b (node 2) finishes first, but d waits for c too.
        assert_eq!(run.complete(2, Ok(b"B".to_vec())), Progress::Ready(vec![]));
        let Progress::Ready(t) = run.complete(1, Ok(b"C".to_vec())) else {
            panic!()
        };
        assert_eq!(
            t,
            vec![Trigger {
                node: 3,
                args: vec![v("C"), v("B")]
            }]
        );
        assert_eq!(
            run.complete(3, Ok(b"D".to_vec())),
            Progress::Finished(Ok(b"D".to_vec()))
        );
        assert_eq!(run.complete(3, Ok(b"late".to_vec())), Progress::Ignored);
    }

    #[test]
    fn a_chain_stops_at_a_fan_in_a_fan_out_and_where_it_stays() {
        // a → b → c → d, and e → d: the chain from a is a, b, c.
        let mut spec = DagSpec::chain("x", &["a", "b", "c", "d", "e"]);
        spec.edges = vec![
            ("a".into(), "b".into()),
            ("b".into(), "c".into()),
            ("c".into(), "d".into()),
            ("e".into(), "d".into()),
        ];
        let dag = Arc::new(Dag::validate(&spec, |_| true).unwrap());
        assert_eq!(chain(&dag, 0, |_| true), [0, 1, 2]);
        assert_eq!(chain(&dag, 0, |d| d != 2), [0, 1]);
        assert_eq!(chain(&dag, 3, |_| true), [3]);
        // The diamond fans out after a, and b has two replicas.
        assert_eq!(chain(&diamond(1), 0, |_| true), [0]);
        assert_eq!(chain(&diamond(1), 2, |_| true), [2]);

        // a, b, c ran elsewhere: d waits for e still, then runs.
        let args = HashMap::from([("a".to_owned(), vec![v("in")])]);
        let (mut run, t) = DagRun::start(dag.clone(), args).unwrap();
        assert_eq!(t.iter().map(|t| t.node).collect::<Vec<_>>(), [0, 4]);
        let done = run.complete_chain(&[0, 1, 2], Ok(b"C".to_vec()));
        assert_eq!(done, Progress::Ready(vec![]));
        assert_eq!(
            run.complete_chain(&[0, 1, 2], Ok(vec![])),
            Progress::Ignored
        );
        let Progress::Ready(t) = run.complete(4, Ok(b"E".to_vec())) else {
            panic!()
        };
        assert_eq!(t[0].args, vec![v("C"), v("E")]);
        // A chain that failed fails the call.
        let (mut run, _) = DagRun::start(dag, HashMap::new()).unwrap();
        let e = FnError::Failed {
            function: "b".into(),
            message: "x".into(),
        };
        let out = run.complete_chain(&[0, 1, 2], Err(e.clone()));
        assert_eq!(out, Progress::Finished(Err(e)));
    }

    #[test]
    fn competing_replicas_first_valid_wins_invalid_ones_are_filtered() {
        let (mut run, _) = DagRun::start(diamond(3), HashMap::new()).unwrap();
        run.complete(0, Ok(b"A".to_vec()));
        let invalid = FnError::Invalid {
            function: "b".into(),
            reason: "no".into(),
        };
        assert_eq!(run.complete(2, Err(invalid.clone())), Progress::Ignored);
        assert_eq!(run.complete(2, Ok(b"B1".to_vec())), Progress::Ready(vec![]));
        assert_eq!(run.complete(2, Ok(b"B2".to_vec())), Progress::Ignored);
        let Progress::Ready(t) = run.complete(1, Ok(b"C".to_vec())) else {
            panic!()
        };
        assert_eq!(t[0].args, vec![v("C"), v("B1")]);

        // Every replica invalid: the call fails, naming the function.
        let (mut run, _) = DagRun::start(diamond(2), HashMap::new()).unwrap();
        run.complete(0, Ok(b"A".to_vec()));
        assert_eq!(run.complete(2, Err(invalid.clone())), Progress::Ignored);
        let Progress::Finished(Err(e)) = run.complete(2, Err(invalid)) else {
            panic!()
        };
        assert_eq!(
            e.to_string(),
            "function b: all 2 replicas failed; the last: function b: invalid result: no"
        );
        assert!(run.is_finished());
    }

    #[test]
    fn a_plain_failure_ends_the_run_and_unknown_sources_are_refused() {
        let (mut run, _) = DagRun::start(diamond(1), HashMap::new()).unwrap();
        let e = FnError::Failed {
            function: "a".into(),
            message: "x".into(),
        };
        assert_eq!(run.complete(0, Err(e.clone())), Progress::Finished(Err(e)));
        assert_eq!(run.complete(1, Ok(vec![])), Progress::Ignored);
        let err = DagRun::start(diamond(1), HashMap::from([("d".to_owned(), vec![])])).unwrap_err();
        assert_eq!(err, "\"d\" is not a source function of DAG \"x\"");
    }
}
