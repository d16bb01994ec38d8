//! DAGs of functions: what `register_dag` accepts and how a call flows.
//!
//! A DAG names its functions and the edges between them. It is validated
//! once, at registration ([`Dag::validate`]):
//!
//! * it has 1 to `DAG_FUNCTIONS_MAX` functions, each named once, each known
//!   to the registry; to use one function several times (parallel branches
//!   of the same model, say), name each use `function#tag` — the part
//!   before `#` is the function, the whole name is the DAG's node (what
//!   edges and per-function arguments refer to);
//! * every edge joins two of its functions, at most once, never a function
//!   to itself;
//! * it is acyclic, and has exactly one sink (a function with no
//!   downstream), whose result is the call's result.
//!
//! ## Fan-in and argument order
//! A function with several upstreams runs once all of them have produced a
//! result. Its arguments are the call's arguments for it (if any), followed
//! by its upstreams' results **in the order the upstream functions appear in
//! the DAG's function list** — not in completion order, so results are
//! deterministic.

use std::collections::HashMap;

use thiserror::Error;

use crate::limits::{BATCH_TRIGGERS_MAX, DAG_FUNCTIONS_MAX, NAME_BYTES_MAX, REPLICAS_MAX};

/// How one function of a DAG runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionOptions {
    /// Run this many copies on different executors; the first result that
    /// is not "invalid" wins (competitive execution). 1 = plain.
    pub replicas: u32,
    /// Up to this many triggers may be handed to one invocation. 1 = none.
    pub batch_max: u32,
}

impl Default for FunctionOptions {
    fn default() -> Self {
        FunctionOptions {
            replicas: 1,
            batch_max: 1,
        }
    }
}

/// A DAG as a user registers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DagSpec {
    pub name: String,
    /// Function names, each with its options. The order defines fan-in
    /// argument order.
    pub functions: Vec<(String, FunctionOptions)>,
    /// (upstream, downstream) pairs of function names.
    pub edges: Vec<(String, String)>,
}

impl DagSpec {
    /// `f1 → f2 → … → fn`, default options.
    pub fn chain(name: &str, functions: &[&str]) -> DagSpec {
        DagSpec {
            name: name.to_owned(),
            functions: functions
                .iter()
                .map(|f| ((*f).to_owned(), FunctionOptions::default()))
                .collect(),
            edges: functions
                .windows(2)
                .map(|w| (w[0].to_owned(), w[1].to_owned()))
                .collect(),
        }
    }
}

/// Why a DAG was refused. Every variant names what to fix.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DagError {
    #[error("a DAG name must be 1 to {NAME_BYTES_MAX} bytes, not {0}")]
    BadName(usize),
    #[error("a DAG has 1 to {DAG_FUNCTIONS_MAX} functions, not {0}")]
    BadSize(usize),
    #[error("function {0:?} is listed twice; name each function once")]
    DuplicateFunction(String),
    #[error("function {0:?} is not registered")]
    UnknownFunction(String),
    #[error("edge {0:?} → {1:?} names a function that is not in the DAG")]
    EdgeOutsideDag(String, String),
    #[error("edge {0:?} → {0:?} joins a function to itself")]
    SelfEdge(String),
    #[error("edge {0:?} → {1:?} is listed twice")]
    DuplicateEdge(String, String),
    #[error("the DAG has a cycle through {0:?}")]
    Cycle(Vec<String>),
    #[error("a DAG needs exactly one sink (a function with no downstream); found {0:?}")]
    SinkCount(Vec<String>),
    #[error("function {name:?}: {what} must be 1 to {max}, not {value}")]
    BadOption {
        name: String,
        what: &'static str,
        value: u32,
        max: u32,
    },
}

/// The function a DAG node name runs: the part before `#`, if any.
#[must_use]
pub fn function_of(node_name: &str) -> &str {
    node_name.split_once('#').map_or(node_name, |(f, _)| f)
}

/// One function of a validated DAG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The node's name in the DAG (`function` or `function#tag`).
    pub name: String,
    /// The registered function it runs.
    pub function: String,
    pub options: FunctionOptions,
    /// Upstream node indices, in DAG function-list order (= argument order).
    pub upstream: Vec<usize>,
    pub downstream: Vec<usize>,
}

/// A validated DAG; node indices follow the spec's function list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dag {
    name: String,
    nodes: Vec<Node>,
    sources: Vec<usize>,
    sink: usize,
    topo: Vec<usize>,
}

