//! `--with-registry-auth`: the credentials the docker CLI sends for an
//! image, read the way it reads them (docker/cli cli/command/registry.go
//! RetrieveAuthTokenFromImage, cli/config, cli/config/credentials and
//! docker-credential-helpers' client):
//!
//! - the image's registry: distribution/reference's ParseNormalizedNamed
//!   ([`normalized_domain`]); Docker Hub's credentials are kept under
//!   `https://index.docker.io/v1/` ([`auth_config_key`]);
//! - the docker CLI's config file, `$DOCKER_CONFIG/config.json` or
//!   `~/.docker/config.json` ([`ConfigFile`]): `auths` (with `auth` holding
//!   base64 "user:password"), `credsStore` and `credHelpers`;
//! - a credential helper, `docker-credential-<name> get` with the server
//!   address on stdin ([`helper_get`]);
//! - the header: the AuthConfig as Go's encoding/json writes it, in
//!   base64url ([`encode_auth`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::Value;

use crate::client::{CliError, Result};

/// Where Docker Hub's credentials are kept in the config file.
pub const INDEX_SERVER: &str = "https://index.docker.io/v1/";

/// The header a request carries the credentials in.
pub const AUTH_HEADER: &str = "X-Registry-Auth";

/// docker's types.AuthConfig.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthConfig {
    pub username: String,
    pub password: String,
    pub auth: String,
    pub email: String,
    pub server_address: String,
    pub identity_token: String,
    pub registry_token: String,
}

impl AuthConfig {
    /// The fields by their JSON names, in the struct's order.
    fn fields(&self) -> [(&'static str, &str); 7] {
        [
            ("username", &self.username),
            ("password", &self.password),
            ("auth", &self.auth),
            ("email", &self.email),
            ("serveraddress", &self.server_address),
            ("identitytoken", &self.identity_token),
            ("registrytoken", &self.registry_token),
        ]
    }

    fn field_mut(&mut self, name: &str) -> Option<&mut String> {
        Some(match name {
            "username" => &mut self.username,
            "password" => &mut self.password,
            "auth" => &mut self.auth,
            "email" => &mut self.email,
            "serveraddress" => &mut self.server_address,
            "identitytoken" => &mut self.identity_token,
            "registrytoken" => &mut self.registry_token,
            _ => return None,
        })
    }

    /// json.Marshal of the struct: every field `omitempty`, Go's escaping.
    pub fn to_go_json(&self) -> String {
        let fields: Vec<String> = self
            .fields()
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| format!("\"{name}\":{}", go_json_string(value)))
            .collect();
        format!("{{{}}}", fields.join(","))
    }
}

/// registry.EncodeAuthConfig: base64url (padded) of the JSON.
pub fn encode_auth(auth: &AuthConfig) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(auth.to_go_json())
}

/// A JSON string as Go's encoding/json writes it: HTML characters and the
/// line and paragraph separators escaped, short escapes for \b \f \n \r \t.
fn go_json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What the lookup reads from the process: the config directory and PATH
/// (explicit, so tests need not change the process's environment).
#[derive(Debug, Clone)]
pub struct AuthEnv {
    pub config_dir: PathBuf,
    pub path: Option<OsString>,
}

impl AuthEnv {
    /// docker's config.Dir(): $DOCKER_CONFIG, else ~/.docker; and $PATH.
    pub fn from_process() -> AuthEnv {
        let config_dir = match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => crate::home::home_dir().join(".docker"),
        };
        AuthEnv {
            config_dir,
            path: std::env::var_os("PATH"),
        }
    }
}

/// The credentials part of docker's configfile.ConfigFile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigFile {
    pub auths: BTreeMap<String, AuthConfig>,
    pub creds_store: String,
    pub cred_helpers: BTreeMap<String, String>,
}

/// Go's encoding/json matches keys without regard to case (an exact
/// match first).
fn go_key<'a>(object: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn type_error(value: &Value, field: &str, want: &str) -> String {
    let got = match value {
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => "null",
    };
    format!("json: cannot unmarshal {got} into Go struct field {field} of type {want}")
}

/// A string field: null reads as nothing, another type is an error.
fn go_string(value: Option<&Value>, field: &str) -> std::result::Result<String, String> {
    match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(type_error(other, field, "string")),
    }
}

fn auth_config_from(value: &Value, field: &str) -> std::result::Result<AuthConfig, String> {
    let mut auth = AuthConfig::default();
    match value {
        Value::Null => return Ok(auth),
        Value::Object(object) => {
            for name in [
                "username",
                "password",
                "auth",
                "email",
                "serveraddress",
                "identitytoken",
                "registrytoken",
            ] {
                let text = go_string(go_key(object, name), &format!("{field}.{name}"))?;
                if let Some(slot) = auth.field_mut(name) {
                    *slot = text;
                }
            }
        }
        other => return Err(type_error(other, field, "types.AuthConfig")),
    }
    Ok(auth)
}

