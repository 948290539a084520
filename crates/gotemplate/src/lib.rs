//! A small evaluator for the Go-template subset Docker's users write: field
//! paths (`{{.Spec.Name}}`), `if`/`else`/`end`, `range`/`end`, pipelines
//! with `|`, string, number and boolean literals, and functions. Which
//! functions exist is the caller's: [`DockerCli`] has the docker CLI's
//! `--format` helpers (json, join, upper, lower, title, split, index, len,
//! println, truncate, pad, eq, ne, not); the agent gives templated secrets
//! and configs SwarmKit's set. Anything else is a clear parse error rather
//! than wrong output.
//!
//! List rows stand in for docker's formatter contexts, whose methods are
//! fields here; a method that takes an argument (`{{.Label "key"}}`) is a
//! map under the key `Label()` (see [`METHOD_SUFFIX`]), which `json` leaves
//! out as Go's formatter.MarshalJSON leaves such methods out.

use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>),
}

type Pipeline = Vec<Command>;
type Command = Vec<Operand>;

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    /// `.A.B`; an empty path is `.` itself.
    Field(Vec<String>),
    Literal(Value),
    Function(String),
}

/// How missing fields and functions behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Raw daemon JSON (inspect): a missing field prints `<no value>`, like a Go map.
    Lenient,
    /// A list row (ls/ps): a missing field is an error, like a Go struct.
    Strict,
    /// The header row of a table: helper functions return their argument unchanged.
    Header,
}

/// The functions a template may call.
pub trait Functions {
    fn has(&self, name: &str) -> bool;
    fn call(&self, name: &str, args: &[Value]) -> Result<Value, String>;
}

/// The docker CLI's `--format` functions.
pub struct DockerCli;

impl Functions for DockerCli {
    fn has(&self, name: &str) -> bool {
        DOCKER_CLI_FUNCTIONS.contains(&name)
    }

    fn call(&self, name: &str, args: &[Value]) -> Result<Value, String> {
        docker_cli_call(name, args)
    }
}

/// What an execution carries along.
#[derive(Clone, Copy)]
struct Cx<'a> {
    mode: Mode,
    funcs: &'a dyn Functions,
}

const NO_VALUE: &str = "<no value>";

/// A row key ending in this is a one-argument method: `{{.Label "k"}}` reads
/// `row["Label()"]["k"]`, "" when the key is absent (docker's Label("k")).
pub const METHOD_SUFFIX: &str = "()";

impl Template {
    /// Parses with the docker CLI's functions.
    pub fn parse(source: &str) -> Result<Template, String> {
        Self::parse_with(source, &DockerCli)
    }

    /// Parses with `funcs`' functions: any other name is an error here.
    pub fn parse_with(source: &str, funcs: &dyn Functions) -> Result<Template, String> {
        let tokens = split_actions(source)?;
        let mut iter = tokens.into_iter().peekable();
        let (nodes, end) = parse_nodes(&mut iter, funcs)?;
        match end {
            None => Ok(Template { nodes }),
            Some(keyword) => Err(format!("template: unexpected {{{{{keyword}}}}}")),
        }
    }

    /// Runs with the docker CLI's functions.
    pub fn execute(&self, data: &Value, mode: Mode) -> Result<String, String> {
        self.execute_with(data, mode, &DockerCli)
    }

    /// Runs with `funcs`, the set it was parsed with.
    pub fn execute_with(
        &self,
        data: &Value,
        mode: Mode,
        funcs: &dyn Functions,
    ) -> Result<String, String> {
        let mut out = String::new();
        exec_nodes(&self.nodes, data, Cx { mode, funcs }, &mut out)?;
        Ok(out)
    }
}

/// Parses and executes in one go.
#[cfg(test)]
fn render(source: &str, data: &Value, mode: Mode) -> Result<String, String> {
    Template::parse(source)?.execute(data, mode)
}

enum Token {
    Text(String),
    Action(String),
}

