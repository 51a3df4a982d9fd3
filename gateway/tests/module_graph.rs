//! The gateway's modules form a graph without cycles, and no driver
//! reaches the observers: routing decisions flow from the plane out to
//! metrics and logs, never back. Read from the sources, so a new `use`
//! that closes a cycle fails here with the cycle named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// module -> the crate modules its source names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .filter(|m| m != "lib")
        .collect();
    let mut graph = BTreeMap::new();
    for m in &modules {
        let text = std::fs::read_to_string(src.join(format!("{m}.rs"))).unwrap();
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let uses: BTreeSet<String> = modules
            .iter()
            .filter(|other| *other != m)
            .filter(|other| {
                code.contains(&format!("crate::{other}::"))
                    || code.contains(&format!("crate::{other}}}"))
                    || code.contains(&format!("crate::{other};"))
                    || code.contains(&format!("crate::{other},"))
                    || code.contains(&format!("crate::{other} "))
                    || code.contains(&format!("crate::{{{other}"))
            })
            .cloned()
            .collect();
        graph.insert(m.clone(), uses);
    }
    graph
}

fn find_cycle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|p| p == node) {
        let mut cycle = path[i..].to_vec();
        cycle.push(node.to_owned());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_owned());
    for next in graph.get(node).into_iter().flatten() {
        if let Some(c) = find_cycle(graph, next, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(node.to_owned());
    None
}

#[test]
fn the_module_graph_has_no_cycles() {
    let graph = graph();
    assert!(graph.contains_key("handle") && graph.contains_key("import"));
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(cycle) = find_cycle(&graph, m, &mut Vec::new(), &mut done) {
            panic!("module cycle: {}\n{graph:#?}", cycle.join(" -> "));
        }
    }
    for (m, uses) in &graph {
        eprintln!(
            "{m} -> {}",
            uses.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
}

#[test]
fn no_driver_reaches_the_observers() {
    let graph = graph();
    let observers = ["obs", "events", "telemetry", "admin"];
    let drivers = [
        "connection",
        "handle",
        "import",
        "export",
        "probe",
        "tunnel",
        "splice",
    ];
    for d in drivers {
        for o in observers {
            assert!(
                !graph[d].contains(o),
                "driver `{d}` uses observer `{o}`: drivers feed the plane, observers read it"
            );
        }
    }
}