impl ConfigFile {
    /// configfile.LoadFromReader: the JSON, then each `auths` entry's
    /// `auth` decoded into username and password and its key made its
    /// server address. An entry whose `auth` does not decode stays as it
    /// was, and the first such error is returned with what was read.
    pub fn parse(text: &str) -> (ConfigFile, Option<String>) {
        let mut config = ConfigFile::default();
        let value: Value = match text.trim() {
            "" => return (config, None),
            trimmed => match serde_json::from_str(trimmed) {
                Ok(value) => value,
                Err(err) => return (config, Some(err.to_string())),
            },
        };
        let Value::Object(object) = &value else {
            if value.is_null() {
                return (config, None);
            }
            return (
                config,
                Some(
                    type_error(&value, "", "configfile.ConfigFile")
                        .replace("into Go struct field  of type", "into Go value of type"),
                ),
            );
        };
        match go_string(go_key(object, "credsStore"), "ConfigFile.credsStore") {
            Ok(store) => config.creds_store = store,
            Err(err) => return (ConfigFile::default(), Some(err)),
        }
        match go_key(object, "credHelpers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(helpers)) => {
                for (registry, helper) in helpers {
                    match go_string(Some(helper), "ConfigFile.credHelpers") {
                        Ok(helper) => {
                            config.cred_helpers.insert(registry.clone(), helper);
                        }
                        Err(err) => return (ConfigFile::default(), Some(err)),
                    }
                }
            }
            Some(other) => {
                let err = type_error(other, "ConfigFile.credHelpers", "map[string]string");
                return (ConfigFile::default(), Some(err));
            }
        }
        match go_key(object, "auths") {
            None | Some(Value::Null) => {}
            Some(Value::Object(auths)) => {
                for (registry, entry) in auths {
                    match auth_config_from(entry, "ConfigFile.auths") {
                        Ok(auth) => {
                            config.auths.insert(registry.clone(), auth);
                        }
                        Err(err) => return (ConfigFile::default(), Some(err)),
                    }
                }
            }
            Some(other) => {
                let err = type_error(other, "ConfigFile.auths", "map[string]types.AuthConfig");
                return (ConfigFile::default(), Some(err));
            }
        }
        let mut first_error = None;
        for (registry, auth) in config.auths.iter_mut() {
            if !auth.auth.is_empty() {
                match decode_auth(&auth.auth) {
                    Ok((username, password)) => {
                        auth.username = username;
                        auth.password = password;
                    }
                    Err(err) => {
                        first_error.get_or_insert(err);
                        continue;
                    }
                }
            }
            auth.auth.clear();
            auth.server_address = registry.clone();
        }
        (config, first_error)
    }

    /// config.LoadDefaultConfigFile: a missing file is an empty config; one
    /// that cannot be read or parsed is warned about on `warn` (docker
    /// prints "WARNING: Error ..." and goes on). With no credentials
    /// configured at all, the platform's credential store is used when its
    /// helper is installed.
    pub fn load(env: &AuthEnv, warn: &mut dyn FnMut(String)) -> ConfigFile {
        let filename = env.config_dir.join("config.json");
        let mut config = match std::fs::read(&filename) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let (config, err) = ConfigFile::parse(&text);
                if let Some(err) = err {
                    warn(format!(
                        "WARNING: Error parsing config file ({}): {err}",
                        filename.display()
                    ));
                }
                config
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => ConfigFile::default(),
            Err(err) => {
                warn(format!(
                    "WARNING: Error loading config file: open {}: {}",
                    filename.display(),
                    go_io_error(&err)
                ));
                ConfigFile::default()
            }
        };
        if !config.contains_auth() {
            config.creds_store = detect_default_store(&config.creds_store, env);
        }
        config
    }

    fn contains_auth(&self) -> bool {
        !self.creds_store.is_empty() || !self.cred_helpers.is_empty() || !self.auths.is_empty()
    }

    /// configfile.GetAuthConfig: the registry's credential helper, else
    /// the default store, else the file itself.
    pub fn get_auth_config(
        &self,
        server: &str,
        env: &AuthEnv,
    ) -> std::result::Result<AuthConfig, String> {
        let helper = match self.cred_helpers.get(server) {
            Some(helper) if !server.is_empty() => helper.as_str(),
            _ => self.creds_store.as_str(),
        };
        if helper.is_empty() {
            return Ok(self.file_get(server));
        }
        // nativeStore.Get: the file's entry (for its email), then the
        // helper's answer over it.
        let mut auth = self.file_get(server);
        let creds = helper_get(helper, server, env)?;
        auth.username = creds.username;
        auth.identity_token = creds.identity_token;
        auth.password = creds.password;
        auth.server_address = creds.server_address;
        Ok(auth)
    }

    /// fileStore.Get: the entry under `server`, else one whose key is
    /// `server` once reduced to a host name (a legacy "https://host/v1/").
    fn file_get(&self, server: &str) -> AuthConfig {
        if let Some(auth) = self.auths.get(server) {
            return auth.clone();
        }
        self.auths
            .iter()
            .find(|(key, _)| convert_to_hostname(key) == server)
            .map(|(_, auth)| auth.clone())
            .unwrap_or_default()
    }
}