/// Splits the source into text and `{{ }}` actions, applying `{{-` / `-}}` trimming.
fn split_actions(source: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut rest = source;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_string();
        if trim_next {
            text = text.trim_start().to_string();
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "template: unclosed action".to_string())?;
        let mut inner = &after[..end];
        if let Some(stripped) = inner
            .strip_prefix("- ")
            .or_else(|| inner.strip_prefix("-\t"))
        {
            text = text.trim_end().to_string();
            inner = stripped;
        }
        trim_next = false;
        if let Some(stripped) = inner
            .strip_suffix(" -")
            .or_else(|| inner.strip_suffix("\t-"))
        {
            trim_next = true;
            inner = stripped;
        }
        if !text.is_empty() {
            tokens.push(Token::Text(text));
        }
        tokens.push(Token::Action(inner.trim().to_string()));
        rest = &after[end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if !text.is_empty() {
        tokens.push(Token::Text(text.to_string()));
    }
    Ok(tokens)
}

type TokenIter = std::iter::Peekable<std::vec::IntoIter<Token>>;

/// Parses nodes until `else`/`end` (returned as the terminator) or the end of input.
fn parse_nodes(
    iter: &mut TokenIter,
    funcs: &dyn Functions,
) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while let Some(token) = iter.next() {
        let action = match token {
            Token::Text(text) => {
                nodes.push(Node::Text(text));
                continue;
            }
            Token::Action(action) => action,
        };
        if action.starts_with("/*") {
            continue;
        }
        let (keyword, rest) = action
            .split_once([' ', '\t'])
            .unwrap_or((action.as_str(), ""));
        match keyword {
            "end" | "else" => return Ok((nodes, Some(keyword.to_string()))),
            "if" => nodes.push(parse_if(rest, iter, funcs)?),
            "range" => nodes.push(parse_range(rest, iter, funcs)?),
            "with" | "define" | "template" | "block" => {
                return Err(format!("template: `{keyword}` is not supported here"))
            }
            _ => nodes.push(Node::Action(parse_pipeline(&action, funcs)?)),
        }
    }
    Ok((nodes, None))
}

fn parse_if(condition: &str, iter: &mut TokenIter, funcs: &dyn Functions) -> Result<Node, String> {
    let condition = parse_pipeline(condition, funcs)?;
    let (then, end) = parse_nodes(iter, funcs)?;
    let otherwise = match end.as_deref() {
        Some("end") => Vec::new(),
        Some("else") => match parse_nodes(iter, funcs)? {
            (nodes, Some(end)) if end == "end" => nodes,
            _ => return Err("template: missing {{end}} after {{else}}".to_string()),
        },
        _ => return Err("template: missing {{end}} for {{if}}".to_string()),
    };
    Ok(Node::If(condition, then, otherwise))
}

fn parse_range(over: &str, iter: &mut TokenIter, funcs: &dyn Functions) -> Result<Node, String> {
    if over.contains('$') {
        return Err("template: range variables ($) are not supported here".to_string());
    }
    let over = parse_pipeline(over, funcs)?;
    match parse_nodes(iter, funcs)? {
        (body, Some(end)) if end == "end" => Ok(Node::Range(over, body)),
        _ => Err("template: missing {{end}} for {{range}}".to_string()),
    }
}

fn parse_pipeline(text: &str, funcs: &dyn Functions) -> Result<Pipeline, String> {
    let words = lex(text, funcs)?;
    let mut pipeline = vec![Vec::new()];
    for word in words {
        match word {
            Word::Pipe => pipeline.push(Vec::new()),
            Word::Operand(op) => pipeline
                .last_mut()
                .expect("pipeline is never empty")
                .push(op),
        }
    }
    if pipeline.iter().any(Vec::is_empty) {
        return Err(format!("template: missing value in {{{{{text}}}}}"));
    }
    Ok(pipeline)
}

enum Word {
    Pipe,
    Operand(Operand),
}

fn lex(text: &str, funcs: &dyn Functions) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            ' ' | '\t' | '\n' => i += 1,
            '|' => {
                words.push(Word::Pipe);
                i += 1;
            }
            '"' => {
                let (value, next) = lex_quoted(&chars, i)?;
                words.push(Word::Operand(Operand::Literal(Value::String(value))));
                i = next;
            }
            '`' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '`')
                    .ok_or("template: unterminated raw string")?;
                let value: String = chars[i + 1..i + 1 + end].iter().collect();
                words.push(Word::Operand(Operand::Literal(Value::String(value))));
                i += end + 2;
            }
            _ => {
                while i < chars.len() && !matches!(chars[i], ' ' | '\t' | '\n' | '|') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                words.push(Word::Operand(lex_word(&word, funcs)?));
            }
        }
    }
    Ok(words)
}

fn lex_quoted(chars: &[char], start: usize) -> Result<(String, usize), String> {
    let mut value = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '"' => return Ok((value, i + 1)),
            '\\' if i + 1 < chars.len() => {
                value.push(match chars[i + 1] {
                    'n' => '\n',
                    't' => '\t',
                    other => other,
                });
                i += 2;
            }
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
    Err("template: unterminated quoted string".to_string())
}

