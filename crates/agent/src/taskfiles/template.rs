//! Templated secrets and configs (`Templating: {"Name": "golang"}`),
//! expanded as SwarmKit's agent expands them: Go templates over the
//! service, node and task (`{{.Service.Name}}`, `{{.Node.Hostname}}`,
//! `{{.Task.Slot}}`…), with the functions `env` (the task's environment),
//! `secret` and `config` (the data of another file of the same task, by
//! its target) and `join`, besides Go's plain built-ins. A missing field
//! is an error, as with SwarmKit's `missingkey=error`.

use flotilla_gotemplate::{go_builtin, go_string, Functions, Mode, Template, GO_BUILTINS};
use flotilla_store::models::Task;
use flotilla_store::secrets::{DataKind, NodeData};
use flotilla_store::state::TaskExt;
use serde_json::{json, Value};

use super::NodeInfo;

pub fn expand(raw: &[u8], task: &Task, node: &NodeInfo, data: &NodeData) -> Result<String, String> {
    let source =
        std::str::from_utf8(raw).map_err(|_| "the template is not UTF-8 text".to_string())?;
    let funcs = TaskFunctions { task, data };
    let template = Template::parse_with(source, &funcs)?;
    template.execute_with(&context(task, node), Mode::Strict, &funcs)
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

struct TaskFunctions<'a> {
    task: &'a Task,
    data: &'a NodeData,
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
            .and_then(|id| self.data.get(kind, id))
            .ok_or_else(|| format!("{} target {target} not found", kind.name()))?;
        let bytes = super::decode(&object.data).map_err(|e| e.to_string())?;
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
        matches!(name, "env" | "secret" | "config" | "join") || GO_BUILTINS.contains(&name)
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