/// Go's wording for the common I/O errors.
fn go_io_error(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        _ => err.to_string(),
    }
}

/// configfile's decodeAuth: base64 "user:password".
fn decode_auth(encoded: &str) -> std::result::Result<(String, String), String> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    // Go's decoder skips line breaks.
    let cleaned: String = encoded
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect();
    let decoded = engine.decode(cleaned.as_bytes()).map_err(|err| {
        let at = match err {
            base64::DecodeError::InvalidByte(at, _)
            | base64::DecodeError::InvalidLastSymbol(at, _) => at,
            base64::DecodeError::InvalidLength(at) => at,
            base64::DecodeError::InvalidPadding => cleaned.len(),
        };
        format!("illegal base64 data at input byte {at}")
    })?;
    let decoded = String::from_utf8_lossy(&decoded).into_owned();
    match decoded.split_once(':') {
        Some((username, password)) if !username.is_empty() => Ok((
            username.to_string(),
            password.trim_matches('\0').to_string(),
        )),
        _ => Err("Invalid auth configuration file".to_string()),
    }
}

/// credentials.ConvertToHostname: "https://host:port/v1/" to "host:port".
pub fn convert_to_hostname(maybe_url: &str) -> String {
    if let Some((_, rest)) = maybe_url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if !host_port.is_empty() && !host_port.starts_with(':') {
            return host_port.to_string();
        }
    }
    maybe_url.split('/').next().unwrap_or_default().to_string()
}

/// credentials.DetectDefaultStore on Linux: "pass" when `pass` is
/// installed, else "secretservice", used only when its helper is there.
fn detect_default_store(store: &str, env: &AuthEnv) -> String {
    if !store.is_empty() {
        return store.to_string();
    }
    let default = if look_path("pass", env).is_some() {
        "pass"
    } else {
        "secretservice"
    };
    if look_path(&format!("docker-credential-{default}"), env).is_some() {
        default.to_string()
    } else {
        String::new()
    }
}

/// exec.LookPath: a name with a slash as it is, else the first executable
/// file of that name in an absolute PATH directory.
fn look_path(name: &str, env: &AuthEnv) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return is_executable(&path).then_some(path);
    }
    let path = env.path.as_ref()?;
    std::env::split_paths(path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

const NOT_FOUND_MESSAGE: &str = "credentials not found in native keychain";
const MISSING_SERVER_URL: &str = "no credentials server URL";
const MISSING_USERNAME: &str = "no credentials username";
/// The user name a helper stores an identity token under.
const TOKEN_USERNAME: &str = "<token>";

/// docker-credential-helpers' client.Get plus nativeStore's reading of
/// it: runs `docker-credential-<helper> get` with the server address on
/// stdin (its stderr is the CLI's). Credentials the helper does not have
/// are none, not an error.
pub fn helper_get(
    helper: &str,
    server: &str,
    env: &AuthEnv,
) -> std::result::Result<AuthConfig, String> {
    let program = format!("docker-credential-{helper}");
    let failed = |err: &str, out: &str| {
        format!(
            "error getting credentials - err: {err}, out: `{}`",
            out.trim()
        )
    };
    let Some(path) = look_path(&program, env) else {
        let reason = if program.contains('/') {
            format!("exec: \"{program}\": no such file or directory")
        } else {
            format!("exec: \"{program}\": executable file not found in $PATH")
        };
        return Err(failed(&reason, ""));
    };
    let mut child = Command::new(&path)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            failed(
                &format!("fork/exec {}: {}", path.display(), go_io_error(&e)),
                "",
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is answered by its output.
        let _ = stdin.write_all(server.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| failed(&e.to_string(), ""))?;
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let trimmed = out.trim();
        if trimmed == NOT_FOUND_MESSAGE {
            return Ok(AuthConfig::default());
        }
        let err = if trimmed == MISSING_SERVER_URL || trimmed == MISSING_USERNAME {
            trimmed.to_string()
        } else {
            exit_text(&output.status)
        };
        return Err(failed(&err, &out));
    }
    // json.Decoder reads the first value; the fields' case does not matter.
    let value = serde_json::Deserializer::from_str(&out)
        .into_iter::<Value>()
        .next()
        .unwrap_or_else(|| {
            Err(serde_json::Error::io(
                std::io::ErrorKind::UnexpectedEof.into(),
            ))
        })
        .map_err(|e| {
            if out.trim().is_empty() {
                "EOF".to_string()
            } else {
                e.to_string()
            }
        })?;
    let (username, secret) = match &value {
        Value::Object(object) => (
            go_string(go_key(object, "Username"), "Credentials.Username")?,
            go_string(go_key(object, "Secret"), "Credentials.Secret")?,
        ),
        Value::Null => (String::new(), String::new()),
        other => return Err(type_error(other, "", "credentials.Credentials")),
    };
    let mut auth = AuthConfig {
        server_address: server.to_string(),
        ..Default::default()
    };
    if username == TOKEN_USERNAME {
        auth.identity_token = secret;
    } else {
        auth.username = username;
        auth.password = secret;
    }
    Ok(auth)
}

/// Go's ExitError text: "exit status N" or "signal: NAME".
fn exit_text(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(libc::SIGKILL) => "signal: killed".to_string(),
        Some(libc::SIGTERM) => "signal: terminated".to_string(),
        Some(libc::SIGINT) => "signal: interrupt".to_string(),
        Some(libc::SIGSEGV) => "signal: segmentation fault".to_string(),
        Some(libc::SIGPIPE) => "signal: broken pipe".to_string(),
        Some(signal) => format!("signal: {signal}"),
        None => status.to_string(),
    }
}

