//! Go templates in what a task is given, expanded on the node as
//! SwarmKit's agent expands them, over the service, node and task
//! (`{{.Service.Name}}`, `{{.Node.Hostname}}`, `{{.Task.Slot}}`…); a
//! missing field is an error, as with SwarmKit's `missingkey=error`:
//!
//! - the container spec's environment values, hostname and mounts
//!   (`docker service create --hostname '{{.Node.Hostname}}'`), with `join`
//!   besides Go's plain built-ins;
//! - templated secrets and configs (`Templating: {"Name": "golang"}`),
//!   which may also call `env` (the task's environment), `secret` and
//!   `config` (the data of another file of the same task, by its target).

use flotilla_gotemplate::{go_builtin, go_string, Functions, Mode, Template, GO_BUILTINS};
use flotilla_store::models::Task;
use flotilla_store::secrets::{DataKind, NodeData};
use flotilla_store::state::TaskExt;
use serde_json::{json, Value};

/// What templates may ask about the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub hostname: String,
    pub os: String,
    pub architecture: String,
}

/// A secret's or config's data, expanded for `task` on `node`.
pub fn expand_payload(
    raw: &[u8],
    task: &Task,
    node: &NodeInfo,
    data: &NodeData,
) -> Result<String, String> {
    let source =
        std::str::from_utf8(raw).map_err(|_| "the template is not UTF-8 text".to_string())?;
    let funcs = TaskFunctions {
        task,
        data: Some(data),
    };
    let template = Template::parse_with(source, &funcs)?;
    template.execute_with(&context(task, node), Mode::Strict, &funcs)
}

/// The task with its container spec's templates expanded: environment
/// values, hostname, mount sources and targets, volume labels and driver
/// options (SwarmKit's ExpandContainerSpec). Text without `{{` is left
/// as it is.
pub fn expand_container_spec(task: &Task, node: &NodeInfo) -> Result<Task, String> {
    let Some(spec) = task.spec.as_ref().and_then(|s| s.container_spec.as_ref()) else {
        return Ok(task.clone());
    };
    let cx = context(task, node);
    let funcs = TaskFunctions { task, data: None };
    let expand = |what: &str, text: &str| -> Result<String, String> {
        if !text.contains("{{") {
            return Ok(text.to_string());
        }
        Template::parse_with(text, &funcs)
            .and_then(|t| t.execute_with(&cx, Mode::Strict, &funcs))
            .map_err(|e| format!("expanding {what} {text:?}: {e}"))
    };
    let mut spec = spec.clone();
    for entry in spec.env.iter_mut().flatten() {
        if let Some((name, value)) = entry.split_once('=') {
            *entry = format!("{name}={}", expand("env", value)?);
        }
    }
    if let Some(hostname) = spec.hostname.as_mut() {
        *hostname = expand("hostname", hostname)?;
    }
    for mount in spec.mounts.iter_mut().flatten() {
        for field in [&mut mount.source, &mut mount.target].into_iter().flatten() {
            *field = expand("mount", field)?;
        }
        if let Some(v) = mount.volume_options.as_mut() {
            for value in v.labels.iter_mut().flat_map(|m| m.values_mut()) {
                *value = expand("volume label", value)?;
            }
            let options = v.driver_config.as_mut().and_then(|d| d.options.as_mut());
            for value in options.into_iter().flat_map(|m| m.values_mut()) {
                *value = expand("volume driver option", value)?;
            }
        }
    }
    let mut task = task.clone();
    if let Some(s) = task.spec.as_mut().map(std::sync::Arc::make_mut) {
        s.container_spec = Some(spec);
    }
    Ok(task)
}

/// SwarmKit's template context for a task on a node.
fn context(task: &Task, node: &NodeInfo) -> Value {
    let node_id = task.node_id.clone().unwrap_or_default();
    let service = task.runtime.service_name.clone().unwrap_or_default();
    // Like SwarmKit's: a task without a slot (a global service's) uses
    // its node's ID.
    let slot = match task.slot {
        Some(n) if n != 0 => n.to_string(),
        _ => node_id.clone(),
    };
    json!({
        "Service": {
            "ID": task.service_id.clone().unwrap_or_default(),
            "Name": service,
            "Labels": task.runtime.service_labels,
        },
        "Node": {
            "ID": node_id,
            "Hostname": node.hostname,
            "Platform": {"Architecture": node.architecture, "OS": node.os},
        },
        "Task": {
            "ID": task.id_str(),
            "Name": format!("{service}.{slot}.{}", task.id_str()),
            "Slot": slot,
        },
    })
}

/// The functions a template may call: payloads get `env`, `secret` and
/// `config` (`data` is set), container specs only `join` and Go's.
struct TaskFunctions<'a> {
    task: &'a Task,
    data: Option<&'a NodeData>,
}