impl Dag {
    /// Validates `spec`; `known(name)` says whether a function is registered.
    pub fn validate(spec: &DagSpec, known: impl Fn(&str) -> bool) -> Result<Dag, DagError> {
        if spec.name.is_empty() || spec.name.len() > NAME_BYTES_MAX {
            return Err(DagError::BadName(spec.name.len()));
        }
        let n = spec.functions.len();
        if n == 0 || n > DAG_FUNCTIONS_MAX {
            return Err(DagError::BadSize(n));
        }
        let mut index = HashMap::with_capacity(n);
        let mut nodes = Vec::with_capacity(n);
        for (i, (name, options)) in spec.functions.iter().enumerate() {
            if index.insert(name.as_str(), i).is_some() {
                return Err(DagError::DuplicateFunction(name.clone()));
            }
            if !known(function_of(name)) {
                return Err(DagError::UnknownFunction(name.clone()));
            }
            for (what, value, max) in [
                ("replicas", options.replicas, REPLICAS_MAX),
                ("batch_max", options.batch_max, BATCH_TRIGGERS_MAX),
            ] {
                if value == 0 || value > max {
                    return Err(DagError::BadOption {
                        name: name.clone(),
                        what,
                        value,
                        max,
                    });
                }
            }
            nodes.push(Node {
                name: name.clone(),
                function: function_of(name).to_owned(),
                options: *options,
                upstream: Vec::new(),
                downstream: Vec::new(),
            });
        }
        for (up, down) in &spec.edges {
            let (Some(&u), Some(&d)) = (index.get(up.as_str()), index.get(down.as_str())) else {
                return Err(DagError::EdgeOutsideDag(up.clone(), down.clone()));
            };
            if u == d {
                return Err(DagError::SelfEdge(up.clone()));
            }
            if nodes[u].downstream.contains(&d) {
                return Err(DagError::DuplicateEdge(up.clone(), down.clone()));
            }
            nodes[u].downstream.push(d);
            nodes[d].upstream.push(u);
        }
        for node in &mut nodes {
            node.upstream.sort_unstable();
            node.downstream.sort_unstable();
        }
        let topo = topological_order(&nodes)?;
        let sinks: Vec<usize> = (0..n).filter(|&i| nodes[i].downstream.is_empty()).collect();
        if sinks.len() != 1 {
            return Err(DagError::SinkCount(
                sinks.iter().map(|&i| nodes[i].name.clone()).collect(),
            ));
        }
        let sources = (0..n).filter(|&i| nodes[i].upstream.is_empty()).collect();
        Ok(Dag {
            name: spec.name.clone(),
            nodes,
            sources,
            sink: sinks[0],
            topo,
        })
    }

    /// A one-function DAG (how a single function call runs).
    pub fn single(function: &str, known: impl Fn(&str) -> bool) -> Result<Dag, DagError> {
        Dag::validate(&DagSpec::chain(function, &[function]), known)
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
    #[must_use]
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }
    #[must_use]
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    /// Functions with no upstream: they receive the call's arguments.
    #[must_use]
    pub fn sources(&self) -> &[usize] {
        &self.sources
    }
    #[must_use]
    pub fn sink(&self) -> usize {
        self.sink
    }
    /// Every node after all its upstreams.
    #[must_use]
    pub fn topological_order(&self) -> &[usize] {
        &self.topo
    }
}

