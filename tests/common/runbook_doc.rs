//! The convention of the executable runbooks (docs/operations/recovery.md, node-recovery.md,
//! cluster.md): every ```` ```sh ```` block is run by a test, one command per line, each
//! line's exit code checked against its trailing `# exit N` (0 when absent); lines starting
//! with `#` are comments; a `<!-- runbook-test: ... -->` comment before a block (invisible
//! when rendered) is a directive for the test that runs the document.

pub struct Block {
    /// Line of the opening fence (1-based).
    pub line: usize,
    /// The text of the `<!-- runbook-test: ... -->` comment before the block, if any.
    pub setup: Option<String>,
    /// (line, command, expected exit code).
    pub commands: Vec<(usize, String, i32)>,
}

pub fn parse(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut setup = None;
    let mut current: Option<Block> = None;
    for (n, raw) in doc.lines().enumerate() {
        let line = raw.trim();
        if let Some(b) = current.as_mut() {
            if line == "```" {
                blocks.extend(current.take());
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            assert!(
                !line.ends_with('\\'),
                "line {}: one command per line (no continuation lines)",
                n + 1
            );
            let (cmd, code) = match line.rsplit_once("# exit ") {
                Some((c, code)) => (
                    c.trim().to_string(),
                    code.trim().parse().expect("exit code"),
                ),
                None => (line.to_string(), 0),
            };
            b.commands.push((n + 1, cmd, code));
        } else if let Some(rest) = line.strip_prefix("<!-- runbook-test:") {
            setup = Some(rest.trim_end_matches("-->").trim().to_string());
        } else if line == "```sh" {
            current = Some(Block {
                line: n + 1,
                setup: setup.take(),
                commands: Vec::new(),
            });
        }
    }
    assert!(current.is_none(), "unterminated code block");
    blocks
}
