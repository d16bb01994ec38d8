//! One thread's function instances.
//!
//! [`Instances`] is a cache, owned by one thread (an executor thread, or a
//! shard's own thread for inline functions), of live function instances:
//! one per function name, made by the [`Registry`]'s factory on the first
//! call of that name. Because an instance keeps its state across calls
//! (class functions), every thread has its own and none is shared.
//!
//! On each call the instance is checked against the registry: a built-in's
//! implementation is read without a lock; a user-registered name is looked
//! up again (a read lock). When the name now resolves to another
//! implementation (re-registered with another body) a fresh instance
//! replaces the old one; when it is no longer registered the instance is
//! dropped and the call fails. An instance whose call panics is dropped
//! too, so the next call gets a fresh one. Nothing else evicts instances.
//!
//! [`Instances::run_dag`] runs a whole DAG in-thread, and [`resolve`]
//! reads reference arguments before a call.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::dag::Dag;
use crate::function::{Context, FnError, Function};
use crate::message::Postbox;
use crate::registry::Registry;
use crate::run::{Arg, DagRun, Progress};
use crate::store::Store;

/// One thread's live function instances, one per function name (see the
/// module doc for when an instance is made and dropped), with the id the
/// functions see (`get_id`, the address of `send`) and the mailboxes.
pub struct Instances {
    id: u64,
    registry: Arc<Registry>,
    post: Arc<Postbox>,
    /// By name: the implementation the instance came from, and the instance.
    instances: HashMap<String, (Arc<str>, Box<dyn Function>)>,
}

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instances").field("id", &self.id).finish()
    }
}

/// What one invocation receives: one trigger's arguments, or a batch.
#[derive(Clone, Copy)]
enum Input<'a> {
    One(&'a [Vec<u8>]),
    Batch(&'a [Vec<Vec<u8>>]),
}

impl Input<'_> {
    fn len(self) -> usize {
        match self {
            Input::One(_) => 1,
            Input::Batch(b) => b.len(),
        }
    }
}

fn not_registered(name: &str) -> FnError {
    FnError::Failed {
        function: name.to_owned(),
        message: "not registered".to_owned(),
    }
}

impl Instances {
    /// No instances yet, and no mailboxes (`send` goes to inbox keys).
    #[must_use]
    pub fn new(id: u64, registry: Arc<Registry>) -> Instances {
        Instances::with_post(id, registry, Arc::new(Postbox::default()))
    }

    /// No instances yet; `send` and `recv` go through `post`.
    #[must_use]
    pub fn with_post(id: u64, registry: Arc<Registry>, post: Arc<Postbox>) -> Instances {
        Instances {
            id,
            registry,
            post,
            instances: HashMap::new(),
        }
    }

    /// The id the functions see (`get_id`).
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Calls one function.
    pub fn call(
        &mut self,
        name: &str,
        store: &dyn Store,
        args: &[Vec<u8>],
    ) -> Result<Vec<u8>, FnError> {
        self.invoke(name, store, Input::One(args))
            .pop()
            .unwrap_or_else(|| Err(not_registered(name)))
    }

    /// Calls one function with several triggers at once (one result each).
    /// A panic fails every trigger of the batch with an error naming the
    /// function, and the instance is discarded (the next call gets a fresh
    /// one).
    pub fn call_batch(
        &mut self,
        name: &str,
        store: &dyn Store,
        batch: &[Vec<Vec<u8>>],
    ) -> Vec<Result<Vec<u8>, FnError>> {
        match batch {
            [one] => self.invoke(name, store, Input::One(one)),
            _ => self.invoke(name, store, Input::Batch(batch)),
        }
    }

