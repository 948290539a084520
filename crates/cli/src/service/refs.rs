//! Secrets and configs on a service: `--secret` / `--config` (create),
//! `--secret-add|rm` / `--config-add|rm` (update), as docker/cli 20.10 has
//! them: opts/secret.go and opts/config.go read each flag value, and
//! cli/command/service/parse.go (ParseSecrets, ParseConfigs) and update.go
//! (getUpdatedSecrets, getUpdatedConfigs, removeConfigs) turn the names into
//! the references a ServiceSpec holds.

use std::collections::{HashMap, HashSet};

use bollard::models::{
    TaskSpecContainerSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecFile1, TaskSpecContainerSpecSecrets,
};
use serde_json::Value;

use super::opts::csv_record;
use crate::client::{add_filter, filters_pair, query, CliError, Client, Filters, Result};
use crate::secret::Kind;

/// One `--secret`/`--config` value: which secret or config (by name), and
/// the file it becomes in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// The secret's or config's name (`source=` / `src=`).
    pub source: String,
    /// The file name (`target=`); the source's name when not given.
    pub target: String,
    pub uid: String,
    pub gid: String,
    pub mode: u32,
}

/// clap's reader for `--secret` and `--secret-add` (docker's SecretOpt.Set).
pub fn parse_secret(value: &str) -> std::result::Result<FileRef, String> {
    parse_file_ref(value, Kind::Secret)
}

/// clap's reader for `--config` and `--config-add` (docker's ConfigOpt.Set).
pub fn parse_config(value: &str) -> std::result::Result<FileRef, String> {
    parse_file_ref(value, Kind::Config)
}

/// docker's SecretOpt/ConfigOpt.Set: one CSV record; a lone field without
/// "=" is a name (the target too), otherwise `source|src=`, `target=`,
/// `uid=`, `gid=`, `mode=` (keys in any case, mode read by Go's
/// `strconv.ParseUint(v, 0, 32)`: "0444" and "0o444" are octal, "292"
/// decimal, "0x124" hex). Defaults: uid "0", gid "0", mode 0444.
fn parse_file_ref(value: &str, kind: Kind) -> std::result::Result<FileRef, String> {
    let fields = go_csv_read(value)?;
    let mut file = FileRef {
        source: String::new(),
        target: String::new(),
        uid: "0".to_string(),
        gid: "0".to_string(),
        mode: 0o444,
    };
    if let [only] = fields.as_slice() {
        if !only.contains('=') {
            file.source = only.clone();
            file.target = only.clone();
            return Ok(file);
        }
    }
    for field in &fields {
        let Some((key, value)) = field.split_once('=') else {
            return Err(format!("invalid field '{field}' must be a key=value pair"));
        };
        let key = key.to_lowercase();
        match key.as_str() {
            "source" | "src" => file.source = value.to_string(),
            "target" => file.target = value.to_string(),
            "uid" => file.uid = value.to_string(),
            "gid" => file.gid = value.to_string(),
            "mode" => {
                file.mode =
                    parse_go_uint32(value).map_err(|e| format!("invalid mode specified: {e}"))?
            }
            _ => return Err(format!("invalid field in {} request: {key}", kind.word())),
        }
    }
    if file.source.is_empty() {
        return Err("source is required".to_string());
    }
    if file.target.is_empty() {
        file.target = file.source.clone();
    }
    Ok(file)
}

/// Go's `csv.NewReader(strings.NewReader(value)).Read()`: blank lines
/// before the record are skipped, and no record at all is io.EOF.
fn go_csv_read(value: &str) -> std::result::Result<Vec<String>, String> {
    let mut rest = value;
    loop {
        if let Some(after) = rest.strip_prefix('\n') {
            rest = after;
        } else if let Some(after) = rest.strip_prefix("\r\n") {
            rest = after;
        } else {
            break;
        }
    }
    if rest.is_empty() {
        return Err("EOF".to_string());
    }
    csv_record(rest).map_err(|e| e.to_string())
}

