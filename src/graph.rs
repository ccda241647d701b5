//! The source dependency graph: the order of backups and restores, the levels whose
//! sources may run in parallel, cycle diagnostics and DOT export. No I/O.

use std::collections::HashMap;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;

/// Sources as nodes; an edge `a → b` means "a depends on b".
#[derive(Debug, Clone)]
pub struct SourceGraph {
    graph: DiGraph<String, ()>,
    /// Node of each source, in policy order.
    nodes: Vec<(String, NodeIndex)>,
}

/// The sources of one level: they depend only on earlier levels, so they may run
/// together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Level {
    pub level: usize,
    pub sources: Vec<String>,
}

impl SourceGraph {
    /// Builds the graph of `sources` (each source's name and the names it depends on,
    /// in policy order), or returns one dependency cycle as the names along it, the
    /// first repeated at the end (`a → b → a`). Unknown dependencies are skipped: they
    /// are reported on their own.
    pub fn new(sources: &[(&str, &[String])]) -> Result<SourceGraph, Vec<String>> {
        let mut graph = DiGraph::new();
        let nodes: Vec<(String, NodeIndex)> = sources
            .iter()
            .map(|(name, _)| (name.to_string(), graph.add_node(name.to_string())))
            .collect();
        let index: HashMap<&str, NodeIndex> = nodes.iter().map(|(n, i)| (n.as_str(), *i)).collect();
        for (name, depends_on) in sources {
            for dep in *depends_on {
                if let (Some(&a), Some(&b)) = (index.get(name), index.get(dep.as_str())) {
                    graph.add_edge(a, b, ());
                }
            }
        }
        let sg = SourceGraph { graph, nodes };
        match sg.find_cycle() {
            Some(cycle) => Err(cycle),
            None => Ok(sg),
        }
    }

    fn position(&self, node: NodeIndex) -> usize {
        self.nodes
            .iter()
            .position(|(_, i)| *i == node)
            .unwrap_or(usize::MAX)
    }

    fn find_cycle(&self) -> Option<Vec<String>> {
        let mut cyclic: Vec<Vec<NodeIndex>> = tarjan_scc(&self.graph)
            .into_iter()
            .filter(|scc| scc.len() > 1 || self.graph.contains_edge(scc[0], scc[0]))
            .collect();
        // Report the cycle that starts earliest in the policy, starting at that source.
        cyclic.sort_by_key(|scc| scc.iter().map(|n| self.position(*n)).min());
        let scc = cyclic.first()?;
        let start = *scc.iter().min_by_key(|n| self.position(**n))?;
        // Walk edges inside the component, always to the earliest source, until the
        // start comes round again; every node of an SCC reaches the start.
        let mut path = vec![start];
        let mut current = start;
        loop {
            let mut next: Vec<NodeIndex> = self
                .graph
                .neighbors(current)
                .filter(|n| scc.contains(n))
                .collect();
            next.sort_by_key(|n| (*n != start, self.position(*n)));
            let step = next
                .iter()
                .copied()
                .find(|n| *n == start || !path.contains(n))
                .or_else(|| next.first().copied())?;
            path.push(step);
            if step == start || path.len() > scc.len() + 1 {
                break;
            }
            current = step;
        }
        Some(path.iter().map(|n| self.graph[*n].clone()).collect())
    }

    /// Sources grouped by level: level 0 depends on nothing, level k only on levels
    /// below k. Within a level, policy order.
    pub fn levels(&self) -> Vec<Level> {
        let mut memo: HashMap<NodeIndex, usize> = HashMap::new();
        let mut levels: Vec<Level> = Vec::new();
        for (name, node) in &self.nodes {
            let l = self.level_of(*node, &mut memo, 0);
            while levels.len() <= l {
                levels.push(Level {
                    level: levels.len(),
                    sources: Vec::new(),
                });
            }
            levels[l].sources.push(name.clone());
        }
        levels
    }

    fn level_of(
        &self,
        node: NodeIndex,
        memo: &mut HashMap<NodeIndex, usize>,
        depth: usize,
    ) -> usize {
        if let Some(&l) = memo.get(&node) {
            return l;
        }
        if depth > self.nodes.len() {
            return 0; // only reachable with a cycle, which `new` rules out
        }
        let l = self
            .graph
            .neighbors(node)
            .map(|dep| self.level_of(dep, memo, depth + 1) + 1)
            .max()
            .unwrap_or(0);
        memo.insert(node, l);
        l
    }

    /// Every source, dependencies first: the order of backups and of restores.
    pub fn order(&self) -> Vec<String> {
        self.levels().into_iter().flat_map(|l| l.sources).collect()
    }

    /// The sources `name` depends on directly.
    pub fn dependencies(&self, name: &str) -> Vec<String> {
        self.nodes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, node)| {
                let mut deps: Vec<NodeIndex> = self.graph.neighbors(*node).collect();
                deps.sort_by_key(|n| self.position(*n));
                deps.iter().map(|n| self.graph[*n].clone()).collect()
            })
            .unwrap_or_default()
    }

    /// The graph in Graphviz DOT; edges point from a dependency to what depends on it
    /// (the direction things happen in).
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph backplan {\n  rankdir=LR;\n");
        for (name, _) in &self.nodes {
            out.push_str(&format!("  \"{name}\";\n"));
        }
        for (name, _) in &self.nodes {
            for dep in self.dependencies(name) {
                out.push_str(&format!("  \"{dep}\" -> \"{name}\";\n"));
            }
        }
        out.push_str("}\n");
        out
    }
}