fn lex_word(word: &str, funcs: &dyn Functions) -> Result<Operand, String> {
    if word == "." {
        return Ok(Operand::Field(Vec::new()));
    }
    if let Some(path) = word.strip_prefix('.') {
        return Ok(Operand::Field(
            path.split('.').map(str::to_string).collect(),
        ));
    }
    if word.starts_with('$') || word.starts_with('(') {
        return Err(format!(
            "template: `{word}`: variables and parentheses are not supported here"
        ));
    }
    match word {
        "true" => return Ok(Operand::Literal(Value::Bool(true))),
        "false" => return Ok(Operand::Literal(Value::Bool(false))),
        _ => {}
    }
    if let Ok(n) = word.parse::<i64>() {
        return Ok(Operand::Literal(Value::from(n)));
    }
    if let Ok(n) = word.parse::<f64>() {
        return Ok(Operand::Literal(Value::from(n)));
    }
    if funcs.has(word) {
        return Ok(Operand::Function(word.to_string()));
    }
    Err(format!("template: function \"{word}\" not defined"))
}

const DOCKER_CLI_FUNCTIONS: &[&str] = &[
    "json", "join", "upper", "lower", "title", "split", "index", "len", "println", "print",
    "truncate", "pad", "eq", "ne", "not", "and", "or",
];

fn exec_nodes(nodes: &[Node], data: &Value, cx: Cx<'_>, out: &mut String) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Action(pipeline) => out.push_str(&go_string(&eval_pipeline(pipeline, data, cx)?)),
            Node::If(cond, then, otherwise) => {
                let branch = if truthy(&eval_pipeline(cond, data, cx)?) {
                    then
                } else {
                    otherwise
                };
                exec_nodes(branch, data, cx, out)?;
            }
            Node::Range(over, body) => match eval_pipeline(over, data, cx)? {
                Value::Array(items) => {
                    for item in &items {
                        exec_nodes(body, item, cx, out)?;
                    }
                }
                Value::Object(map) => {
                    for item in map.values() {
                        exec_nodes(body, item, cx, out)?;
                    }
                }
                Value::Null => {}
                other => {
                    return Err(format!(
                        "template: range can't iterate over {}",
                        go_string(&other)
                    ))
                }
            },
        }
    }
    Ok(())
}

fn eval_pipeline(pipeline: &Pipeline, data: &Value, cx: Cx<'_>) -> Result<Value, String> {
    let mut previous: Option<Value> = None;
    for command in pipeline {
        previous = Some(eval_command(command, previous.take(), data, cx)?);
    }
    Ok(previous.unwrap_or(Value::Null))
}

fn eval_command(
    command: &Command,
    piped: Option<Value>,
    data: &Value,
    cx: Cx<'_>,
) -> Result<Value, String> {
    let mut args = Vec::new();
    for operand in command.iter().skip(1) {
        args.push(eval_operand(operand, data, cx)?);
    }
    args.extend(piped);
    match &command[0] {
        Operand::Function(name) if cx.mode == Mode::Header && name != "println" => {
            Ok(args.into_iter().next().unwrap_or(Value::Null))
        }
        Operand::Function(name) => cx.funcs.call(name, &args),
        single if args.is_empty() => eval_operand(single, data, cx),
        Operand::Field(path) => call_method(data, path, &args, cx.mode),
        _ => Err("template: can't give arguments to a non-function".to_string()),
    }
}

/// `{{.Label "key"}}`: a one-argument method of a list row.
fn call_method(data: &Value, path: &[String], args: &[Value], mode: Mode) -> Result<Value, String> {
    let not_a_method = || {
        format!(
            "template: can't give arguments to non-function .{}",
            path.join(".")
        )
    };
    let Some((name, parent)) = path.split_last() else {
        return Err(not_a_method());
    };
    if mode == Mode::Header {
        return Ok(Value::String(String::new()));
    }
    let parent = lookup(data, parent, mode)?;
    let method = parent
        .get(format!("{name}{METHOD_SUFFIX}"))
        .ok_or_else(not_a_method)?;
    match args {
        [Value::String(key)] => Ok(method
            .get(key)
            .cloned()
            .unwrap_or_else(|| Value::String(String::new()))),
        _ => Err(format!("template: wrong number of args for {name}: want 1")),
    }
}