/// Go's `strconv.ParseUint(text, 0, 32)` with its errors
/// (`strconv.ParseUint: parsing "x": invalid syntax` / `value out of range`).
pub fn parse_go_uint32(text: &str) -> std::result::Result<u32, String> {
    let syntax = || {
        format!(
            "strconv.ParseUint: parsing {}: invalid syntax",
            go_quote(text)
        )
    };
    let range = || {
        format!(
            "strconv.ParseUint: parsing {}: value out of range",
            go_quote(text)
        )
    };
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(syntax());
    }
    let (base, digits): (u64, &[u8]) = if bytes[0] == b'0' {
        match bytes.get(1).map(u8::to_ascii_lowercase) {
            Some(b'b') if bytes.len() >= 3 => (2, &bytes[2..]),
            Some(b'o') if bytes.len() >= 3 => (8, &bytes[2..]),
            Some(b'x') if bytes.len() >= 3 => (16, &bytes[2..]),
            _ => (8, &bytes[1..]),
        }
    } else {
        (10, bytes)
    };
    let max = u64::from(u32::MAX);
    let mut underscores = false;
    let mut n: u64 = 0;
    for &c in digits {
        let d = match c {
            b'_' => {
                underscores = true;
                continue;
            }
            b'0'..=b'9' => c - b'0',
            c if c.is_ascii_alphabetic() => c.to_ascii_lowercase() - b'a' + 10,
            _ => return Err(syntax()),
        };
        if u64::from(d) >= base {
            return Err(syntax());
        }
        // n stays at most u32::MAX, so this cannot overflow a u64.
        n = n * base + u64::from(d);
        if n > max {
            return Err(range());
        }
    }
    if underscores && !underscore_ok(text) {
        return Err(syntax());
    }
    u32::try_from(n).map_err(|_| range())
}

/// Go's strconv.underscoreOK: underscores only between digits (a base
/// prefix counts as a digit).
fn underscore_ok(text: &str) -> bool {
    let s = text.as_bytes();
    let s = match s.first() {
        Some(b'+' | b'-') => &s[1..],
        _ => s,
    };
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if s.len() >= 2 && s[0] == b'0' && matches!(s[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = s[1].eq_ignore_ascii_case(&b'x');
    }
    while i < s.len() {
        let c = s[i];
        i += 1;
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
            continue;
        }
        if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
            continue;
        }
        if saw == b'_' {
            return false;
        }
        saw = b'!';
    }
    saw != b'_'
}

