//! Environment files: a service's `env_file` read as docker's
//! opts.ParseEnvFile reads it, and the project's `.env` read as docker
//! compose reads it (docker's `stack deploy` has no `.env`; flotilla reads
//! it for interpolation, the process environment taking precedence).

use std::collections::HashMap;

/// docker's parseKeyValueFile: `KEY=VALUE` lines passed through untrimmed,
/// `#` comments and blank lines skipped, a bare `KEY` taken from `lookup`
/// (dropped when unset). Returns (key, value) pairs in file order.
pub fn parse_env_file(
    name: &str,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = if number == 0 {
            line.trim_start_matches('\u{feff}')
        } else {
            line
        };
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (variable, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line, None),
        };
        let variable = variable.trim_start_matches([' ', '\t', '\n', '\u{b}', '\u{c}', '\r']);
        if variable.contains([' ', '\t', '\n', '\u{b}', '\u{c}', '\r']) {
            return Err(format!(
                "{name}: variable '{variable}' contains whitespaces"
            ));
        }
        if variable.is_empty() {
            return Err(format!("{name}: no variable name on line '{line}'"));
        }
        match value {
            Some(value) => pairs.push((variable.to_string(), value.to_string())),
            None => {
                if let Some(value) = lookup(variable) {
                    pairs.push((variable.trim().to_string(), value));
                }
            }
        }
    }
    Ok(pairs)
}

/// A compose `.env` file: `KEY=VALUE` with an optional `export ` prefix,
/// values in single quotes taken literally, in double quotes with `\n`,
/// `\"` and `\\` escapes, unquoted ones trimmed and cut at ` #`.
pub fn parse_dotenv(text: &str) -> Result<HashMap<String, String>, String> {
    let mut vars = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                ".env: line {}: expected KEY=VALUE, got '{line}'",
                number + 1
            ));
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!(
                ".env: line {}: invalid variable name '{key}'",
                number + 1
            ));
        }
        vars.insert(key.to_string(), dotenv_value(value.trim()));
    }
    Ok(vars)
}

fn dotenv_value(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        return value[1..value.len() - 1].to_string();
    }
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        let inner = &value[1..value.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        }
        return out;
    }
    match value.find(" #") {
        Some(at) => value[..at].trim_end().to_string(),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_as_docker_reads_it() {
        let lookup = |k: &str| (k == "HOME").then(|| "/root".to_string());
        let pairs = parse_env_file(
            "web.env",
            "\u{feff}# comment\n  A=1\nB= spaced value \nHOME\nUNSET\n\nC=x=y\n",
            &lookup,
        )
        .unwrap();
        assert_eq!(
            pairs,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), " spaced value ".into()),
                ("HOME".into(), "/root".into()),
                ("C".into(), "x=y".into()),
            ]
        );
        assert_eq!(
            parse_env_file("web.env", "BAD KEY=1\n", &lookup).unwrap_err(),
            "web.env: variable 'BAD KEY' contains whitespaces"
        );
    }

    #[test]
    fn dotenv_quotes_comments_export() {
        let vars =
            parse_dotenv("# top\nexport TAG=1.2 # the tag\nQ='a # b'\nD=\"line\\nnext\"\nE=\n")
                .unwrap();
        assert_eq!(vars["TAG"], "1.2");
        assert_eq!(vars["Q"], "a # b");
        assert_eq!(vars["D"], "line\nnext");
        assert_eq!(vars["E"], "");
        assert!(parse_dotenv("NOEQUALS\n").is_err());
    }
}
