//! The in-thread cost of a function call and of the composition DAG
//! `square(increment(x))`: the floor under any placement of functions.

use std::collections::HashMap;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use executor::dag::{Dag, DagSpec};
use executor::instances::{resolve, Instances};
use executor::registry::Registry;
use executor::run::{Arg, DagRun, Progress};
use executor::schedule;
use executor::store::LocalStore;

fn functions(c: &mut Criterion) {
    let reg = Arc::new(Registry::with_builtins());
    let mut ex = Instances::new(1, reg.clone());
    let store = LocalStore::default();
    let arg = vec![b"41".to_vec()];
    c.bench_function("functions/call_increment", |b| {
        b.iter(|| ex.call("increment", &store, &arg).expect("call"))
    });
    let dag = Arc::new(
        Dag::validate(&DagSpec::chain("compose", &["increment", "square"]), |f| {
            reg.contains(f)
        })
        .expect("dag"),
    );
    let args: HashMap<String, Vec<Arg>> =
        [("increment".to_owned(), vec![Arg::Value(b"41".to_vec())])].into();
    c.bench_function("functions/dag_square_of_increment", |b| {
        b.iter(|| ex.run_dag(&dag, &store, args.clone()).expect("dag run"))
    });
    // What the node adds per DAG call before any I/O: the plan, the run's
    // state machine, and the argument hand-over between the functions.
    c.bench_function("functions/plan_and_run_square_of_increment", |b| {
        b.iter(|| {
            let plan = schedule::plan(&dag, &[None, None], &[0, 0], 0, 16);
            let (mut run, mut ready) = DagRun::start(dag.clone(), args.clone()).expect("start");
            let mut out = None;
            while let Some(t) = ready.pop() {
                let name = &dag.node(t.node).name;
                let input = resolve(name, &store, &t.args).expect("args");
                match run.complete(t.node, ex.call(name, &store, &input)) {
                    Progress::Ready(more) => ready.extend(more),
                    Progress::Finished(r) => out = Some(r.expect("result")),
                    Progress::Ignored => {}
                }
            }
            (plan, out)
        })
    });
}

criterion_group!(benches, functions);
criterion_main!(benches);