impl TaskFunctions<'_> {
    /// The data of the task's secret or config whose file is `target`:
    /// only the task's own references can be read.
    fn file_data(&self, kind: DataKind, target: &str) -> Result<Value, String> {
        let container = self
            .task
            .spec
            .as_ref()
            .and_then(|s| s.container_spec.as_ref());
        let id = container.and_then(|c| match kind {
            DataKind::Secret => c.secrets.iter().flatten().find_map(|r| {
                r.file
                    .as_ref()
                    .filter(|f| f.name.as_deref() == Some(target))
                    .and(r.secret_id.as_deref())
            }),
            DataKind::Config => c.configs.iter().flatten().find_map(|r| {
                r.file
                    .as_ref()
                    .filter(|f| f.name.as_deref() == Some(target))
                    .and(r.config_id.as_deref())
            }),
        });
        let object = id
            .zip(self.data)
            .and_then(|(id, data)| data.get(kind, id))
            .ok_or_else(|| format!("{} target {target} not found", kind.name()))?;
        let bytes = object.bytes().map_err(|e| e.to_string())?;
        Ok(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn env(&self, name: &str) -> Value {
        let env = self
            .task
            .spec
            .as_ref()
            .and_then(|s| s.container_spec.as_ref())
            .and_then(|c| c.env.as_ref());
        let found = env.into_iter().flatten().find_map(|entry| {
            entry
                .split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        });
        Value::String(found.unwrap_or_default())
    }
}

impl Functions for TaskFunctions<'_> {
    fn has(&self, name: &str) -> bool {
        let payload = self.data.is_some() && matches!(name, "env" | "secret" | "config");
        payload || name == "join" || GO_BUILTINS.contains(&name)
    }

    fn call(&self, name: &str, args: &[Value]) -> Result<Value, String> {
        let one = || match args {
            [arg] => Ok(go_string(arg)),
            _ => Err(format!(
                "wrong number of args for {name}: want 1 got {}",
                args.len()
            )),
        };
        match name {
            "env" => Ok(self.env(&one()?)),
            "secret" => self.file_data(DataKind::Secret, &one()?),
            "config" => self.file_data(DataKind::Config, &one()?),
            // SwarmKit's join: the separator first, then the strings.
            "join" => match args.split_first() {
                Some((sep, items)) => Ok(Value::String(
                    items
                        .iter()
                        .map(go_string)
                        .collect::<Vec<_>>()
                        .join(&go_string(sep)),
                )),
                None => Err("wrong number of args for join: want at least 1 got 0".into()),
            },
            other => go_builtin(other, args)
                .unwrap_or_else(|| Err(format!("function \"{other}\" not defined"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::models::{Mount, TaskSpec, TaskSpecContainerSpec};

    #[test]
    fn container_specs_expand_env_hostname_and_mounts_and_nothing_else() {
        let mut task = Task {
            id: Some("t1".into()),
            service_id: Some("s1".into()),
            node_id: Some("n1".into()),
            slot: Some(2),
            spec: Some(std::sync::Arc::new(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some("busybox".into()),
                    hostname: Some("{{.Node.Hostname}}-{{.Service.Name}}".into()),
                    env: Some(vec![
                        "SLOT={{.Task.Slot}}".into(),
                        "NAME={{.Task.Name}}".into(),
                        "JOINED={{join \"-\" .Node.ID .Task.Slot}}".into(),
                        "PLAIN=a{b}".into(),
                        "UNSET".into(),
                    ]),
                    mounts: Some(vec![Mount {
                        source: Some("data-{{.Task.Slot}}".into()),
                        target: Some("/data".into()),
                        ..Default::default()
                    }]),
                    args: Some(vec!["{{.Task.Slot}}".into()]),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        task.runtime.service_name = Some("web".into());
        let node = NodeInfo {
            id: "n1".into(),
            hostname: "worker01".into(),
            ..Default::default()
        };
        let out = expand_container_spec(&task, &node).unwrap();
        let c = out.spec.unwrap().container_spec.clone().unwrap();
        assert_eq!(c.hostname.as_deref(), Some("worker01-web"));
        assert_eq!(
            c.env.unwrap(),
            [
                "SLOT=2",
                "NAME=web.2.t1",
                "JOINED=n1-2",
                "PLAIN=a{b}",
                "UNSET"
            ]
        );
        assert_eq!(c.mounts.unwrap()[0].source.as_deref(), Some("data-2"));
        // Only what SwarmKit expands: arguments are the program's.
        assert_eq!(c.args.unwrap(), ["{{.Task.Slot}}"]);
        // A bad template rejects the task, saying which field.
        task.spec
            .as_mut()
            .map(std::sync::Arc::make_mut)
            .unwrap()
            .container_spec
            .as_mut()
            .unwrap()
            .hostname = Some("{{.Nope}}".into());
        let e = expand_container_spec(&task, &node).unwrap_err();
        assert!(e.starts_with("expanding hostname \"{{.Nope}}\""), "{e}");
        // Payload functions are not there.
        task.spec
            .as_mut()
            .map(std::sync::Arc::make_mut)
            .unwrap()
            .container_spec
            .as_mut()
            .unwrap()
            .hostname = Some("{{secret \"x\"}}".into());
        assert!(expand_container_spec(&task, &node).is_err());
    }
}
