//! The function registry and one executor's instances, with an in-thread
//! DAG runner: every function of the call runs on this executor, one after
//! the other in topological order (the placement that pays no cross-thread
//! hop; spreading a DAG over executors comes with the scheduler).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use thiserror::Error;

use crate::dag::Dag;
use crate::function::{builtins, Context, Factory, FnError, Function, Placement};
use crate::limits::NAME_BYTES_MAX;
use crate::store::Store;

/// A registration that was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("function names are 1 to {NAME_BYTES_MAX} bytes of [A-Za-z0-9_.-], not {0:?}")]
    BadName(String),
    #[error("a function named {0:?} is already registered")]
    Exists(String),
}

/// Function names → factories and placements.
#[derive(Clone, Default)]
pub struct Registry {
    factories: HashMap<String, (Factory, Placement)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("functions", &self.names())
            .finish()
    }
}

impl Registry {
    /// A registry holding the built-in functions.
    #[must_use]
    pub fn with_builtins() -> Registry {
        let mut r = Registry::default();
        for (name, f, placement) in builtins() {
            r.factories.insert(name.to_owned(), (f, placement));
        }
        r
    }

    /// Registers a function that runs on executor threads.
    pub fn register(&mut self, name: &str, factory: Factory) -> Result<(), RegistryError> {
        self.register_with(name, factory, Placement::Executor)
    }

    /// Registers a function with an explicit placement.
    pub fn register_with(
        &mut self,
        name: &str,
        factory: Factory,
        placement: Placement,
    ) -> Result<(), RegistryError> {
        let valid = !name.is_empty()
            && name.len() <= NAME_BYTES_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            return Err(RegistryError::BadName(name.to_owned()));
        }
        if self.factories.contains_key(name) {
            return Err(RegistryError::Exists(name.to_owned()));
        }
        self.factories.insert(name.to_owned(), (factory, placement));
        Ok(())
    }

    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    /// Where `name` runs, if registered.
    #[must_use]
    pub fn placement(&self, name: &str) -> Option<Placement> {
        self.factories.get(name).map(|(_, p)| *p)
    }

    /// Registered names, sorted.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.factories.keys().cloned().collect();
        v.sort();
        v
    }
}

/// One executor: its id and its live function instances.
pub struct Executor {
    id: u64,
    registry: Arc<Registry>,
    instances: HashMap<String, Box<dyn Function>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("id", &self.id).finish()
    }
}

impl Executor {
    #[must_use]
    pub fn new(id: u64, registry: Arc<Registry>) -> Executor {
        Executor {
            id,
            registry,
            instances: HashMap::new(),
        }
    }

    /// Calls one function. A panic becomes an error naming the function, and
    /// the instance is discarded (the next call gets a fresh one).
    pub fn call(
        &mut self,
        name: &str,
        store: &dyn Store,
        args: &[Vec<u8>],
    ) -> Result<Vec<u8>, FnError> {
        if !self.instances.contains_key(name) {
            let factory = self
                .registry
                .factories
                .get(name)
                .ok_or_else(|| FnError::Failed {
                    function: name.to_owned(),
                    message: "not registered".to_owned(),
                })?;
            self.instances.insert(name.to_owned(), (factory.0)());
        }
        let instance = self
            .instances
            .get_mut(name)
            .ok_or_else(|| FnError::Failed {
                function: name.to_owned(),
                message: "instance vanished".to_owned(),
            })?;
        let mut cx = Context::new(name, self.id, store);
        match catch_unwind(AssertUnwindSafe(|| instance.call(&mut cx, args))) {
            Ok(result) => result,
            Err(panic) => {
                self.instances.remove(name);
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic payload".to_owned());
                Err(FnError::Failed {
                    function: name.to_owned(),
                    message: format!("panicked: {message}"),
                })
            }
        }
    }