/// Kahn's algorithm, lowest index first (deterministic); on a cycle, names
/// one cycle's functions.
fn topological_order(nodes: &[Node]) -> Result<Vec<usize>, DagError> {
    let mut indegree: Vec<usize> = nodes.iter().map(|n| n.upstream.len()).collect();
    let mut ready: std::collections::BTreeSet<usize> =
        (0..nodes.len()).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &nodes[i].downstream {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.insert(d);
            }
        }
    }
    if order.len() == nodes.len() {
        return Ok(order);
    }
    // Walk upstream from any unfinished node until a node repeats.
    let mut at = (0..nodes.len()).find(|&i| indegree[i] > 0).unwrap_or(0);
    let mut seen = vec![usize::MAX; nodes.len()];
    let mut path = Vec::new();
    while seen[at] == usize::MAX {
        seen[at] = path.len();
        path.push(at);
        at = nodes[at]
            .upstream
            .iter()
            .copied()
            .find(|&u| indegree[u] > 0)
            .unwrap_or(at);
    }
    let mut cycle: Vec<usize> = path[seen[at]..].to_vec();
    cycle.reverse(); // upstream walk → flow order
                     // Start at the function listed first, so the message is stable.
    let first = cycle
        .iter()
        .enumerate()
        .min_by_key(|(_, &i)| i)
        .map_or(0, |(k, _)| k);
    cycle.rotate_left(first);
    let cycle = cycle.into_iter().map(|i| nodes[i].name.clone()).collect();
    Err(DagError::Cycle(cycle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_known(_: &str) -> bool {
        true
    }

    fn spec(functions: &[&str], edges: &[(&str, &str)]) -> DagSpec {
        DagSpec {
            name: "d".into(),
            functions: functions
                .iter()
                .map(|f| ((*f).to_owned(), FunctionOptions::default()))
                .collect(),
            edges: edges
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_diamond_validates_with_wait_all_fan_in_in_list_order() {
        // a → b, a → c, b → d, c → d; listed so that c precedes b.
        let s = spec(
            &["a", "c", "b", "d"],
            &[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
        );
        let dag = Dag::validate(&s, any_known).unwrap();
        assert_eq!(dag.sources(), &[0]);
        assert_eq!(dag.node(dag.sink()).name, "d");
        let d = dag.node(3);
        let ups: Vec<&str> = d
            .upstream
            .iter()
            .map(|&i| dag.node(i).name.as_str())
            .collect();
        assert_eq!(ups, ["c", "b"], "fan-in order follows the function list");
        assert_eq!(dag.topological_order(), &[0, 1, 2, 3]);
    }

    #[test]
    fn one_function_may_appear_several_times_under_tags() {
        let s = spec(
            &["pre", "model#1", "model#2", "avg"],
            &[
                ("pre", "model#1"),
                ("pre", "model#2"),
                ("model#1", "avg"),
                ("model#2", "avg"),
            ],
        );
        let known = |f: &str| ["pre", "model", "avg"].contains(&f);
        let dag = Dag::validate(&s, known).unwrap();
        assert_eq!(dag.node(1).name, "model#1");
        assert_eq!(dag.node(2).function, "model");
        assert_eq!(function_of("plain"), "plain");
        let s = spec(&["nope#1"], &[]);
        assert_eq!(
            Dag::validate(&s, known),
            Err(DagError::UnknownFunction("nope#1".into()))
        );
    }

    #[test]
    fn every_refusal_names_what_to_fix() {
        let cases: Vec<(DagSpec, DagError)> = vec![
            (spec(&[], &[]), DagError::BadSize(0)),
            (
                spec(&["a", "a"], &[]),
                DagError::DuplicateFunction("a".into()),
            ),
            (
                spec(&["a", "b"], &[("a", "x")]),
                DagError::EdgeOutsideDag("a".into(), "x".into()),
            ),
            (spec(&["a"], &[("a", "a")]), DagError::SelfEdge("a".into())),
            (
                spec(&["a", "b"], &[("a", "b"), ("a", "b")]),
                DagError::DuplicateEdge("a".into(), "b".into()),
            ),
            (
                spec(&["a", "b", "c"], &[("a", "b")]),
                DagError::SinkCount(vec!["b".into(), "c".into()]),
            ),
            (
                spec(
                    &["s", "a", "b", "c"],
                    &[("s", "a"), ("a", "b"), ("b", "c"), ("c", "a")],
                ),
                DagError::Cycle(vec!["a".into(), "b".into(), "c".into()]),
            ),
        ];
        for (s, want) in cases {
            let got = Dag::validate(&s, any_known).unwrap_err();
            assert_eq!(got, want);
            assert!(!got.to_string().is_empty());
        }
        let err = Dag::validate(&spec(&["a", "nope"], &[("a", "nope")]), |f| f == "a").unwrap_err();
        assert_eq!(err, DagError::UnknownFunction("nope".into()));
        let mut s = spec(&["a"], &[]);
        s.functions[0].1.replicas = 0;
        assert!(matches!(
            Dag::validate(&s, any_known),
            Err(DagError::BadOption {
                what: "replicas",
                ..
            })
        ));
        s.name = String::new();
        assert_eq!(Dag::validate(&s, any_known), Err(DagError::BadName(0)));
    }

    #[test]
    fn a_single_function_is_a_one_node_dag() {
        let dag = Dag::single("echo", any_known).unwrap();
        assert_eq!(
            (dag.sources(), dag.sink(), dag.nodes().len()),
            (&[0][..], 0, 1)
        );
    }

    proptest! {
        /// Random edge sets: validation either accepts (and then the order
        /// is topological, with one sink) or names a precise problem.
        #[test]
        fn validation_is_total_and_orders_topologically(
            n in 1usize..8,
            edges in prop::collection::vec((0usize..8, 0usize..8), 0..16),
        ) {
            let names: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
            let s = DagSpec {
                name: "p".into(),
                functions: names.iter().map(|f| (f.clone(), FunctionOptions::default())).collect(),
                edges: edges.iter().map(|&(a, b)| (format!("f{a}"), format!("f{b}"))).collect(),
            };
            if let Ok(dag) = Dag::validate(&s, any_known) {
                let pos: Vec<usize> = {
                    let mut p = vec![0; n];
                    for (k, &i) in dag.topological_order().iter().enumerate() { p[i] = k; }
                    p
                };
                for (i, node) in dag.nodes().iter().enumerate() {
                    for &d in &node.downstream { prop_assert!(pos[i] < pos[d]); }
                }
                prop_assert_eq!(dag.nodes().iter().filter(|x| x.downstream.is_empty()).count(), 1);
            }
        }
    }
}

/// The stored form of a [`DagSpec`] (the registry keeps DAGs in the KVS):
/// `name functions:(name replicas:u32 batch_max:u32)* edges:(from to)*`,
/// with kvs-core's length-prefixed encoding.
pub mod stored {
    use kvs_core::codec::{DecodeError, Decoder, Encoder};

    use super::{DagSpec, FunctionOptions};
    use crate::limits::{DAG_FUNCTIONS_MAX, NAME_BYTES_MAX};

    /// Key prefix of stored DAGs.
    pub const KEY_PREFIX: &str = "squall:dag:";

    /// The KVS key of DAG `name`.
    #[must_use]
    pub fn key(name: &str) -> Vec<u8> {
        format!("{KEY_PREFIX}{name}").into_bytes()
    }

    #[must_use]
    pub fn encode(spec: &DagSpec) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = Encoder::new(&mut out);
        e.bytes(spec.name.as_bytes());
        e.u32(spec.functions.len() as u32);
        for (name, o) in &spec.functions {
            e.bytes(name.as_bytes());
            e.u32(o.replicas);
            e.u32(o.batch_max);
        }
        e.u32(spec.edges.len() as u32);
        for (a, b) in &spec.edges {
            e.bytes(a.as_bytes());
            e.bytes(b.as_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<DagSpec, DecodeError> {
        let mut d = Decoder::new(bytes);
        let text = |d: &mut Decoder<'_>| -> Result<String, DecodeError> {
            Ok(String::from_utf8_lossy(&d.bytes("name", NAME_BYTES_MAX)?).into_owned())
        };
        let name = text(&mut d)?;
        let n = d.u32()? as usize;
        if n > DAG_FUNCTIONS_MAX {
            return Err(DecodeError::TooLong {
                what: "DAG functions",
                len: n,
                max: DAG_FUNCTIONS_MAX,
            });
        }
        let mut functions = Vec::with_capacity(n);
        for _ in 0..n {
            let f = text(&mut d)?;
            functions.push((
                f,
                FunctionOptions {
                    replicas: d.u32()?,
                    batch_max: d.u32()?,
                },
            ));
        }
        let m = d.u32()? as usize;
        if m > DAG_FUNCTIONS_MAX * DAG_FUNCTIONS_MAX {
            return Err(DecodeError::TooLong {
                what: "DAG edges",
                len: m,
                max: DAG_FUNCTIONS_MAX * DAG_FUNCTIONS_MAX,
            });
        }
        let mut edges = Vec::with_capacity(m);
        for _ in 0..m {
            edges.push((text(&mut d)?, text(&mut d)?));
        }
        d.finish()?;
        Ok(DagSpec {
            name,
            functions,
            edges,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn specs_round_trip_and_garbage_is_refused() {
            let mut spec = DagSpec::chain("compose", &["increment", "square"]);
            spec.functions[1].1.replicas = 3;
            assert_eq!(decode(&encode(&spec)).unwrap(), spec);
            assert!(decode(b"\xff\xff\xff\xff").is_err());
            assert!(decode(&encode(&spec)[..5]).is_err());
            assert_eq!(key("x"), b"squall:dag:x");
        }
    }
}