/// A row without its method entries, for printing it whole.
fn without_methods(value: &Value) -> std::borrow::Cow<'_, Value> {
    match value {
        Value::Object(map) if map.keys().any(|k| k.ends_with(METHOD_SUFFIX)) => {
            std::borrow::Cow::Owned(Value::Object(
                map.iter()
                    .filter(|(k, _)| !k.ends_with(METHOD_SUFFIX))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ))
        }
        other => std::borrow::Cow::Borrowed(other),
    }
}

fn eval_operand(operand: &Operand, data: &Value, cx: Cx<'_>) -> Result<Value, String> {
    match operand {
        Operand::Literal(value) => Ok(value.clone()),
        Operand::Function(name) => cx.funcs.call(name, &[]),
        Operand::Field(path) => lookup(data, path, cx.mode),
    }
}

fn lookup(data: &Value, path: &[String], mode: Mode) -> Result<Value, String> {
    let mut current = data;
    for name in path {
        match current {
            Value::Object(map) => match map.get(name) {
                Some(value) => current = value,
                None if mode == Mode::Strict => {
                    return Err(format!("template: can't evaluate field {name}"))
                }
                None => return Ok(Value::String(NO_VALUE.to_string())),
            },
            Value::Null => return Ok(Value::String(NO_VALUE.to_string())),
            _ => {
                return Err(format!(
                    "template: can't evaluate field {name} in a non-object value"
                ))
            }
        }
    }
    Ok(current.clone())
}

fn docker_cli_call(name: &str, args: &[Value]) -> Result<Value, String> {
    let arg = |i: usize| {
        args.get(i)
            .ok_or_else(|| format!("template: wrong number of args for {name}"))
    };
    let text = |i: usize| arg(i).map(go_string);
    let result = match name {
        "json" => Value::String(go_json(&without_methods(arg(0)?))),
        "upper" => Value::String(text(0)?.to_uppercase()),
        "lower" => Value::String(text(0)?.to_lowercase()),
        "title" => Value::String(title(&text(0)?)),
        "join" => Value::String(join(arg(0)?, &text(1)?)),
        "split" => Value::Array(
            text(0)?
                .split(text(1)?.as_str())
                .map(|s| Value::String(s.into()))
                .collect(),
        ),
        "index" => index(arg(0)?, arg(1)?),
        "len" => Value::from(length(arg(0)?)),
        "println" => Value::String(args.iter().map(go_string).collect::<Vec<_>>().join(" ") + "\n"),
        "print" => Value::String(args.iter().map(go_string).collect::<Vec<_>>().join("")),
        "truncate" => Value::String(text(0)?.chars().take(as_len(arg(1)?)).collect()),
        "pad" => Value::String(format!(
            "{}{}{}",
            " ".repeat(as_len(arg(1)?)),
            text(0)?,
            " ".repeat(as_len(arg(2)?))
        )),
        "eq" => Value::Bool(arg(0)? == arg(1)?),
        "ne" => Value::Bool(arg(0)? != arg(1)?),
        "not" => Value::Bool(!truthy(arg(0)?)),
        "and" => args
            .iter()
            .find(|v| !truthy(v))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null),
        "or" => args
            .iter()
            .find(|v| truthy(v))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null),
        other => return Err(format!("template: function \"{other}\" not defined")),
    };
    Ok(result)
}

/// Go's built-in functions that need no reflection: for callers that
/// give templates Go's own set rather than the docker CLI's.
pub fn go_builtin(name: &str, args: &[Value]) -> Option<Result<Value, String>> {
    match name {
        "and" | "or" | "not" | "eq" | "ne" | "len" | "index" | "print" | "println" => {
            Some(docker_cli_call(name, args))
        }
        _ => None,
    }
}

/// The names [`go_builtin`] knows.
pub const GO_BUILTINS: &[&str] = &[
    "and", "or", "not", "eq", "ne", "len", "index", "print", "println",
];

fn as_len(value: &Value) -> usize {
    value.as_u64().unwrap_or(0) as usize
}

fn title(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at_word_start = true;
    for c in text.chars() {
        if at_word_start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_word_start = !c.is_alphanumeric();
    }
    out
}

fn join(list: &Value, separator: &str) -> String {
    match list {
        Value::Array(items) => items
            .iter()
            .map(go_string)
            .collect::<Vec<_>>()
            .join(separator),
        other => go_string(other),
    }
}