    /// Runs a whole DAG on this executor. `args` gives each source function
    /// its arguments (by name); every other function gets its upstreams'
    /// results, in DAG function-list order. Returns the sink's result.
    pub fn run_dag(
        &mut self,
        dag: &Dag,
        store: &dyn Store,
        args: &HashMap<String, Vec<Vec<u8>>>,
    ) -> Result<Vec<u8>, FnError> {
        let mut results: Vec<Option<Vec<u8>>> = vec![None; dag.nodes().len()];
        for &i in dag.topological_order() {
            let node = dag.node(i);
            let mut call_args = args.get(&node.name).cloned().unwrap_or_default();
            for &u in &node.upstream {
                // Topological order: every upstream has run.
                call_args.push(results[u].take().unwrap_or_default());
                if dag.node(u).downstream.len() > 1 {
                    // Fan-out: the other downstreams need it too.
                    results[u] = call_args.last().cloned();
                }
            }
            results[i] = Some(self.call(&node.name, store, &call_args)?);
        }
        Ok(results[dag.sink()].take().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::DagSpec;
    use crate::function::factory_of;
    use crate::store::LocalStore;
    use kvs_core::lattice::Value;

    fn args(pairs: &[(&str, &[&str])]) -> HashMap<String, Vec<Vec<u8>>> {
        pairs
            .iter()
            .map(|(f, a)| {
                (
                    (*f).to_owned(),
                    a.iter().map(|s| s.as_bytes().to_vec()).collect(),
                )
            })
            .collect()
    }

    fn setup() -> (Executor, Registry, LocalStore) {
        let mut reg = Registry::with_builtins();
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
        (
            Executor::new(7, Arc::new(reg.clone())),
            reg,
            LocalStore::default(),
        )
    }

    #[test]
    fn square_of_increment() {
        let (mut ex, reg, store) = setup();
        let dag = Dag::validate(&DagSpec::chain("compose", &["increment", "square"]), |f| {
            reg.contains(f)
        })
        .unwrap();
        assert_eq!(
            ex.run_dag(&dag, &store, &args(&[("increment", &["41"])]))
                .unwrap(),
            b"1764"
        );
    }

    #[test]
    fn diamond_fans_out_and_in_with_list_order_arguments() {
        let (mut ex, reg, store) = setup();
        // echo → increment, echo → square; both → echo2 (concatenates in list order).
        let mut spec = DagSpec::chain("diamond", &["echo", "square", "increment"]);
        spec.functions.push(("sum".into(), Default::default()));
        spec.edges = vec![
            ("echo".into(), "square".into()),
            ("echo".into(), "increment".into()),
            ("square".into(), "sum".into()),
            ("increment".into(), "sum".into()),
        ];
        let dag = Dag::validate(&spec, |f| reg.contains(f)).unwrap();
        // sum(square(3), increment(3)) = 9 + 4
        assert_eq!(
            ex.run_dag(&dag, &store, &args(&[("echo", &["3"])]))
                .unwrap(),
            b"13"
        );
        // Argument order is the function-list order: check with echo as the sink.
        let mut spec2 = spec.clone();
        spec2.functions[3].0 = "echo2".into();
        let mut reg2 = reg.clone();
        reg2.register(
            "echo2",
            builtins()
                .into_iter()
                .find(|(n, _, _)| *n == "echo")
                .unwrap()
                .1,
        )
        .unwrap();
        for e in &mut spec2.edges {
            if e.1 == "sum" {
                e.1 = "echo2".into();
            }
        }
        let dag2 = Dag::validate(&spec2, |f| reg2.contains(f)).unwrap();
        let mut ex2 = Executor::new(1, Arc::new(reg2));
        assert_eq!(
            ex2.run_dag(&dag2, &store, &args(&[("echo", &["3"])]))
                .unwrap(),
            b"94",
            "square's 9, then increment's 4"
        );
    }

    #[test]
    fn state_written_by_one_function_is_visible_to_the_next() {
        let (mut ex, reg, store) = setup();
        let dag = Dag::validate(&DagSpec::chain("memo", &["remember", "recall"]), |f| {
            reg.contains(f)
        })
        .unwrap();
        assert_eq!(
            ex.run_dag(&dag, &store, &args(&[("remember", &["hello"])]))
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
        let reg = Registry::with_builtins();
        assert_eq!(reg.placement("increment"), Some(Placement::Inline));
        assert_eq!(reg.placement("incr_key"), Some(Placement::Executor));
        assert_eq!(reg.placement("sleep_ms"), Some(Placement::Executor));
        assert_eq!(reg.placement("nope"), None);
    }

    #[test]
    fn class_functions_keep_state_per_executor() {
        let (mut ex, reg, store) = setup();
        let mut other = Executor::new(8, Arc::new(reg));
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
    fn registration_checks_names() {
        let mut reg = Registry::with_builtins();
        let f = builtins().remove(0).1;
        assert_eq!(
            reg.register("increment", f.clone()),
            Err(RegistryError::Exists("increment".into()))
        );
        assert!(matches!(
            reg.register("bad name", f.clone()),
            Err(RegistryError::BadName(_))
        ));
        assert!(matches!(
            reg.register("", f),
            Err(RegistryError::BadName(_))
        ));
        assert!(reg.names().contains(&"sleep_ms".to_owned()));
    }
}