/// getAuthConfigKey: Docker Hub's full index address, else the registry's
/// host[:port].
pub fn auth_config_key(domain: &str) -> String {
    if domain == "docker.io" || domain == "index.docker.io" {
        INDEX_SERVER.to_string()
    } else {
        domain.to_string()
    }
}

/// RetrieveAuthTokenFromImage: the encoded credentials for the image's
/// registry (an empty `{}` when there are none), or the error docker
/// stops with.
pub fn auth_token_for_image(image: &str, env: &AuthEnv) -> Result<String> {
    let domain = normalized_domain(image).map_err(CliError::Other)?;
    let config = ConfigFile::load(env, &mut |warning| eprintln!("{warning}"));
    let auth = config
        .get_auth_config(&auth_config_key(&domain), env)
        .map_err(CliError::Other)?;
    Ok(encode_auth(&auth))
}

// ---- distribution/reference ----

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// reference.ParseNormalizedNamed(image), then its Domain(): "ubuntu" and
/// "user/repo" are on docker.io; a first component with a dot or a colon,
/// "localhost", or an upper-case one is a registry.
pub fn normalized_domain(image: &str) -> std::result::Result<String, String> {
    parse_normalized_named(image).map(|parsed| parsed.domain)
}

/// reference.ParseNormalizedNamed: the reference with its domain filled in.
pub fn parse_normalized_named(image: &str) -> std::result::Result<ParsedReference, String> {
    if is_identifier(image) {
        return Err(format!(
            "invalid repository name ({image}), cannot specify 64-byte hexadecimal strings"
        ));
    }
    let (domain, remainder) = split_docker_domain(image);
    let remote = remainder.split(':').next().unwrap_or_default();
    if remote.to_lowercase() != remote {
        return Err(format!(
            "invalid reference format: repository name ({remote}) must be lowercase"
        ));
    }
    parse_reference(&format!("{domain}/{remainder}"))
}

impl ParsedReference {
    /// reference.FamiliarString: Docker Hub's domain and "library/" left
    /// out, then ":tag" and "@digest".
    pub fn familiar_string(&self) -> String {
        let mut text = if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.path.clone(),
            }
        } else {
            format!("{}/{}", self.domain, self.path)
        };
        if let Some(tag) = &self.tag {
            text = format!("{text}:{tag}");
        }
        if let Some(digest) = &self.digest {
            text = format!("{text}@{digest}");
        }
        text
    }
}

/// The docker client's imageWithTagString: ":latest" added to a bare
/// name, in its familiar form; None when it does not parse.
pub fn image_with_tag(image: &str) -> Option<String> {
    let mut parsed = parse_normalized_named(image).ok()?;
    if parsed.tag.is_none() && parsed.digest.is_none() {
        parsed.tag = Some("latest".to_string());
    }
    Some(parsed.familiar_string())
}

/// The docker client's imageWithDigestString: the digest added to a
/// reference without one (its tag kept); anything else as it was.
pub fn image_with_digest(image: &str, digest: &str) -> String {
    match parse_normalized_named(image) {
        Ok(mut parsed) if parsed.digest.is_none() && validate_digest(digest).is_ok() => {
            parsed.digest = Some(digest.to_string());
            parsed.familiar_string()
        }
        _ => image.to_string(),
    }
}

fn split_docker_domain(name: &str) -> (String, String) {
    let Some((maybe_domain, maybe_remote)) = name.split_once('/') else {
        return (
            DEFAULT_DOMAIN.to_string(),
            format!("{OFFICIAL_REPO_PREFIX}{name}"),
        );
    };
    let (domain, mut remote) = if maybe_domain == LEGACY_DEFAULT_DOMAIN {
        (DEFAULT_DOMAIN.to_string(), maybe_remote.to_string())
    } else if maybe_domain == "localhost"
        || maybe_domain.contains(['.', ':'])
        || maybe_domain.to_lowercase() != maybe_domain
    {
        (maybe_domain.to_string(), maybe_remote.to_string())
    } else {
        (DEFAULT_DOMAIN.to_string(), name.to_string())
    };
    if domain == DEFAULT_DOMAIN && !remote.contains('/') {
        remote = format!("{OFFICIAL_REPO_PREFIX}{remote}");
    }
    (domain, remote)
}

