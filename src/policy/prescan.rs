//! Limits checked before any YAML parser sees a policy: its size and how deeply it
//! nests. A policy is a few KiB nested about six levels deep; a file far beyond that
//! is a mistake (or an attack), and the parsers' cost grows with depth and size
//! (100 000 nested `[` took minutes; 85 000 sources took 730 MB). The scan is one
//! pass over the bytes, linear and allocation-free but for a stack of indentations.

/// The largest policy read: 1 MiB.
pub const MAX_BYTES: usize = 1024 * 1024;

/// The deepest nesting of mappings and lists, block and flow levels together.
pub const MAX_DEPTH: usize = 64;

/// The byte offset where the nesting first goes deeper than [`MAX_DEPTH`], if it does.
///
/// Block nesting is counted by indentation (each deeper indentation opens a level,
/// and so does each `- ` of a compact `- - x`), flow nesting by the `[` and `{` that
/// start a node. Quoted scalars, comments and block scalars (`|`, `>`) are skipped, so
/// brackets in values do not count. The count is an estimate of the parser's depth
/// that real policies stay far below; it never needs to be exact, only linear.
pub fn too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut quote: Option<u8> = None;
    // The indentation of the line that opened a block scalar, while in one.
    let mut block_scalar: Option<usize> = None;
    let mut start = 0;
    while start < bytes.len() {
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| start + i);
        let line = &bytes[start..end];
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let blank = line[indent..]
            .iter()
            .all(|&b| b == b' ' || b == b'\t' || b == b'\r');
        if let Some(parent) = block_scalar {
            if blank || indent > parent {
                start = end + 1;
                continue;
            }
            block_scalar = None;
        }
        let mut pos = indent;
        let mut at_node_start = true;
        if quote.is_none() && flow == 0 {
            if blank || line[indent] == b'#' {
                start = end + 1;
                continue;
            }
            if indent == 0 && (line.starts_with(b"---") || line.starts_with(b"...")) {
                indents.clear();
                pos = 3;
            } else {
                while indents.last().is_some_and(|&top| top > indent) {
                    indents.pop();
                }
                if indents.last() != Some(&indent) {
                    indents.push(indent);
                }
                // `- - - x`: each indicator opens a level of its own.
                while pos < line.len()
                    && (line[pos] == b'-' || line[pos] == b'?')
                    && line.get(pos + 1).is_none_or(|&b| b == b' ')
                {
                    pos += 1;
                    while line.get(pos) == Some(&b' ') {
                        pos += 1;
                    }
                    indents.push(pos);
                    if indents.len() > MAX_DEPTH {
                        return Some(start + pos.min(line.len().saturating_sub(1)));
                    }
                }
            }
            if indents.len() > MAX_DEPTH {
                return Some(start + indent);
            }
        }
        while pos < line.len() {
            let b = line[pos];
            if let Some(q) = quote {
                if q == b'\'' && b == b'\'' {
                    if line.get(pos + 1) == Some(&b'\'') {
                        pos += 1;
                    } else {
                        quote = None;
                        at_node_start = false;
                    }
                } else if q == b'"' && b == b'\\' {
                    pos += 1;
                } else if q == b'"' && b == b'"' {
                    quote = None;
                    at_node_start = false;
                }
                pos += 1;
                continue;
            }
            match b {
                b' ' | b'\t' | b'\r' => {}
                b'#' if pos == 0 || matches!(line[pos - 1], b' ' | b'\t') => break,
                b'"' | b'\'' if at_node_start => quote = Some(b),
                b'[' | b'{' if at_node_start || flow > 0 => {
                    flow += 1;
                    if indents.len() + flow > MAX_DEPTH {
                        return Some(start + pos);
                    }
                    at_node_start = true;
                }
                b']' | b'}' if flow > 0 => {
                    flow -= 1;
                    at_node_start = false;
                }
                b',' if flow > 0 => at_node_start = true,
                b':' if line
                    .get(pos + 1)
                    .is_none_or(|&n| matches!(n, b' ' | b'\t' | b'\r'))
                    || (flow > 0
                        && matches!(line.get(pos + 1), Some(b',' | b'[' | b']' | b'{' | b'}'))) =>
                {
                    at_node_start = true
                }
                b'-' | b'?' if at_node_start && line.get(pos + 1).is_none_or(|&n| n == b' ') => {}
                b'&' | b'!' if at_node_start => {
                    // An anchor or a tag: the node starts after it.
                    while pos + 1 < line.len() && !matches!(line[pos + 1], b' ' | b'\t') {
                        pos += 1;
                    }
                }
                b'|' | b'>' if at_node_start && flow == 0 => {
                    block_scalar = Some(indent);
                    break;
                }
                _ => at_node_start = false,
            }
            pos += 1;
        }
        start = end + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_flow(depth: usize) -> String {
        format!("a: {}{}\n", "[".repeat(depth), "]".repeat(depth))
    }

    fn nested_block(depth: usize) -> String {
        let mut text = String::new();
        for level in 0..depth {
            text.push_str(&format!("{}k{level}:\n", "  ".repeat(level)));
        }
        text.push_str(&format!("{}leaf: 1\n", "  ".repeat(depth)));
        text
    }

    #[test]
    fn flow_nesting_beyond_the_limit_is_found_at_the_bracket_that_crosses_it() {
        // `a: ` opens one block level; the 64th `[` makes 65.
        assert_eq!(too_deep(&nested_flow(MAX_DEPTH - 1)), None);
        assert_eq!(too_deep(&nested_flow(MAX_DEPTH)), Some(3 + MAX_DEPTH - 1));
        let deep = "[".repeat(100_000);
        assert_eq!(too_deep(&deep), Some(MAX_DEPTH - 1));
    }

    #[test]
    fn block_nesting_beyond_the_limit_is_found_at_the_line_that_crosses_it() {
        assert_eq!(too_deep(&nested_block(MAX_DEPTH - 1)), None);
        let text = nested_block(MAX_DEPTH + 5);
        let at = too_deep(&text).expect("too deep");
        let line = text[..at].matches('\n').count() + 1;
        assert_eq!(line, MAX_DEPTH + 1);
        let compact = format!("{}x\n", "- ".repeat(MAX_DEPTH + 1));
        assert!(too_deep(&compact).is_some());
    }

    #[test]
    fn brackets_in_values_comments_quotes_and_block_scalars_do_not_count() {
        let many = "[".repeat(200);
        let text = format!(
            "a: \"{many}\"\nb: '{many}'\nc: x{many}\n# {many}\nd: |\n  {many}\n  {many}\ne: [\"{many}\", 'it''s {many}']\nf: {{g: [1, 2]}}\n"
        );
        assert_eq!(too_deep(&text), None);
    }

    #[test]
    fn a_real_policy_is_far_below_the_limit() {
        for file in ["policies/quickstart.yaml", "policies/medianest.yaml"] {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/").to_string() + file;
            let text = std::fs::read_to_string(&path).expect("policy");
            assert_eq!(too_deep(&text), None, "{file}");
            assert!(text.len() < MAX_BYTES / 100, "{file}");
        }
    }
}