/// Go's strconv.Quote, for the text inside a ParseUint error.
fn go_quote(text: &str) -> String {
    let mut quoted = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\u{7}' => quoted.push_str("\\a"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{c}' => quoted.push_str("\\f"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{b}' => quoted.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                quoted.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The requested references with one per target, in the order given:
/// docker's ParseSecrets/ParseConfigs refuse a second reference to the
/// same file ("duplicate secret target for NAME not allowed", naming the
/// later one's source).
fn unique_targets(kind: Kind, requested: &[FileRef]) -> Result<Vec<FileRef>> {
    let mut targets = HashSet::new();
    for file in requested {
        if !targets.insert(file.target.as_str()) {
            return Err(CliError::Other(format!(
                "duplicate {} target for {} not allowed",
                kind.word(),
                file.source
            )));
        }
    }
    Ok(requested.to_vec())
}

/// Docker's `{"name": {...}}` filter for the requested names.
fn name_filters(requested: &[FileRef]) -> Filters {
    let mut filters = Filters::new();
    for file in requested {
        add_filter(&mut filters, "name", &file.source);
    }
    filters
}

/// Pairs each reference with the ID of the listed secret or config whose
/// name is exactly its source ("secret not found: NAME" when none is).
/// The daemon's "name" filter matches prefixes, so the list may hold more.
fn match_ids(
    kind: Kind,
    requested: Vec<FileRef>,
    listed: &[Value],
) -> Result<Vec<(FileRef, String)>> {
    let mut ids = HashMap::new();
    for item in listed {
        let name = item["Spec"]["Name"].as_str().unwrap_or_default();
        let id = item["ID"].as_str().unwrap_or_default();
        ids.insert(name.to_string(), id.to_string());
    }
    requested
        .into_iter()
        .map(|file| match ids.get(&file.source) {
            Some(id) => Ok((file.clone(), id.clone())),
            None => Err(CliError::Other(format!(
                "{} not found: {}",
                kind.word(),
                file.source
            ))),
        })
        .collect()
}

/// docker's ParseSecrets/ParseConfigs for file targets: one reference per
/// target, then one GET /secrets (or /configs) filtered by the names, each
/// name becoming its ID. Docker walks a Go map, so its order is random;
/// here the references keep the order they were given in.
async fn resolve(
    client: &Client,
    kind: Kind,
    requested: &[FileRef],
) -> Result<Vec<(FileRef, String)>> {
    if requested.is_empty() {
        return Ok(Vec::new());
    }
    let requested = unique_targets(kind, requested)?;
    let filters = name_filters(&requested);
    let params: Vec<_> = filters_pair(&filters).into_iter().collect();
    let listed: Vec<Value> = client
        .get(&format!("/{}s{}", kind.word(), query(&params)))
        .await?;
    match_ids(kind, requested, &listed)
}

/// Docker's SecretReference for a resolved `--secret`.
pub fn secret_reference(file: &FileRef, id: String) -> TaskSpecContainerSpecSecrets {
    TaskSpecContainerSpecSecrets {
        file: Some(TaskSpecContainerSpecFile {
            name: Some(file.target.clone()),
            uid: Some(file.uid.clone()),
            gid: Some(file.gid.clone()),
            mode: Some(file.mode),
        }),
        secret_id: Some(id),
        secret_name: Some(file.source.clone()),
    }
}

/// Docker's ConfigReference (a file target) for a resolved `--config`.
pub fn config_reference(file: &FileRef, id: String) -> TaskSpecContainerSpecConfigs {
    TaskSpecContainerSpecConfigs {
        file: Some(TaskSpecContainerSpecFile1 {
            name: Some(file.target.clone()),
            uid: Some(file.uid.clone()),
            gid: Some(file.gid.clone()),
            mode: Some(file.mode),
        }),
        runtime: None,
        config_id: Some(id),
        config_name: Some(file.source.clone()),
    }
}

/// `--secret` values as the SecretReferences docker sends.
pub async fn resolve_secrets(
    client: &Client,
    requested: &[FileRef],
) -> Result<Vec<TaskSpecContainerSpecSecrets>> {
    let resolved = resolve(client, Kind::Secret, requested).await?;
    Ok(resolved
        .into_iter()
        .map(|(file, id)| secret_reference(&file, id))
        .collect())
}

/// `--config` values as the ConfigReferences docker sends.
pub async fn resolve_configs(
    client: &Client,
    requested: &[FileRef],
) -> Result<Vec<TaskSpecContainerSpecConfigs>> {
    let resolved = resolve(client, Kind::Config, requested).await?;
    Ok(resolved
        .into_iter()
        .map(|(file, id)| config_reference(&file, id))
        .collect())
}

/// docker's getUpdatedSecrets on resolved additions: the references whose
/// secret is named in `--secret-rm` go, the added ones are appended (an
/// existing reference is not replaced: one to the same target stays, and
/// the daemon refuses the pair).
pub fn update_secrets(
    container: &mut TaskSpecContainerSpec,
    remove: &[String],
    added: Vec<TaskSpecContainerSpecSecrets>,
) {
    let remove: HashSet<&str> = remove.iter().map(String::as_str).collect();
    let mut secrets: Vec<_> = container
        .secrets
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|s| !remove.contains(s.secret_name.as_deref().unwrap_or_default()))
        .collect();
    secrets.extend(added);
    container.secrets = (!secrets.is_empty()).then_some(secrets);
}

/// docker's getUpdatedConfigs and removeConfigs on resolved additions, with
/// no `--credential-spec` flag (flotilla has none): a file reference goes
/// when its config is named in `--config-rm`; a runtime reference stays
/// only while it is the credential spec's config (matched by ID, or by an
/// empty name as Go's zero values compare); the added ones are appended.
pub fn update_configs(
    container: &mut TaskSpecContainerSpec,
    remove: &[String],
    added: Vec<TaskSpecContainerSpecConfigs>,
) {
    let cred_spec_id = container
        .privileges
        .as_ref()
        .and_then(|p| p.credential_spec.as_ref())
        .and_then(|c| c.config.clone())
        .unwrap_or_default();
    let remove: HashSet<&str> = remove.iter().map(String::as_str).collect();
    let mut configs: Vec<_> = container
        .configs
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| {
            let name = c.config_name.as_deref().unwrap_or_default();
            if c.runtime.is_some() {
                name.is_empty() || c.config_id.as_deref().unwrap_or_default() == cred_spec_id
            } else {
                !remove.contains(name)
            }
        })
        .collect();
    configs.extend(added);
    container.configs = (!configs.is_empty()).then_some(configs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file(source: &str, target: &str) -> FileRef {
        FileRef {
            source: source.to_string(),
            target: target.to_string(),
            uid: "0".to_string(),
            gid: "0".to_string(),
            mode: 0o444,
        }
    }

    #[test]
    fn short_form_is_the_name_and_the_target() {
        assert_eq!(
            parse_secret("db_password"),
            Ok(file("db_password", "db_password"))
        );
        assert_eq!(parse_config("app.conf"), Ok(file("app.conf", "app.conf")));
        // A quoted name may hold a comma.
        assert_eq!(parse_secret("\"a,b\""), Ok(file("a,b", "a,b")));
    }

    #[test]
    fn long_form_keys() {
        assert_eq!(
            parse_secret("source=db,target=/run/pw,uid=1000,gid=1001,mode=0400"),
            Ok(FileRef {
                source: "db".to_string(),
                target: "/run/pw".to_string(),
                uid: "1000".to_string(),
                gid: "1001".to_string(),
                mode: 0o400,
            })
        );
        assert_eq!(parse_secret("src=db"), Ok(file("db", "db")));
        assert_eq!(parse_config("SRC=c,Target=x"), Ok(file("c", "x")));
        // The value keeps its case and everything after the first "=".
        assert_eq!(parse_config("src=C,target=a=b"), Ok(file("C", "a=b")));
        // Later keys win.
        assert_eq!(parse_secret("src=a,src=b"), Ok(file("b", "b")));
        // Only the source is required; uid and gid are kept as text.
        let f = parse_secret("src=s,uid=www,gid=").unwrap();
        assert_eq!((f.uid.as_str(), f.gid.as_str()), ("www", ""));
    }

    #[test]
    fn mode_is_read_like_go_parse_uint_base_0() {
        let mode = |m: &str| parse_secret(&format!("src=s,mode={m}")).map(|f| f.mode);
        assert_eq!(mode("0444"), Ok(0o444));
        assert_eq!(mode("0o440"), Ok(0o440));
        assert_eq!(mode("0O440"), Ok(0o440));
        assert_eq!(mode("292"), Ok(292));
        assert_eq!(mode("0x124"), Ok(0o444));
        assert_eq!(mode("0b100100100"), Ok(0o444));
        assert_eq!(mode("0"), Ok(0));
        assert_eq!(mode("0_444"), Ok(0o444));
        assert_eq!(mode("4294967295"), Ok(u32::MAX));
        assert_eq!(
            mode("abc"),
            Err(
                "invalid mode specified: strconv.ParseUint: parsing \"abc\": invalid syntax".into()
            )
        );
        assert_eq!(
            mode("0888"),
            Err(
                "invalid mode specified: strconv.ParseUint: parsing \"0888\": invalid syntax"
                    .into()
            )
        );
        assert_eq!(
            mode(""),
            Err("invalid mode specified: strconv.ParseUint: parsing \"\": invalid syntax".into())
        );
        assert_eq!(
            mode("-1"),
            Err("invalid mode specified: strconv.ParseUint: parsing \"-1\": invalid syntax".into())
        );
        assert_eq!(
            mode("0x"),
            Err("invalid mode specified: strconv.ParseUint: parsing \"0x\": invalid syntax".into())
        );
        // Base 0 takes Go's digit separators, in decimal too.
        assert_eq!(mode("4_4"), Ok(44));
        assert!(mode("4__4").is_err());
        assert!(mode("0x_1").is_ok());
        assert!(mode("44_").is_err());
        assert_eq!(
            mode("4294967296"),
            Err("invalid mode specified: strconv.ParseUint: parsing \"4294967296\": value out of range".into())
        );
        // Out of range is found before a bad digit further on.
        assert_eq!(
            mode("99999999999z"),
            Err("invalid mode specified: strconv.ParseUint: parsing \"99999999999z\": value out of range".into())
        );
        assert_eq!(
            parse_go_uint32("a\tb\"").unwrap_err(),
            "strconv.ParseUint: parsing \"a\\tb\\\"\": invalid syntax"
        );
    }

    #[test]
    fn bad_values_fail_as_docker_does() {
        assert_eq!(
            parse_secret("src=a,bogus=1"),
            Err("invalid field in secret request: bogus".into())
        );
        assert_eq!(
            parse_config("src=a,Bogus=1"),
            Err("invalid field in config request: bogus".into())
        );
        // docker 20.10 reads "=x" as an empty key.
        assert_eq!(
            parse_secret("src=a,=x"),
            Err("invalid field in secret request: ".into())
        );
        assert_eq!(
            parse_secret("src=a,target"),
            Err("invalid field 'target' must be a key=value pair".into())
        );
        assert_eq!(parse_secret("target=x"), Err("source is required".into()));
        assert_eq!(
            parse_config("src=,target=x"),
            Err("source is required".into())
        );
        assert_eq!(parse_secret(""), Err("EOF".into()));
        assert_eq!(parse_secret("\n\r\n"), Err("EOF".into()));
        assert_eq!(parse_secret("\nname"), Ok(file("name", "name")));
        assert!(parse_secret("src=a\"b")
            .unwrap_err()
            .contains("bare \" in non-quoted-field"));
    }

    #[test]
    fn one_reference_per_target() {
        let ok = unique_targets(Kind::Secret, &[file("a", "x"), file("a", "y")]).unwrap();
        assert_eq!(ok.len(), 2);
        let err = unique_targets(Kind::Secret, &[file("a", "x"), file("b", "x")]).unwrap_err();
        assert_eq!(err.to_string(), "duplicate secret target for b not allowed");
        let err = unique_targets(Kind::Config, &[file("c", "c"), file("c", "c")]).unwrap_err();
        assert_eq!(err.to_string(), "duplicate config target for c not allowed");
    }

    #[test]
    fn names_become_ids() {
        let requested = vec![
            file("db", "db"),
            file("db_password", "/pw"),
            file("db", "again"),
        ];
        assert_eq!(
            serde_json::to_string(&name_filters(&requested)).unwrap(),
            r#"{"name":{"db":true,"db_password":true}}"#
        );
        // "name" matches prefixes on the daemon: the exact name wins.
        let listed = vec![
            json!({"ID": "id-pw", "Spec": {"Name": "db_password"}}),
            json!({"ID": "id-db", "Spec": {"Name": "db"}}),
        ];
        let resolved = match_ids(Kind::Secret, requested.clone(), &listed).unwrap();
        let refs: Vec<_> = resolved
            .iter()
            .map(|(f, id)| serde_json::to_value(secret_reference(f, id.clone())).unwrap())
            .collect();
        assert_eq!(
            json!(refs),
            json!([
                {"File": {"Name": "db", "UID": "0", "GID": "0", "Mode": 292}, "SecretID": "id-db", "SecretName": "db"},
                {"File": {"Name": "/pw", "UID": "0", "GID": "0", "Mode": 292}, "SecretID": "id-pw", "SecretName": "db_password"},
                {"File": {"Name": "again", "UID": "0", "GID": "0", "Mode": 292}, "SecretID": "id-db", "SecretName": "db"},
            ])
        );
        let err = match_ids(Kind::Secret, requested, &listed[..1]).unwrap_err();
        assert_eq!(err.to_string(), "secret not found: db");
        let err = match_ids(Kind::Config, vec![file("c", "c")], &[]).unwrap_err();
        assert_eq!(err.to_string(), "config not found: c");
        assert_eq!(
            serde_json::to_value(config_reference(&file("app", "app"), "id-c".into())).unwrap(),
            json!({"File": {"Name": "app", "UID": "0", "GID": "0", "Mode": 292}, "ConfigID": "id-c", "ConfigName": "app"})
        );
    }

    fn container(value: Value) -> TaskSpecContainerSpec {
        serde_json::from_value(value).unwrap()
    }

    fn secret(name: &str, target: &str, id: &str) -> Value {
        json!({"File": {"Name": target, "UID": "0", "GID": "0", "Mode": 292}, "SecretID": id, "SecretName": name})
    }

    fn config(name: &str, target: &str, id: &str) -> Value {
        json!({"File": {"Name": target, "UID": "0", "GID": "0", "Mode": 292}, "ConfigID": id, "ConfigName": name})
    }

    #[test]
    fn secret_rm_by_name_then_add_appends() {
        let mut c = container(json!({"Image": "x", "Secrets": [
            secret("a", "a", "id-a"), secret("b", "/b", "id-b"), secret("a", "a2", "id-a")
        ]}));
        let added = vec![secret_reference(&file("c", "c"), "id-c".into())];
        // A target or an ID does not name a secret to remove.
        update_secrets(&mut c, &["a".into(), "/b".into(), "id-b".into()], added);
        assert_eq!(
            serde_json::to_value(&c.secrets).unwrap(),
            json!([secret("b", "/b", "id-b"), secret("c", "c", "id-c")])
        );
        // An added reference does not replace one to the same target.
        let added = vec![secret_reference(&file("d", "c"), "id-d".into())];
        update_secrets(&mut c, &[], added);
        assert_eq!(
            serde_json::to_value(&c.secrets).unwrap(),
            json!([
                secret("b", "/b", "id-b"),
                secret("c", "c", "id-c"),
                secret("d", "c", "id-d")
            ])
        );
        // Removing and adding the same name replaces it.
        let added = vec![secret_reference(&file("b", "/new"), "id-b".into())];
        update_secrets(&mut c, &["b".into(), "c".into(), "d".into()], added);
        assert_eq!(
            serde_json::to_value(&c.secrets).unwrap(),
            json!([secret("b", "/new", "id-b")])
        );
        update_secrets(&mut c, &["b".into()], Vec::new());
        assert!(c.secrets.is_none());
        assert!(serde_json::to_value(&c).unwrap().get("Secrets").is_none());
        // Nothing asked: nothing changes.
        let mut c = container(json!({"Secrets": [secret("a", "a", "id-a")]}));
        update_secrets(&mut c, &[], Vec::new());
        assert_eq!(
            serde_json::to_value(&c.secrets).unwrap(),
            json!([secret("a", "a", "id-a")])
        );
    }

    #[test]
    fn config_rm_by_name_then_add_appends() {
        let mut c =
            container(json!({"Configs": [config("a", "/a", "id-a"), config("b", "b", "id-b")]}));
        let added = vec![config_reference(&file("c", "/etc/c"), "id-c".into())];
        update_configs(&mut c, &["a".into()], added);
        assert_eq!(
            serde_json::to_value(&c.configs).unwrap(),
            json!([config("b", "b", "id-b"), config("c", "/etc/c", "id-c")])
        );
        update_configs(&mut c, &["b".into(), "c".into()], Vec::new());
        assert!(c.configs.is_none());
    }

    #[test]
    fn runtime_configs_stay_only_for_the_credential_spec() {
        let runtime =
            |name: &str, id: &str| json!({"Runtime": {}, "ConfigID": id, "ConfigName": name});
        let mut c = container(json!({
            "Configs": [runtime("cred", "id-cred"), runtime("old", "id-old"), config("a", "a", "id-a")],
            "Privileges": {"CredentialSpec": {"Config": "id-cred"}}
        }));
        // --config-rm names file references only.
        update_configs(&mut c, &["cred".into()], Vec::new());
        assert_eq!(
            serde_json::to_value(&c.configs).unwrap(),
            json!([runtime("cred", "id-cred"), config("a", "a", "id-a")])
        );
        let mut c = container(json!({"Configs": [runtime("old", "id-old")]}));
        update_configs(&mut c, &[], Vec::new());
        assert!(c.configs.is_none());
    }

    use crate::testutil::{unquote, FakeDaemon};

    #[derive(clap::Parser)]
    struct CreateCli {
        #[command(flatten)]
        args: super::super::create::CreateArgs,
    }

    #[derive(clap::Parser)]
    struct UpdateCli {
        #[command(flatten)]
        args: super::super::update::UpdateArgs,
    }

    const SECRETS: &str =
        r#"[{"ID":"id-db","Spec":{"Name":"db"}},{"ID":"id-api","Spec":{"Name":"api"}}]"#;
    const CONFIGS: &str = r#"[{"ID":"id-app","Spec":{"Name":"app"}}]"#;

    #[tokio::test]
    async fn create_sends_references_by_id() {
        use clap::Parser;
        let daemon = FakeDaemon::start(vec![
            ("/v1.41/secrets?", SECRETS),
            ("/v1.41/configs?", CONFIGS),
            ("/v1.41/services/create", r#"{"ID":"svc1"}"#),
        ]);
        let cli = CreateCli::try_parse_from([
            "create",
            "-d",
            "--no-resolve-image",
            "--secret",
            "db",
            "--secret",
            "source=api,target=/run/api,uid=33,gid=33,mode=0400",
            "--config",
            "app",
            "busybox",
        ])
        .unwrap();
        super::super::create::run(&daemon.client(), cli.args)
            .await
            .unwrap();
        let requests = daemon.requests();
        let paths: Vec<String> = requests.iter().map(|(p, _)| unquote(p)).collect();
        assert_eq!(
            paths,
            [
                r#"GET /v1.41/secrets?filters={"name":{"api":true,"db":true}}"#,
                r#"GET /v1.41/configs?filters={"name":{"app":true}}"#,
                "POST /v1.41/services/create",
            ]
        );
        let body: Value = serde_json::from_str(&requests[2].1).unwrap();
        let container = &body["TaskTemplate"]["ContainerSpec"];
        assert_eq!(
            container["Secrets"],
            json!([
                {"File": {"Name": "db", "UID": "0", "GID": "0", "Mode": 292}, "SecretID": "id-db", "SecretName": "db"},
                {"File": {"Name": "/run/api", "UID": "33", "GID": "33", "Mode": 256}, "SecretID": "id-api", "SecretName": "api"}
            ])
        );
        assert_eq!(
            container["Configs"],
            json!([{"File": {"Name": "app", "UID": "0", "GID": "0", "Mode": 292}, "ConfigID": "id-app", "ConfigName": "app"}])
        );
    }

    #[tokio::test]
    async fn create_stops_at_an_unknown_name_or_a_shared_target() {
        use clap::Parser;
        let daemon = FakeDaemon::start(vec![
            ("/v1.41/secrets?", SECRETS),
            ("/v1.41/configs?", CONFIGS),
            ("/v1.41/services/create", r#"{"ID":"svc1"}"#),
        ]);
        let run = |argv: &[&str]| {
            let cli = CreateCli::try_parse_from(argv).unwrap();
            let client = daemon.client();
            async move { super::super::create::run(&client, cli.args).await }
        };
        let err = run(&[
            "create", "-d", "--secret", "db", "--secret", "nosuch", "busybox",
        ])
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "secret not found: nosuch");
        assert_eq!(err.exit_code(), 1);
        let err = run(&[
            "create", "-d", "--secret", "db", "--config", "nosuch", "busybox",
        ])
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "config not found: nosuch");
        let err = run(&[
            "create",
            "-d",
            "--secret",
            "db",
            "--secret",
            "src=api,target=db",
            "busybox",
        ])
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "duplicate secret target for api not allowed"
        );
        assert!(
            daemon
                .requests()
                .iter()
                .all(|(path, _)| !path.contains("/services")),
            "{:?}",
            daemon.requests()
        );
        // A bad value is a flag error, before anything is asked.
        let err = CreateCli::try_parse_from(["create", "--secret", "src=a,mode=0999", "busybox"])
            .err()
            .unwrap();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(err.to_string().contains("--secret"), "{err}");
        assert!(err.to_string().contains("invalid mode specified"), "{err}");
    }

    #[tokio::test]
    async fn update_removes_by_name_and_appends_by_id() {
        use clap::Parser;
        const SERVICE: &str = r#"{"ID":"svc1","Version":{"Index":7},"Spec":{"Name":"web",
            "TaskTemplate":{"ContainerSpec":{"Image":"busybox",
              "Secrets":[{"File":{"Name":"old","UID":"0","GID":"0","Mode":292},"SecretID":"id-old","SecretName":"old"},
                         {"File":{"Name":"keep","UID":"0","GID":"0","Mode":292},"SecretID":"id-keep","SecretName":"keep"}],
              "Configs":[{"File":{"Name":"/c","UID":"0","GID":"0","Mode":292},"ConfigID":"id-c","ConfigName":"c"}]}},
            "Mode":{"Replicated":{"Replicas":1}}}}"#;
        let daemon = FakeDaemon::start(vec![
            ("/v1.41/services/web?", SERVICE),
            ("/v1.41/secrets?", SECRETS),
            ("/v1.41/configs?", CONFIGS),
            ("/v1.41/services/svc1/update", "{}"),
        ]);
        let cli = UpdateCli::try_parse_from([
            "update",
            "-d",
            "--secret-rm",
            "old",
            "--secret-add",
            "src=db,target=/db",
            "--config-rm",
            "c",
            "--config-add",
            "app",
            "web",
        ])
        .unwrap();
        super::super::update::run(&daemon.client(), cli.args)
            .await
            .unwrap();
        let requests = daemon.requests();
        let paths: Vec<String> = requests.iter().map(|(p, _)| unquote(p)).collect();
        assert_eq!(
            paths,
            [
                "GET /v1.41/services/web?insertDefaults=false",
                r#"GET /v1.41/secrets?filters={"name":{"db":true}}"#,
                r#"GET /v1.41/configs?filters={"name":{"app":true}}"#,
                "POST /v1.41/services/svc1/update?registryAuthFrom=spec&version=7",
            ]
        );
        let body: Value = serde_json::from_str(&requests[3].1).unwrap();
        let container = &body["TaskTemplate"]["ContainerSpec"];
        assert_eq!(
            container["Secrets"],
            json!([
                secret("keep", "keep", "id-keep"),
                secret("db", "/db", "id-db")
            ])
        );
        assert_eq!(
            container["Configs"],
            json!([config("app", "app", "id-app")])
        );

        // An unknown name fails before the update is posted.
        let cli =
            UpdateCli::try_parse_from(["update", "-d", "--config-add", "nosuch", "web"]).unwrap();
        let err = super::super::update::run(&daemon.client(), cli.args)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "config not found: nosuch");
        let posts = daemon
            .requests()
            .iter()
            .filter(|(p, _)| p.starts_with("POST"))
            .count();
        assert_eq!(posts, 1);
        // --rollback takes none of them.
        let cli =
            UpdateCli::try_parse_from(["update", "--rollback", "--secret-rm", "x", "web"]).unwrap();
        let err = super::super::update::run(&daemon.client(), cli.args)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "other flags may not be combined with --rollback"
        );
    }
}