/// A reference as reference.Parse splits it.
#[derive(Debug, PartialEq)]
pub struct ParsedReference {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// reference.Parse: the grammar's ReferenceRegexp, then the name's length
/// and the digest's algorithm.
pub fn parse_reference(text: &str) -> std::result::Result<ParsedReference, String> {
    let Some(parsed) = match_reference(text) else {
        if text.is_empty() {
            return Err("repository name must have at least one component".into());
        }
        if match_reference(&text.to_lowercase()).is_some() {
            return Err("repository name must be lowercase".into());
        }
        return Err("invalid reference format".into());
    };
    if parsed.path.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(format!(
            "repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
        ));
    }
    if let Some(digest) = &parsed.digest {
        validate_digest(digest)?;
    }
    Ok(parsed)
}

/// `name(:tag)?(@digest)?` with the name split into domain and path as
/// anchoredNameRegexp captures them (a domain whenever one can be read).
fn match_reference(text: &str) -> Option<ParsedReference> {
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (text, None),
    };
    if digest.is_some_and(|d| !is_digest_pattern(d)) {
        return None;
    }
    let last_slash = rest.rfind('/');
    let (name, tag) = match rest.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
            (&rest[..colon], Some(&rest[colon + 1..]))
        }
        _ => (rest, None),
    };
    if tag.is_some_and(|t| !is_tag(t)) {
        return None;
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, path)) if is_domain_and_port(first) && is_remote_name(path) => {
            (first.to_string(), path.to_string())
        }
        _ if is_remote_name(name) => (String::new(), name.to_string()),
        _ => return None,
    };
    Some(ParsedReference {
        domain,
        path,
        tag: tag.map(str::to_string),
        digest: digest.map(str::to_string),
    })
}

fn is_identifier(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'a'..=b'f' | b'0'..=b'9'))
}

/// pathComponent: `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn is_path_component(text: &str) -> bool {
    let bytes = text.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let sep_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &text[sep_start..i];
        let valid = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !valid {
            return false;
        }
    }
}

/// remoteName: path components joined by "/".
fn is_remote_name(text: &str) -> bool {
    text.split('/').all(is_path_component)
}

/// domainNameComponent: `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_domain_component(text: &str) -> bool {
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

/// domainAndPort: a domain name or a bracketed IPv6 address, then an
/// optional ":port".
fn is_domain_and_port(text: &str) -> bool {
    let (host, port) = if text.starts_with('[') {
        let Some(end) = text.find(']') else {
            return false;
        };
        let (host, rest) = text.split_at(end + 1);
        let inner = &host[1..host.len() - 1];
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match rest.strip_prefix(':') {
            Some(port) => (None, Some(port)),
            None if rest.is_empty() => (None, None),
            None => return false,
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(text), None),
        }
    };
    if let Some(host) = host {
        if !host.split('.').all(is_domain_component) {
            return false;
        }
    }
    port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// tag: `[\w][\w.-]{0,127}`.
fn is_tag(text: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|b| word(*b) || *b == b'.' || *b == b'-')
}

