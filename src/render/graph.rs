//! `backplan graph`: the order and the parallel levels, as text.

use crate::graph::SourceGraph;

/// One line per level, then the dependencies of each source.
pub fn text(graph: &SourceGraph) -> String {
    let mut out =
        String::from("Backup and restore order (sources of one level run in parallel):\n");
    for level in graph.levels() {
        out.push_str(&format!(
            "  level {}: {}\n",
            level.level,
            level.sources.join(", ")
        ));
    }
    let mut deps = String::new();
    for name in graph.order() {
        let d = graph.dependencies(&name);
        if !d.is_empty() {
            deps.push_str(&format!("  {name} after {}\n", d.join(", ")));
        }
    }
    if !deps.is_empty() {
        out.push_str("Dependencies:\n");
        out.push_str(&deps);
    }
    out
}
