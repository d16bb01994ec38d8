//! The cluster's groundwork on one node: its identity (a node id kept in
//! the data directory, an incarnation bumped at every start).

use crate::harness::{temp_dir, Node};

/// `node=` and `incarnation=` of a ready line.
fn identity(node: &Node) -> (String, u64) {
    let field = |name: &str| {
        node.ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {:?}", node.ready))
            .to_owned()
    };
    (field("node="), field("incarnation=").parse().unwrap())
}

#[test]
fn a_restarted_node_keeps_its_id_with_a_higher_incarnation() {
    let dir = temp_dir("identity");
    let mut node = Node::start(1, "never", &dir);
    let (id, incarnation) = identity(&node);
    assert_eq!(incarnation, 1);
    assert_eq!(id.len(), 16, "{id}");
    assert!(node.stderr().contains(&format!("node-{id}, incarnation 1")));
    assert!(node.signal_and_wait("TERM").success());
    let mut again = Node::start(1, "never", &dir);
    assert_eq!(identity(&again), (id.clone(), 2));
    assert!(again.signal_and_wait("TERM").success());
    // Another data directory is another node.
    let other = Node::start(1, "never", &temp_dir("identity-other"));
    assert_ne!(identity(&other).0, id);
}

#[test]
fn a_damaged_identity_file_stops_the_node_at_start() {
    let dir = temp_dir("identity-bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("node.id"), "not an identity\n").unwrap();
    let Err(err) = Node::try_start(1, "never", &dir, &[]) else {
        panic!("the node started with a damaged identity")
    };
    assert!(
        err.contains("node.id") && err.contains("remove it"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("node.id")).unwrap(),
        "not an identity\n",
        "the file is left as it was"
    );
}