/// digestPat: `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}`.
fn is_digest_pattern(text: &str) -> bool {
    let Some((algorithm, hex)) = text.split_once(':') else {
        return false;
    };
    let component = |c: &str| {
        let bytes = c.as_bytes();
        !bytes.is_empty()
            && bytes[0].is_ascii_alphabetic()
            && bytes.iter().all(|b| b.is_ascii_alphanumeric())
    };
    algorithm.split(['-', '_', '+', '.']).all(component)
        && hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// go-digest's Digest.Validate for the algorithms docker knows.
fn validate_digest(digest: &str) -> std::result::Result<(), String> {
    const INVALID_FORMAT: &str = "invalid checksum digest format";
    let Some((algorithm, encoded)) = digest
        .split_once(':')
        .filter(|(a, e)| !a.is_empty() && !e.is_empty())
    else {
        return Err(INVALID_FORMAT.into());
    };
    let size = match algorithm {
        "sha256" => 32,
        "sha384" => 48,
        "sha512" => 64,
        _ => {
            // DigestRegexpAnchored decides between the two errors.
            let lower_component = |c: &str| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            };
            let known_shape = algorithm.split(['.', '+', '_', '-']).all(lower_component)
                && encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
            return Err(if known_shape {
                "unsupported digest algorithm".into()
            } else {
                INVALID_FORMAT.into()
            });
        }
    };
    if encoded.len() != size * 2 {
        return Err("invalid checksum digest length".into());
    }
    if !encoded
        .bytes()
        .all(|b| matches!(b, b'a'..=b'f' | b'0'..=b'9'))
    {
        return Err(INVALID_FORMAT.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn registry_of_an_image_follows_docker() {
        let hex = "a".repeat(64);
        let cases = [
            ("busybox", "docker.io"),
            ("busybox:1.36", "docker.io"),
            ("library/busybox", "docker.io"),
            ("user/repo:tag", "docker.io"),
            ("foo_bar/baz", "docker.io"),
            ("docker.io/user/repo", "docker.io"),
            ("index.docker.io/user/repo", "docker.io"),
            ("localhost/foo", "localhost"),
            ("localhost:5000/foo:tag", "localhost:5000"),
            ("example:5000/x", "example:5000"),
            ("127.0.0.1:5000/x", "127.0.0.1:5000"),
            ("[::1]:5000/x", "[::1]:5000"),
            ("registry.example.com/team/app", "registry.example.com"),
            ("Registry.Example.com/app", "Registry.Example.com"),
            ("FOO/bar", "FOO"),
            ("foo/bar:Tag_1.0-rc", "docker.io"),
        ];
        for (image, domain) in cases {
            assert_eq!(normalized_domain(image).as_deref(), Ok(domain), "{image}");
        }
        let pinned = format!("registry.example.com/app:1@sha256:{hex}");
        assert_eq!(
            normalized_domain(&pinned).as_deref(),
            Ok("registry.example.com")
        );
        let pinned = format!("busybox@sha256:{hex}");
        assert_eq!(normalized_domain(&pinned).as_deref(), Ok("docker.io"));

        assert_eq!(auth_config_key("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(
            auth_config_key("index.docker.io"),
            "https://index.docker.io/v1/"
        );
        assert_eq!(auth_config_key("localhost:5000"), "localhost:5000");
    }

    #[test]
    fn bad_references_fail_with_docker_words() {
        let hex = "0123456789abcdef".repeat(4);
        let cases = [
            (
                "Busybox".to_string(),
                "invalid reference format: repository name (library/Busybox) must be lowercase",
            ),
            (
                "user/Repo:tag".to_string(),
                "invalid reference format: repository name (user/Repo) must be lowercase",
            ),
            (
                hex.clone(),
                "invalid repository name (0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef), cannot specify 64-byte hexadecimal strings",
            ),
            ("busybox:".to_string(), "invalid reference format"),
            ("".to_string(), "invalid reference format"),
            ("a..b/c".to_string(), "invalid reference format"),
            ("foo/bar-/baz".to_string(), "invalid reference format"),
            ("busybox@sha256:abc".to_string(), "invalid reference format"),
            (
                format!("busybox@sha256:{}", "a".repeat(40)),
                "invalid checksum digest length",
            ),
            (
                format!("busybox@md5:{}", "a".repeat(32)),
                "unsupported digest algorithm",
            ),
            (
                format!("busybox@sha256:{}", "A".repeat(64)),
                "invalid checksum digest format",
            ),
            (
                format!("x/{}", "a".repeat(300)),
                "repository name must not be more than 255 characters",
            ),
        ];
        for (image, err) in cases {
            assert_eq!(normalized_domain(&image), Err(err.to_string()), "{image}");
        }
    }

    #[test]
    fn path_components_and_domains() {
        for ok in ["a", "a.b", "a_b", "a__b", "a---b", "a1-b2.c3"] {
            assert!(is_path_component(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a___b", "a._b", "A", "a/b"] {
            assert!(!is_path_component(bad), "{bad}");
        }
        for ok in ["a", "a.b", "A-b.c:5000", "[::1]", "[fe80::1]:443"] {
            assert!(is_domain_and_port(ok), "{ok}");
        }
        for bad in ["-a", "a.", "a:", "a:x", "[]", "[::1", "[g::1]", "a_b"] {
            assert!(!is_domain_and_port(bad), "{bad}");
        }
        assert!(is_tag(&"a".repeat(128)));
        assert!(!is_tag(&"a".repeat(129)));
        assert!(!is_tag(".a"));
    }

    #[test]
    fn auth_config_is_go_json_in_base64url() {
        assert_eq!(encode_auth(&AuthConfig::default()), "e30=");
        let auth = AuthConfig {
            username: "user".into(),
            password: "pa<ss>&?".into(),
            server_address: INDEX_SERVER.into(),
            ..Default::default()
        };
        assert_eq!(
            auth.to_go_json(),
            r#"{"username":"user","password":"pa\u003css\u003e\u0026?","serveraddress":"https://index.docker.io/v1/"}"#
        );
        // '_' where standard base64 has '/': the URL alphabet, padded.
        assert_eq!(
            encode_auth(&auth),
            "eyJ1c2VybmFtZSI6InVzZXIiLCJwYXNzd29yZCI6InBhXHUwMDNjc3NcdTAwM2VcdTAwMjY_Iiwic2VydmVyYWRkcmVzcyI6Imh0dHBzOi8vaW5kZXguZG9ja2VyLmlvL3YxLyJ9"
        );
        let all = AuthConfig {
            username: "u".into(),
            password: "p\"\\\n\t\u{1}\u{8}\u{2028}é".into(),
            auth: "a".into(),
            email: "e".into(),
            server_address: "s".into(),
            identity_token: "i".into(),
            registry_token: "r".into(),
        };
        assert_eq!(
            all.to_go_json(),
            "{\"username\":\"u\",\"password\":\"p\\\"\\\\\\n\\t\\u0001\\b\\u2028é\",\"auth\":\"a\",\"email\":\"e\",\"serveraddress\":\"s\",\"identitytoken\":\"i\",\"registrytoken\":\"r\"}"
        );
    }

    fn env_in(dir: &Path) -> AuthEnv {
        AuthEnv {
            config_dir: dir.to_path_buf(),
            path: Some(dir.as_os_str().to_owned()),
        }
    }

    fn write_config(dir: &Path, text: &str) {
        std::fs::write(dir.join("config.json"), text).unwrap();
    }

    fn lookup(dir: &Path, image: &str) -> std::result::Result<AuthConfig, String> {
        let env = env_in(dir);
        let config = ConfigFile::load(&env, &mut |w| panic!("unexpected warning {w}"));
        let key = auth_config_key(&normalized_domain(image)?);
        config.get_auth_config(&key, &env)
    }

    #[test]
    fn credentials_from_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        write_config(
            dir.path(),
            r#"{
                "auths": {
                    "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
                    "registry.example.com": {"auth": "Ym9iOnNlY3JldDp3aXRoOmNvbG9ucw==", "email": "b@x"},
                    "https://legacy.example.org/v1/": {"Auth": "bGVnOmFjeQ=="},
                    "tok.example.com": {"identitytoken": "tkn"}
                },
                "psFormat": "table {{.ID}}"
            }"#,
        );
        let hub = lookup(dir.path(), "busybox:latest").unwrap();
        assert_eq!(
            hub,
            AuthConfig {
                username: "user".into(),
                password: "pass".into(),
                server_address: INDEX_SERVER.into(),
                ..Default::default()
            }
        );
        assert_eq!(lookup(dir.path(), "user/app").unwrap(), hub);
        let private = lookup(dir.path(), "registry.example.com/team/app:1").unwrap();
        assert_eq!(
            private.to_go_json(),
            r#"{"username":"bob","password":"secret:with:colons","email":"b@x","serveraddress":"registry.example.com"}"#
        );
        // A legacy "https://host/v1/" key serves its host.
        let legacy = lookup(dir.path(), "legacy.example.org/x").unwrap();
        assert_eq!(
            (legacy.username.as_str(), legacy.server_address.as_str()),
            ("leg", "https://legacy.example.org/v1/")
        );
        let token = lookup(dir.path(), "tok.example.com/x").unwrap();
        assert_eq!(
            encode_auth(&token),
            "eyJzZXJ2ZXJhZGRyZXNzIjoidG9rLmV4YW1wbGUuY29tIiwiaWRlbnRpdHl0b2tlbiI6InRrbiJ9"
        );
        // None for that registry: empty credentials, sent as "{}".
        let none = lookup(dir.path(), "other.example.com/x").unwrap();
        assert_eq!(encode_auth(&none), "e30=");
    }

    #[test]
    fn config_files_docker_warns_about() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path());
        let mut warnings = Vec::new();
        // No file: nothing configured, nothing said.
        let config = ConfigFile::load(&env, &mut |w| warnings.push(w));
        assert_eq!(config, ConfigFile::default());
        assert!(warnings.is_empty());

        write_config(dir.path(), "{not json");
        let config = ConfigFile::load(&env, &mut |w| warnings.push(w));
        assert_eq!(config, ConfigFile::default());
        let file = dir.path().join("config.json");
        assert!(warnings[0].starts_with(&format!(
            "WARNING: Error parsing config file ({}): ",
            file.display()
        )));

        warnings.clear();
        write_config(
            dir.path(),
            r#"{"auths": {"bad.example.com": {"auth": "Om5vdXNlcg=="}, "good.example.com": {"auth": "dXNlcjpwYXNz"}}}"#,
        );
        let config = ConfigFile::load(&env, &mut |w| warnings.push(w));
        assert_eq!(
            warnings,
            [format!(
                "WARNING: Error parsing config file ({}): Invalid auth configuration file",
                file.display()
            )]
        );
        assert_eq!(config.auths["good.example.com"].username, "user");

        warnings.clear();
        write_config(dir.path(), r#"{"auths": {"x": {"auth": "!!"}}}"#);
        ConfigFile::load(&env, &mut |w| warnings.push(w));
        assert!(warnings[0].ends_with(": illegal base64 data at input byte 0"));

        warnings.clear();
        write_config(dir.path(), r#"{"credsStore": 5}"#);
        ConfigFile::load(&env, &mut |w| warnings.push(w));
        assert!(warnings[0].ends_with(
            ": json: cannot unmarshal number into Go struct field ConfigFile.credsStore of type string"
        ));
    }

    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// One test for every helper case, so that the scripts are all written
    /// before any is run (a script still open for writing in a forked child
    /// cannot be executed).
    #[test]
    fn credentials_from_helpers() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        script(
            d,
            "docker-credential-test",
            r#"[ "$1" = get ] || exit 3
server=$(cat)
printf '%s' "$server" > "$0.asked"
case "$server" in
  registry.example.com) printf '{"ServerURL":"%s","Username":"alice","Secret":"s3cret"}\n' "$server" ;;
  tokens.example.com) printf '{"ServerURL":"%s","Username":"<token>","Secret":"idtok"}' "$server" ;;
  https://index.docker.io/v1/) printf '{"username":"hub","secret":"hubpw"}' ;;
  broken.example.com) echo "something bad"; exit 1 ;;
  nourl.example.com) echo "no credentials server URL"; exit 1 ;;
  garbage.example.com) echo "not json" ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"#,
        );
        script(
            d,
            "docker-credential-secretservice",
            r#"cat >/dev/null; printf '{"Username":"default","Secret":"store"}'"#,
        );
        write_config(
            d,
            r#"{
                "credsStore": "test",
                "credHelpers": {"special.example.com": "missing"},
                "auths": {"registry.example.com": {"email": "alice@example.com"}}
            }"#,
        );
        let alice = lookup(d, "registry.example.com/team/app").unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("docker-credential-test.asked")).unwrap(),
            "registry.example.com"
        );
        assert_eq!(
            alice.to_go_json(),
            r#"{"username":"alice","password":"s3cret","email":"alice@example.com","serveraddress":"registry.example.com"}"#
        );
        let token = lookup(d, "tokens.example.com/app").unwrap();
        assert_eq!(
            token.to_go_json(),
            r#"{"serveraddress":"tokens.example.com","identitytoken":"idtok"}"#
        );
        let hub = lookup(d, "busybox").unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("docker-credential-test.asked")).unwrap(),
            INDEX_SERVER
        );
        assert_eq!(
            hub.to_go_json(),
            r#"{"username":"hub","password":"hubpw","serveraddress":"https://index.docker.io/v1/"}"#
        );
        // Credentials the helper does not have are none.
        assert_eq!(
            encode_auth(&lookup(d, "unknown.example.com/x").unwrap()),
            "e30="
        );
        assert_eq!(
            lookup(d, "broken.example.com/x"),
            Err("error getting credentials - err: exit status 1, out: `something bad`".into())
        );
        assert_eq!(
            lookup(d, "nourl.example.com/x"),
            Err("error getting credentials - err: no credentials server URL, out: `no credentials server URL`".into())
        );
        assert!(lookup(d, "garbage.example.com/x").is_err());
        assert_eq!(
            lookup(d, "special.example.com/x"),
            Err("error getting credentials - err: exec: \"docker-credential-missing\": executable file not found in $PATH, out: ``".into())
        );

        // No credentials configured at all: the platform's store, when its
        // helper is installed ("secretservice" without `pass`).
        write_config(d, "{}");
        let default = lookup(d, "busybox").unwrap();
        assert_eq!(
            (default.username.as_str(), default.password.as_str()),
            ("default", "store")
        );
        // With `pass` installed docker looks for docker-credential-pass,
        // absent here: then the file, empty.
        script(d, "pass", "exit 0");
        assert_eq!(lookup(d, "busybox").unwrap(), AuthConfig::default());

        // The whole path of RetrieveAuthTokenFromImage.
        write_config(d, r#"{"credsStore": "test"}"#);
        assert_eq!(
            auth_token_for_image("registry.example.com/app", &env_in(d)).unwrap(),
            encode_auth(&AuthConfig {
                username: "alice".into(),
                password: "s3cret".into(),
                server_address: "registry.example.com".into(),
                ..Default::default()
            })
        );
        assert_eq!(
            auth_token_for_image("Bad", &env_in(d))
                .unwrap_err()
                .to_string(),
            "invalid reference format: repository name (library/Bad) must be lowercase"
        );
    }

    #[test]
    fn hostnames_of_config_keys() {
        assert_eq!(
            convert_to_hostname("https://index.docker.io/v1/"),
            "index.docker.io"
        );
        assert_eq!(
            convert_to_hostname("http://localhost:5000/v2/"),
            "localhost:5000"
        );
        assert_eq!(
            convert_to_hostname("registry.example.com/v1/"),
            "registry.example.com"
        );
        assert_eq!(convert_to_hostname("example.com"), "example.com");
    }

    #[test]
    fn tags_and_digests_as_the_docker_client_adds_them() {
        let digest = format!("sha256:{}", "b".repeat(64));
        let cases = [
            ("busybox", Some("busybox:latest")),
            ("busybox:1", Some("busybox:1")),
            ("docker.io/library/busybox", Some("busybox:latest")),
            ("index.docker.io/user/app", Some("user/app:latest")),
            ("library/a/b", Some("library/a/b:latest")),
            ("localhost:5000/app", Some("localhost:5000/app:latest")),
            ("Bad", None),
        ];
        for (image, tagged) in cases {
            assert_eq!(image_with_tag(image).as_deref(), tagged, "{image}");
        }
        let pinned = format!("busybox@{digest}");
        assert_eq!(image_with_tag(&pinned), Some(pinned.clone()));
        assert_eq!(
            image_with_digest("busybox:latest", &digest),
            format!("busybox:latest@{digest}")
        );
        assert_eq!(
            image_with_digest("registry.example.com/app", &digest),
            format!("registry.example.com/app@{digest}")
        );
        assert_eq!(image_with_digest(&pinned, "sha256:other"), pinned);
    }
}
