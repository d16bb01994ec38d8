//! Picking an executor for every function of a DAG call, once, at call
//! time (then the call steps off the data path: triggers flow executor to
//! executor along this plan).
//!
//! Per function, in topological order:
//! 1. its **home**: the executor beside the shard owning most of the keys its
//!    arguments reference (given by the caller, who knows the ring);
//! 2. else, a function whose only upstream has no other downstream runs
//!    where that upstream ran (a chain pays no hop);
//! 3. else (extra sources, fan-out branches, fan-in), the next executor in
//!    rotation starting at the caller's local one, so parallel branches run
//!    in parallel;
//! 4. if the chosen executor's load (queued + running) is over `threshold`,
//!    the least-loaded executor instead.
//!
//! A function with `replicas = r` gets `r` distinct executors where there
//! are that many (preferred first, then by load). Every choice adds one to
//! the executor's load for the rest of the plan, so one plan spreads too.

use crate::dag::Dag;

/// The executors chosen for each node (one per replica), by node index.
pub type Plan = Vec<Vec<usize>>;

/// Plans `dag` over `load.len()` executors (`load[e]` = jobs queued or
/// running on executor `e`). `home[i]` is node `i`'s data-locality choice,
/// `local` the executor beside the shard that took the call.
#[must_use]
pub fn plan(
    dag: &Dag,
    home: &[Option<usize>],
    load: &[usize],
    local: usize,
    threshold: usize,
) -> Plan {
    let n = load.len().max(1);
    let mut load: Vec<usize> = (0..n).map(|e| load.get(e).copied().unwrap_or(0)).collect();
    let mut plan: Plan = vec![Vec::new(); dag.nodes().len()];
    let mut rotation = 0;
    for &i in dag.topological_order() {
        let node = dag.node(i);
        let chained = match node.upstream.as_slice() {
            [u] if dag.node(*u).downstream.len() == 1 => plan[*u].first().copied(),
            _ => None,
        };
        let mut first = match home.get(i).copied().flatten().or(chained) {
            Some(e) => e % n,
            None => {
                rotation += 1;
                (local + rotation - 1) % n
            }
        };
        if load[first] > threshold {
            first = least_loaded(&load, first, &[]);
        }
        let mut chosen = vec![first];
        load[first] += 1;
        while chosen.len() < node.options.replicas as usize {
            let e = least_loaded(&load, first, if chosen.len() < n { &chosen } else { &[] });
            chosen.push(e);
            load[e] += 1;
        }
        plan[i] = chosen;
    }
    plan
}

/// The least-loaded executor not in `skip`; ties go to the first one
/// after `from` (so choices spread in rotation).
fn least_loaded(load: &[usize], from: usize, skip: &[usize]) -> usize {
    let n = load.len();
    (0..n)
        .map(|k| (from + k) % n)
        .filter(|e| !skip.contains(e))
        .min_by_key(|&e| load[e])
        .unwrap_or(from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::{DagSpec, FunctionOptions};

    fn dag(functions: &[&str], edges: &[(&str, &str)], replicas: &[(&str, u32)]) -> Dag {
        let mut spec = DagSpec::chain("d", functions);
        spec.edges = edges
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        for (f, r) in replicas {
            let slot = spec.functions.iter_mut().find(|(n, _)| n == f).unwrap();
            slot.1 = FunctionOptions {
                replicas: *r,
                batch_max: 1,
            };
        }
        Dag::validate(&spec, |_| true).unwrap()
    }

    #[test]
    fn a_chain_stays_on_the_local_executor() {
        let d = dag(&["a", "b", "c"], &[("a", "b"), ("b", "c")], &[]);
        assert_eq!(
            plan(&d, &[], &[0, 0, 0], 1, 8),
            vec![vec![1], vec![1], vec![1]]
        );
    }

    #[test]
    fn data_locality_picks_the_home_executor_and_the_chain_follows() {
        let d = dag(&["a", "b"], &[("a", "b")], &[]);
        assert_eq!(
            plan(&d, &[Some(2), None], &[0, 0, 0], 0, 8),
            vec![vec![2], vec![2]]
        );
    }

    #[test]
    fn parallel_branches_spread_and_busy_executors_are_skipped() {
        let d = dag(
            &["a", "b", "c", "d"],
            &[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
            &[],
        );
        let p = plan(&d, &[], &[0, 0], 0, 8);
        assert_eq!(p[0], [0]);
        assert_ne!(p[1], p[2], "the two branches run on different executors");
        // Executor 0 over the threshold: everything avoids it.
        let p = plan(&dag(&["a"], &[], &[]), &[Some(0)], &[9, 1], 0, 8);
        assert_eq!(p, vec![vec![1]]);
    }

    #[test]
    fn replicas_go_to_distinct_executors_while_there_are_enough() {
        let d = dag(&["a"], &[], &[("a", 3)]);
        let mut p = plan(&d, &[], &[0, 0, 0], 1, 8).remove(0);
        assert_eq!(p[0], 1, "the preferred executor first");
        p.sort_unstable();
        assert_eq!(p, [0, 1, 2]);
        let p = plan(&d, &[], &[0, 0], 0, 8).remove(0);
        assert_eq!(
            p.len(),
            3,
            "more replicas than executors still run them all"
        );
    }
}