fn index(container: &Value, key: &Value) -> Value {
    match (container, key) {
        (Value::Object(map), Value::String(k)) => map.get(k).cloned().unwrap_or(Value::Null),
        (Value::Array(items), Value::Number(n)) => n
            .as_u64()
            .and_then(|i| items.get(i as usize))
            .cloned()
            .unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

fn length(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.len(),
        Value::Object(map) => map.len(),
        Value::String(s) => s.len(),
        _ => 0,
    }
}

/// Go template truthiness: zero values and empty collections are false.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

/// Prints a value the way Go's `fmt.Print` prints the decoded JSON value.
pub fn go_string(value: &Value) -> String {
    match value {
        Value::Null => NO_VALUE.to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(go_string).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(map) => {
            let mut pairs: Vec<(&String, &Value)> = map
                .iter()
                .filter(|(k, _)| !k.ends_with(METHOD_SUFFIX))
                .collect();
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            let body: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{k}:{}", go_string(v)))
                .collect();
            format!("map[{}]", body.join(" "))
        }
    }
}

/// JSON as Go's `json.Marshal` writes it: compact, with `<`, `>` and `&` escaped.
pub fn go_json(value: &Value) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    text.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(source: &str, data: &Value) -> String {
        render(source, data, Mode::Lenient).unwrap()
    }

    #[test]
    fn fields_and_paths() {
        let data = json!({"ID": "abc", "Spec": {"Name": "web", "Labels": {"a": "1"}}});
        assert_eq!(r("{{.ID}}", &data), "abc");
        assert_eq!(r("{{ .Spec.Name }}:{{.ID}}", &data), "web:abc");
        assert_eq!(r("{{.Spec.Missing}}", &data), "<no value>");
        assert_eq!(r("{{index .Spec.Labels \"a\"}}", &data), "1");
        assert_eq!(r("{{.Spec.Labels}}", &data), "map[a:1]");
    }

    #[test]
    fn json_function() {
        let data = json!({"b": 1, "a": "<x>"});
        assert_eq!(r("{{json .}}", &data), r#"{"a":"\u003cx\u003e","b":1}"#);
        assert_eq!(r("{{json .b}}", &data), "1");
    }

    #[test]
    fn conditionals_ranges_and_trim() {
        let data = json!({"Self": true, "Names": ["a", "b"], "Empty": ""});
        assert_eq!(r("{{if .Self}}*{{else}} {{ end }}", &data), "*");
        assert_eq!(r("{{if .Empty}}x{{else}}y{{end}}", &data), "y");
        assert_eq!(r("{{range .Names}}[{{.}}]{{end}}", &data), "[a][b]");
        assert_eq!(r("a  {{- .Empty -}}  b", &data), "ab");
        assert_eq!(r("{{join .Names \",\"}}", &data), "a,b");
        assert_eq!(r("{{join .Names \"-\" | upper}}", &data), "A-B");
        assert_eq!(
            r("{{upper .Empty}}{{lower \"AB\"}}{{title \"ab cd\"}}", &data),
            "abAb Cd"
        );
    }

    #[test]
    fn strict_mode_rejects_unknown_fields() {
        let err = render("{{.Nope}}", &json!({"ID": "x"}), Mode::Strict).unwrap_err();
        assert!(err.contains("can't evaluate field Nope"), "{err}");
    }

    #[test]
    fn header_mode_keeps_header_text() {
        let header = json!({"ID": "ID", "Name": "NAME"});
        assert_eq!(
            render("{{upper .Name}}\t{{truncate .ID 1}}", &header, Mode::Header).unwrap(),
            "NAME\tID"
        );
    }

    #[test]
    fn one_argument_methods() {
        let row = json!({"Name": "n", "Label()": {"a": "1"}});
        let strict = |source: &str| render(source, &row, Mode::Strict);
        assert_eq!(strict("{{.Label \"a\"}}|{{.Label \"b\"}}").unwrap(), "1|");
        assert_eq!(strict("{{json .}}").unwrap(), r#"{"Name":"n"}"#);
        assert!(strict("{{.Name \"a\"}}").is_err());
        assert_eq!(
            render("{{.Label \"a\"}}x", &json!({"Name": "NAME"}), Mode::Header).unwrap(),
            "x"
        );
    }

    #[test]
    fn unsupported_syntax_is_an_error() {
        assert!(Template::parse("{{with .X}}{{end}}")
            .unwrap_err()
            .contains("not supported"));
        assert!(Template::parse("{{$x := 1}}").is_err());
        assert!(Template::parse("{{nosuchfn .X}}")
            .unwrap_err()
            .contains("not defined"));
        assert!(Template::parse("{{if .X}}")
            .unwrap_err()
            .contains("missing {{end}}"));
        assert!(Template::parse("{{.X").is_err());
    }
}