    fn invoke(
        &mut self,
        name: &str,
        store: &dyn Store,
        input: Input<'_>,
    ) -> Vec<Result<Vec<u8>, FnError>> {
        let n = input.len();
        let fail = |e: FnError| (0..n).map(|_| Err(e.clone())).collect::<Vec<_>>();
        // A built-in's implementation never changes: an instance of it is
        // current without taking the registry's lock. Otherwise look the
        // name up again, and make a fresh instance if none exists yet or
        // the implementation changed (re-registered).
        let current = self.registry.builtin_implementation(name);
        let stale = match (self.instances.get(name), &current) {
            (Some((have, _)), Some(now)) => have != now,
            (Some(_), None) | (None, _) => true,
        };
        if stale {
            let Some(entry) = self.registry.entry(name) else {
                self.instances.remove(name);
                return fail(not_registered(name));
            };
            let fresh = match self.instances.get(name) {
                Some((have, _)) => *have != entry.implementation,
                None => true,
            };
            if fresh {
                self.instances
                    .insert(name.to_owned(), (entry.implementation, (entry.factory)()));
            }
        }
        let Some((_, instance)) = self.instances.get_mut(name) else {
            return fail(not_registered(name));
        };
        let mut cx = Context::new(name, self.id, store, &self.post);
        let outcome = catch_unwind(AssertUnwindSafe(|| match input {
            Input::One(args) => vec![instance.call(&mut cx, args)],
            Input::Batch(batch) => instance.call_batch(&mut cx, batch),
        }));
        match outcome {
            Ok(results) if results.len() == n => results,
            Ok(results) => fail(FnError::Failed {
                function: name.to_owned(),
                message: format!("returned {} results for a batch of {n}", results.len()),
            }),
            Err(panic) => {
                self.instances.remove(name);
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic payload".to_owned());
                fail(FnError::Panicked {
                    function: name.to_owned(),
                    message,
                })
            }
        }
    }

    /// Runs a whole DAG on this thread, one function after another
    /// (replicas too, in turn). `args` gives source functions their
    /// arguments by name; references are read from `store`. Returns the
    /// sink's result.
    pub fn run_dag(
        &mut self,
        dag: &Arc<Dag>,
        store: &dyn Store,
        args: HashMap<String, Vec<Arg>>,
    ) -> Result<Vec<u8>, FnError> {
        let (mut run, mut ready) =
            DagRun::start(dag.clone(), args).map_err(|message| FnError::Failed {
                function: dag.name().to_owned(),
                message,
            })?;
        while let Some(t) = ready.pop() {
            let name = dag.node(t.node).function.clone();
            for _ in 0..dag.node(t.node).options.replicas {
                let result =
                    resolve(&name, store, &t.args).and_then(|a| self.call(&name, store, &a));
                match run.complete(t.node, result) {
                    Progress::Ready(more) => ready.extend(more),
                    Progress::Finished(out) => return out,
                    Progress::Ignored => {}
                }
            }
        }
        Err(FnError::Failed {
            function: dag.name().to_owned(),
            message: "the DAG stopped before its sink ran".to_owned(),
        })
    }
}

