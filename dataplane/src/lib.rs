//! # dataplane — the Squall node
//!
//! The composition root: it owns the runtime (glommio), the sockets, the
//! files, and the `squall` binary, and wires `kvs-core` (state), `wire`
//! (protocol), `executor` (functions) and `client` (for the CLI) together.
//!
//! The node's rooms, each with one job:
//! - the store: [`shard`] (a partition, its clock and counters), [`storage`]
//!   (its WAL, snapshots, recovery), [`transport`] (the way to other
//!   shards, and the fault-injecting wrapper tests use);
//! - the function platform on top of it: [`functions`] (executors, calls,
//!   DAGs, the store executors see) and [`model_fns`];
//! - serving: [`server`] (a shard's accept loop and what its connections
//!   share), [`conn`] (one connection), [`uring`] (the sockets' own
//!   io_uring ring), [`auth`];
//! - the cluster: [`identity`] (who the node is), [`members`] (membership
//!   over UDP, the view and placement every shard reads), [`links`]
//!   (connections to other nodes), [`handoff`] (keys to their new
//!   holders), [`replicate`] (writes pushed to the other copies),
//!   [`concern`] (how many copies a write waits for);
//! - the process: [`node`] (start-up and shutdown), [`cli`] (the binary).
//!
//! Life of a put and of a DAG call, file by file: `ARCHITECTURE.md`.
//!
//! ## Boundary
//! Nothing else depends on `dataplane` but its own binary: everything but
//! [`cli`] is crate-private.

#![allow(rustdoc::private_intra_doc_links)]

/// A fail point where a crash would be interesting (a hand-off step):
/// configured as `FAILPOINTS=<name>=return`, the node dies right there,
/// as under `kill -9` (no shutdown, no flush). The points exist only in
/// the test build (`fail`'s `failpoints` feature, enabled by this crate's
/// dev-dependency); elsewhere this expands to nothing. Names:
/// `handoff::before-send`, `handoff::before-drop`, `handoff::after-drop`
/// (the sender), `merge::before-apply`, `merge::before-reply` (the
/// receiver), `atomic::crash-after-apply` (an atomic call's run, once its
/// record is applied).
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| {
            eprintln!("squall: fail point {} reached: the node dies here", $name);
            std::process::abort()
        })
    };
}

#[cfg(test)]
mod allocs;
mod antientropy;
mod auth;
mod cache;
pub mod cli;
mod concern;
mod conn;
mod convert;
mod error;
mod event;
mod functions;
mod handoff;
mod identity;
mod leases;
mod limits;
mod links;
mod members;
mod memlock;
mod model_fns;
mod node;
mod replicate;
mod server;
mod shard;
mod storage;
mod transport;
mod uring;

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// `crate::<module>` paths named outside tests, per top-level module.
    fn imports(dir: &Path, top: Option<&str>, graph: &mut BTreeMap<String, BTreeSet<String>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                imports(&path, Some(top.unwrap_or(&name)), graph);
                continue;
            }
            let module = top.unwrap_or(&name).to_owned();
            if top.is_none() && (name == "lib" || name == "main") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let deps = graph.entry(module.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let used: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !used.is_empty() && used != module {
                    deps.insert(used);
                }
            }
        }
    }

    #[test]
    fn no_module_imports_one_that_imports_it_back() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut graph = BTreeMap::new();
        imports(&src, None, &mut graph);
        assert!(graph.contains_key("shard") && graph.contains_key("functions"));
        // Depth-first search for a path back to where it started.
        fn cycle(
            graph: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
        ) -> Option<Vec<String>> {
            let last = path.last()?.clone();
            for next in graph.get(&last).into_iter().flatten() {
                if path.contains(next) {
                    let mut c = path.clone();
                    c.push(next.clone());
                    return Some(c);
                }
                path.push(next.clone());
                if let Some(c) = cycle(graph, path) {
                    return Some(c);
                }
                path.pop();
            }
            None
        }
        for module in graph.keys() {
            let found = cycle(&graph, &mut vec![module.clone()]);
            assert!(
                found.is_none(),
                "import circle: {}",
                found.unwrap().join(" → ")
            );
        }
        // The store knows nothing of the function platform.
        for store in ["shard", "storage", "transport"] {
            assert!(
                !graph[store].contains("functions"),
                "{store} imports functions: {:?}",
                graph[store]
            );
        }
    }
}