/// Resolves references among `args` (each must name a key holding an LWW
/// value) for a call to `function`.
pub fn resolve(function: &str, store: &dyn Store, args: &[Arg]) -> Result<Vec<Vec<u8>>, FnError> {
    args.iter()
        .map(|a| match a {
            Arg::Value(v) => Ok(v.clone()),
            Arg::Ref(key) => {
                let fail = |message: String| FnError::Failed {
                    function: function.to_owned(),
                    message,
                };
                let shown = String::from_utf8_lossy(key);
                match store.get(key) {
                    Ok(Some(kvs_core::lattice::Value::Lww(l))) => Ok(l.value().to_vec()),
                    Ok(Some(other)) => Err(fail(format!(
                        "argument references key {shown:?}, which holds a {} value; references read LWW values",
                        other.kind()
                    ))),
                    Ok(None) => Err(fail(format!(
                        "argument references key {shown:?}, which has no value"
                    ))),
                    Err(e) => Err(FnError::Store {
                        function: function.to_owned(),
                        source: e,
                    }),
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::DagSpec;
    use crate::function::{factory_of, Placement};
    use crate::registry::FunctionBody;
    use crate::store::LocalStore;
    use kvs_core::lattice::Value;

    fn validated(spec: &DagSpec, known: impl Fn(&str) -> bool) -> Arc<Dag> {
        Arc::new(Dag::validate(spec, known).unwrap())
    }

    fn args(pairs: &[(&str, &[&str])]) -> HashMap<String, Vec<Arg>> {
        pairs
            .iter()
            .map(|(f, a)| {
                (
                    (*f).to_owned(),
                    a.iter()
                        .map(|s| Arg::Value(s.as_bytes().to_vec()))
                        .collect(),
                )
            })
            .collect()
    }

    fn setup() -> (Instances, Arc<Registry>, LocalStore) {
        let mut reg = Registry::with_builtins().with_fixtures();
        // A function that stores its argument, one that reads it back, and
        // one that panics.
        reg.register(
            "remember",
            factory_of(|cx: &mut Context<'_>, args: &[Vec<u8>]| {
                cx.put_bytes(b"memo", args.concat())?;
                Ok(b"ok".to_vec())
            }),
        )
        .unwrap();
        reg.register(
            "recall",
            factory_of(
                |cx: &mut Context<'_>, _: &[Vec<u8>]| match cx.get(b"memo")? {
                    Some(Value::Lww(l)) => Ok(l.value().to_vec()),
                    other => Err(cx.fail(format!("memo is {other:?}"))),
                },
            ),
        )
        .unwrap();
        reg.register(
            "explode",
            factory_of(
                |_: &mut Context<'_>, _: &[Vec<u8>]| -> Result<Vec<u8>, FnError> { panic!("boom") },
            ),
        )
        .unwrap();
        let reg = Arc::new(reg);
        (Instances::new(7, reg.clone()), reg, LocalStore::default())
    }

    #[test]
    fn square_of_increment() {
        let (mut ex, reg, store) = setup();
        let dag = validated(&DagSpec::chain("compose", &["increment", "square"]), |f| {
            reg.contains(f)
        });
        assert_eq!(
            ex.run_dag(&dag, &store, args(&[("increment", &["41"])]))
                .unwrap(),
            b"1764"
        );
    }

    #[test]
    fn diamond_fans_out_and_in_with_list_order_arguments() {
        let (mut ex, reg, store) = setup();
        // echo → square, echo → increment; both → sum.
        let mut spec = DagSpec::chain("diamond", &["echo", "square", "increment"]);
        spec.functions.push(("sum".into(), Default::default()));
        spec.edges = vec![
            ("echo".into(), "square".into()),
            ("echo".into(), "increment".into()),
            ("square".into(), "sum".into()),
            ("increment".into(), "sum".into()),
        ];
        let dag = validated(&spec, |f| reg.contains(f));
        // sum(square(3), increment(3)) = 9 + 4
        assert_eq!(
            ex.run_dag(&dag, &store, args(&[("echo", &["3"])])).unwrap(),
            b"13"
        );
        // Argument order is the function-list order: check with echo as the sink.
        let mut spec2 = spec.clone();
        spec2.functions[3].0 = "echo2".into();
        reg.define("echo2", &FunctionBody::Builtin("echo".into()))
            .unwrap();
        for e in &mut spec2.edges {
            if e.1 == "sum" {
                e.1 = "echo2".into();
            }
        }
        let dag2 = validated(&spec2, |f| reg.contains(f));
        let mut ex2 = Instances::new(1, reg.clone());
        assert_eq!(
            ex2.run_dag(&dag2, &store, args(&[("echo", &["3"])]))
                .unwrap(),
            b"94",
            "square's 9, then increment's 4"
        );
    }

    #[test]
    fn state_written_by_one_function_is_visible_to_the_next() {
        let (mut ex, reg, store) = setup();
        let dag = validated(&DagSpec::chain("memo", &["remember", "recall"]), |f| {
            reg.contains(f)
        });
        assert_eq!(
            ex.run_dag(&dag, &store, args(&[("remember", &["hello"])]))
                .unwrap(),
            b"hello"
        );
    }

    #[test]
    fn errors_and_panics_name_the_function_and_the_executor_recovers() {
        let (mut ex, _reg, store) = setup();
        let err = ex.call("increment", &store, &[b"x".to_vec()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "function increment: expected a decimal integer, got \"x\""
        );
        let err = ex.call("explode", &store, &[]).unwrap_err();
        assert_eq!(err.to_string(), "function explode: panicked: boom");
        assert_eq!(
            ex.call("increment", &store, &[b"1".to_vec()]).unwrap(),
            b"2"
        );
        assert!(ex
            .call("nope", &store, &[])
            .unwrap_err()
            .to_string()
            .contains("not registered"));
    }

    #[test]
    fn a_function_reads_several_keys_at_once() {
        let (_, _, store) = setup();
        let mut reg = Registry::with_builtins();
        reg.register(
            "pair",
            factory_of(|cx: &mut Context<'_>, _: &[Vec<u8>]| {
                let found = cx.get_many(&[b"a", b"missing", b"b"])?;
                Ok(found
                    .iter()
                    .map(|v| match v {
                        Some(Value::Max(n)) => n.to_string(),
                        _ => "-".to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
                    .into_bytes())
            }),
        )
        .unwrap();
        store.put(b"a", Value::Max(1)).unwrap();
        store.put(b"b", Value::Max(2)).unwrap();
        let mut ex = Instances::new(1, Arc::new(reg));
        assert_eq!(ex.call("pair", &store, &[]).unwrap(), b"1,-,2");
    }

    #[test]
    fn incr_key_keeps_state_in_the_store() {
        let (mut ex, _reg, store) = setup();
        for want in ["1", "2"] {
            assert_eq!(
                ex.call("incr_key", &store, &[b"n".to_vec()]).unwrap(),
                want.as_bytes()
            );
        }
        store.put(b"s", Value::Max(3)).unwrap();
        let err = ex.call("incr_key", &store, &[b"s".to_vec()]).unwrap_err();
        assert!(err.to_string().contains("holds a max value"), "{err}");
    }

    #[test]
    fn inline_functions_run_against_a_store_that_refuses() {
        let (mut ex, _reg, _store) = setup();
        let err = ex
            .call("incr_key", &crate::store::NoStore, &[b"k".to_vec()])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("inline functions have no store access"),
            "{err}"
        );
        let reg = Registry::with_builtins().with_fixtures();
        assert_eq!(reg.placement("increment"), Some(Placement::Inline));
        assert_eq!(reg.placement("incr_key"), Some(Placement::Executor));
        assert_eq!(reg.placement("sleep_ms"), Some(Placement::Executor));
        assert_eq!(reg.placement("nope"), None);
    }

    #[test]
    fn class_functions_keep_state_per_executor() {
        let (mut ex, reg, store) = setup();
        let mut other = Instances::new(8, reg);
        for want in ["1", "2", "3"] {
            assert_eq!(ex.call("counter", &store, &[]).unwrap(), want.as_bytes());
        }
        assert_eq!(
            other.call("counter", &store, &[]).unwrap(),
            b"1",
            "each executor has its own instance"
        );
    }

    #[test]
    fn a_redefined_name_gets_a_fresh_instance_of_the_new_builtin() {
        let reg = Arc::new(Registry::with_builtins());
        reg.define("f", &FunctionBody::Builtin("counter".into()))
            .unwrap();
        let mut ex = Instances::new(1, reg.clone());
        let store = LocalStore::default();
        assert_eq!(ex.call("f", &store, &[]).unwrap(), b"1");
        assert_eq!(ex.call("f", &store, &[]).unwrap(), b"2");
        reg.define("f", &FunctionBody::Builtin("square".into()))
            .unwrap();
        assert_eq!(ex.call("f", &store, &[b"3".to_vec()]).unwrap(), b"9");
    }

    #[test]
    fn competitive_replicas_in_thread_first_valid_result_wins() {
        let (mut ex, reg, store) = setup();
        let mut spec = DagSpec::chain("race", &["valid_on"]);
        spec.functions[0].1.replicas = 3;
        let dag = validated(&spec, |f| reg.contains(f));
        // valid only on executor 7 (this one): every replica is valid.
        assert_eq!(
            ex.run_dag(&dag, &store, args(&[("valid_on", &["7"])]))
                .unwrap(),
            b"7"
        );
        let err = ex
            .run_dag(&dag, &store, args(&[("valid_on", &["8"])]))
            .unwrap_err();
        assert!(err.to_string().contains("all 3 replicas failed"), "{err}");
    }

    #[test]
    fn reference_arguments_are_read_before_the_call() {
        let (mut ex, reg, store) = setup();
        let dag = validated(&DagSpec::chain("r", &["increment", "square"]), |f| {
            reg.contains(f)
        });
        store
            .put(
                b"x",
                Value::Lww(kvs_core::lattice::Lww::new(
                    Default::default(),
                    b"4".to_vec(),
                )),
            )
            .unwrap();
        let refs = HashMap::from([("increment".to_owned(), vec![Arg::Ref(b"x".to_vec())])]);
        assert_eq!(ex.run_dag(&dag, &store, refs).unwrap(), b"25");
        let missing = HashMap::from([("increment".to_owned(), vec![Arg::Ref(b"y".to_vec())])]);
        let err = ex.run_dag(&dag, &store, missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            "function increment: argument references key \"y\", which has no value"
        );
        store.put(b"s", Value::Max(1)).unwrap();
        let err = resolve("f", &store, &[Arg::Ref(b"s".to_vec())]).unwrap_err();
        assert!(err.to_string().contains("holds a max value"), "{err}");
    }

    #[test]
    fn batches_reach_functions_that_take_them_and_panics_fail_the_whole_batch() {
        let (mut ex, _reg, store) = setup();
        let batch = vec![vec![], vec![], vec![]];
        let out = ex.call_batch("batch_size", &store, &batch);
        assert_eq!(out, vec![Ok(b"3".to_vec()); 3]);
        // Functions without a batch form see each trigger in turn.
        let out = ex.call_batch(
            "increment",
            &store,
            &[vec![b"1".to_vec()], vec![b"5".to_vec()]],
        );
        assert_eq!(out, vec![Ok(b"2".to_vec()), Ok(b"6".to_vec())]);
        let out = ex.call_batch("explode", &store, &batch);
        assert!(out
            .iter()
            .all(|r| matches!(r, Err(FnError::Panicked { .. }))));
    }

    #[test]
    fn send_and_recv_between_executors() {
        let reg = Arc::new(Registry::with_builtins().with_fixtures());
        let post = Arc::new(Postbox::new([1, 2], 8, 0));
        let store = LocalStore::default();
        let mut a = Instances::with_post(1, reg.clone(), post.clone());
        let mut b = Instances::with_post(2, reg, post);
        assert_eq!(
            a.call("send_to", &store, &[b"2".to_vec(), b"hi".to_vec()])
                .unwrap(),
            b"direct"
        );
        assert_eq!(
            a.call("send_to", &store, &[b"5".to_vec(), b"later".to_vec()])
                .unwrap(),
            b"inbox"
        );
        assert_eq!(
            b.call("recv_wait", &store, &[b"100".to_vec()]).unwrap(),
            b"hi"
        );
        let err = b.call("recv_wait", &store, &[b"1".to_vec()]).unwrap_err();
        assert!(err.to_string().contains("no message within 1 ms"), "{err}");
    }
}
