//! `stack deploy`: docker/cli's deployCompose (cli/command/stack/swarm),
//! plus depends_on, which docker ignores: services are created in
//! dependency order, and a service waits for what its dependencies'
//! `condition` asks before it is created or updated.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{json, Value};

use super::convert::{self, Condition, Converted, Namespace, LABEL_IMAGE};
use super::{stack_filter, DeployArgs};
use crate::client::{
    add_filter, decode, encode, filters_pair, query, CliError, Client, Filters, Result,
};
use crate::out;
use crate::registry::{auth_token_for_image, AuthEnv, AUTH_HEADER};

const RESOLVE_ALWAYS: &str = "always";
const RESOLVE_CHANGED: &str = "changed";
const RESOLVE_NEVER: &str = "never";
const POLL: Duration = Duration::from_millis(500);

pub async fn run(client: &Client, args: DeployArgs, detach_given: bool) -> Result<()> {
    run_with(client, args, detach_given, &AuthEnv::from_process()).await
}

/// `run` with the registry credentials (--with-registry-auth) looked up in
/// `env`.
pub async fn run_with(
    client: &Client,
    args: DeployArgs,
    detach_given: bool,
    auth: &AuthEnv,
) -> Result<()> {
    super::validate_stack_name(&args.stack)?;
    let files: Vec<String> = args
        .compose_file
        .iter()
        .flat_map(|f| f.split(','))
        .map(str::to_string)
        .collect();
    let loaded = super::loader::load(&files, &mut std::io::stdin())?;
    for (service, keys) in &loaded.unsupported {
        eprintln!(
            "Ignoring unsupported options for service {service}: {}",
            keys.join(", ")
        );
    }
    if !matches!(
        args.resolve_image.as_str(),
        RESOLVE_ALWAYS | RESOLVE_CHANGED | RESOLVE_NEVER
    ) {
        return Err(format!(
            "Invalid option {} for flag --resolve-image",
            args.resolve_image
        )
        .into());
    }
    if args.detached() && !detach_given {
        eprintln!("Since --detach=false was not specified, tasks will be created in the background.\nIn a future release, --detach=false will become the default.");
    }
    check_manager(client).await?;
    let ns = Namespace(args.stack.clone());
    let env = loaded.env.clone();
    let converted = convert::convert(&ns, &loaded.compose, &|k| env.get(k).cloned())?;
    let dependencies = convert::dependencies(&loaded.compose);
    let order = start_order(&dependencies)?;

    // Everything that can fail without writing is checked first.
    validate_external_networks(client, &converted.external_networks).await?;
    check_external_objects(client, "secret", &converted.external_secrets).await?;
    check_external_objects(client, "config", &converted.external_configs).await?;

    if args.prune {
        let keep: BTreeSet<String> = converted.services.keys().cloned().collect();
        prune_services(client, &ns, &keep).await;
    }
    create_networks(client, &ns, &converted).await?;
    create_objects(client, "secret", &converted.secrets).await?;
    create_objects(client, "config", &converted.configs).await?;
    let auth_env = args.with_registry_auth.then_some(auth);
    let ids = deploy_services(
        client,
        &ns,
        converted,
        &order,
        &dependencies,
        &args.resolve_image,
        auth_env,
    )
    .await?;
    if args.detached() {
        return Ok(());
    }
    let mut errors = Vec::new();
    for id in ids {
        if let Err(err) = crate::progress::wait_on_service(client, &id, args.quiet).await {
            errors.push(format!("{id}: {err}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(errors.join("\n")))
    }
}

/// docker's checkDaemonIsSwarmManager.
async fn check_manager(client: &Client) -> Result<()> {
    let info: Value = client.get("/info").await?;
    if info["Swarm"]["ControlAvailable"].as_bool() != Some(true) {
        return Err("this node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again".into());
    }
    Ok(())
}

/// The order services are deployed in: each after its dependencies, ties
/// by name. An unknown dependency or a cycle is an error.
pub fn start_order(deps: &HashMap<String, Vec<(String, Condition)>>) -> Result<Vec<String>> {
    let mut names: Vec<&String> = deps.keys().collect();
    names.sort();
    for name in &names {
        for (dep, _) in &deps[*name] {
            if !deps.contains_key(dep) {
                return Err(
                    format!("services.{name}.depends_on: undefined service {dep:?}").into(),
                );
            }
            if dep == *name {
                return Err(format!(
                    "services.{name}.depends_on: service {name:?} depends on itself"
                )
                .into());
            }
        }
    }
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < names.len() {
        let ready = names.iter().find(|n| {
            !done.contains(n.as_str()) && deps[**n].iter().all(|(d, _)| done.contains(d))
        });
        match ready {
            Some(name) => {
                done.insert((*name).clone());
                order.push((*name).clone());
            }
            None => {
                let left: Vec<String> = names
                    .iter()
                    .filter(|n| !done.contains(n.as_str()))
                    .map(|n| n.to_string())
                    .collect();
                return Err(format!(
                    "depends_on: dependency cycle between services: {}",
                    cycle(deps, &left)
                )
                .into());
            }
        }
    }
    Ok(order)
}

/// One cycle among the services left, as "a -> b -> a".
fn cycle(deps: &HashMap<String, Vec<(String, Condition)>>, left: &[String]) -> String {
    let Some(start) = left.first() else {
        return String::new();
    };
    let mut path = vec![start.clone()];
    let mut current = start.clone();
    loop {
        let next = deps[&current]
            .iter()
            .map(|(d, _)| d)
            .filter(|d| left.contains(d))
            .min()
            .cloned();
        let Some(next) = next else {
            return path.join(" -> ");
        };
        if let Some(at) = path.iter().position(|p| *p == next) {
            let mut cycle = path[at..].to_vec();
            cycle.push(next);
            return cycle.join(" -> ");
        }
        path.push(next.clone());
        current = next;
    }
}

/// docker's validateExternalNetworks.
async fn validate_external_networks(client: &Client, names: &[String]) -> Result<()> {
    for name in names {
        if matches!(name.as_str(), "default" | "bridge" | "host" | "none")
            || name.starts_with("container:")
        {
            continue;
        }
        match client.get::<Value>(&format!("/networks/{}", encode(name))).await {
            Err(err) if err.is_not_found() => {
                return Err(format!("network {name:?} is declared as external, but could not be found. You need to create a swarm-scoped network before the stack is deployed").into())
            }
            Err(err) => return Err(err),
            Ok(network) => {
                let scope = network["Scope"].as_str().unwrap_or_default();
                if scope != "swarm" {
                    return Err(format!("network {name:?} is declared as external, but it is not in the right scope: {scope:?} instead of \"swarm\"").into());
                }
            }
        }
    }
    Ok(())
}

/// External secrets and configs must exist before anything is created
/// (docker finds out only when it converts the services).
async fn check_external_objects(client: &Client, kind: &str, names: &[String]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let found = object_ids(client, kind, names).await?;
    for name in names {
        if !found.contains_key(name) {
            return Err(format!("{kind} not found: {name}").into());
        }
    }
    Ok(())
}

/// Name -> ID of the secrets or configs with these names.
async fn object_ids(
    client: &Client,
    kind: &str,
    names: &[String],
) -> Result<HashMap<String, String>> {
    let mut filters = Filters::new();
    for name in names {
        add_filter(&mut filters, "name", name);
    }
    let list: Vec<Value> = client
        .get(&format!(
            "/{kind}s{}",
            query(&filters_pair(&filters).into_iter().collect::<Vec<_>>())
        ))
        .await?;
    Ok(list
        .iter()
        .map(|o| {
            (
                o["Spec"]["Name"].as_str().unwrap_or_default().to_string(),
                o["ID"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// docker's pruneServices.
async fn prune_services(client: &Client, ns: &Namespace, keep: &BTreeSet<String>) {
    let services = match stack_services(client, &ns.0).await {
        Ok(services) => services,
        Err(err) => {
            eprintln!("Failed to list services: {err}");
            Vec::new()
        }
    };
    let remove: Vec<Value> = services
        .into_iter()
        .filter(|s| !keep.contains(ns.descope(s["Spec"]["Name"].as_str().unwrap_or_default())))
        .collect();
    super::remove_services(client, remove).await;
}

pub async fn stack_services(client: &Client, stack: &str) -> Result<Vec<Value>> {
    client
        .get(&format!("/services{}", query(&[stack_filter(stack)])))
        .await
}

/// docker's createNetworks: the stack's networks not there yet, overlay by default.
async fn create_networks(client: &Client, ns: &Namespace, converted: &Converted) -> Result<()> {
    let existing: Vec<Value> = client
        .get(&format!("/networks{}", query(&[stack_filter(&ns.0)])))
        .await?;
    let existing: BTreeSet<&str> = existing.iter().filter_map(|n| n["Name"].as_str()).collect();
    for (name, body) in &converted.networks {
        if existing.contains(name.as_str()) {
            continue;
        }
        let mut body = body.clone();
        if body["Driver"].as_str().unwrap_or_default().is_empty() {
            body["Driver"] = json!("overlay");
        }
        body["Name"] = json!(name);
        // docker's client asks this of API versions before 1.44.
        body["CheckDuplicate"] = json!(true);
        out(&format!("Creating network {name}\n"));
        client
            .post("/networks/create", Some(&body))
            .await
            .map_err(|e| CliError::Other(format!("failed to create network {name}: {e}")))?;
    }
    Ok(())
}

/// docker's createSecrets / createConfigs: update what exists, create the rest.
async fn create_objects(
    client: &Client,
    kind: &str,
    objects: &[convert::FileObject],
) -> Result<()> {
    for object in objects {
        match client
            .get::<Value>(&format!("/{kind}s/{}", encode(&object.name)))
            .await
        {
            Ok(existing) => {
                let id = existing["ID"].as_str().unwrap_or_default();
                let version = existing["Version"]["Index"].as_u64().unwrap_or(0);
                client
                    .post(
                        &format!(
                            "/{kind}s/{}/update{}",
                            encode(id),
                            query(&[("version", version.to_string())])
                        ),
                        Some(&object.spec),
                    )
                    .await
                    .map_err(|e| {
                        CliError::Other(format!("failed to update {kind} {}: {e}", object.name))
                    })?;
            }
            Err(err) if err.is_not_found() => {
                out(&format!("Creating {kind} {}\n", object.name));
                client
                    .post(&format!("/{kind}s/create"), Some(&object.spec))
                    .await
                    .map_err(|e| {
                        CliError::Other(format!("failed to create {kind} {}: {e}", object.name))
                    })?;
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Fills in the IDs of the secrets and configs the specs refer to by name
/// (docker's ParseSecrets / ParseConfigs, run when the objects exist).
async fn resolve_references(client: &Client, services: &mut BTreeMap<String, Value>) -> Result<()> {
    for (kind, list_key, name_key, id_key) in [
        ("secret", "Secrets", "SecretName", "SecretID"),
        ("config", "Configs", "ConfigName", "ConfigID"),
    ] {
        let mut names = BTreeSet::new();
        for spec in services.values() {
            for item in spec["TaskTemplate"]["ContainerSpec"][list_key]
                .as_array()
                .into_iter()
                .flatten()
            {
                names.insert(item[name_key].as_str().unwrap_or_default().to_string());
            }
        }
        if names.is_empty() {
            continue;
        }
        let names: Vec<String> = names.into_iter().collect();
        let ids = object_ids(client, kind, &names).await?;
        for (service, spec) in services.iter_mut() {
            let container = &mut spec["TaskTemplate"]["ContainerSpec"];
            let credential = container["Privileges"]["CredentialSpec"]["Config"]
                .as_str()
                .map(str::to_string);
            let items = container
                .get_mut(list_key)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten();
            for item in items {
                let name = item[name_key].as_str().unwrap_or_default().to_string();
                let id = ids.get(&name).ok_or_else(|| {
                    CliError::Other(format!("service {service}: {kind} not found: {name}"))
                })?;
                item[id_key] = json!(id);
            }
            // A credential spec names its config; swarm wants the ID.
            if let (Some(config), "config") = (credential, kind) {
                let id = container
                    .get(list_key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|c| {
                        let n = c["ConfigName"].as_str().unwrap_or_default();
                        n == config || n.ends_with(&format!("_{config}"))
                    })
                    .and_then(|c| c["ConfigID"].as_str().map(str::to_string));
                if let Some(id) = id {
                    container["Privileges"]["CredentialSpec"]["Config"] = json!(id);
                }
            }
        }
    }
    Ok(())
}

/// docker's deployServices, in dependency order with the waits; returns
/// the IDs of the services created or updated. With `auth_env`
/// (--with-registry-auth) each service's image's credentials go with its
/// create or update, and with the registry query before it.
async fn deploy_services(
    client: &Client,
    ns: &Namespace,
    mut converted: Converted,
    order: &[String],
    dependencies: &HashMap<String, Vec<(String, Condition)>>,
    resolve_image: &str,
    auth_env: Option<&AuthEnv>,
) -> Result<Vec<String>> {
    resolve_references(client, &mut converted.services).await?;
    let existing: HashMap<String, Value> = stack_services(client, &ns.0)
        .await?
        .into_iter()
        .map(|s| {
            (
                s["Spec"]["Name"].as_str().unwrap_or_default().to_string(),
                s,
            )
        })
        .collect();
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut result = Vec::new();
    for internal in order {
        let Some(mut spec) = converted.services.remove(internal) else {
            continue;
        };
        for (dep, condition) in dependencies.get(internal).into_iter().flatten() {
            let Some(dep_id) = ids.get(dep) else {
                continue;
            };
            wait_for(
                client,
                &ns.scope(dep),
                dep_id,
                *condition,
                &ns.scope(internal),
            )
            .await?;
        }
        let name = ns.scope(internal);
        let image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let token = match auth_env {
            Some(env) => Some(auth_token_for_image(&image, env)?),
            None => None,
        };
        let headers: Vec<(&str, &str)> = token
            .as_deref()
            .map(|t| vec![(AUTH_HEADER, t)])
            .unwrap_or_default();
        if let Some(service) = existing.get(&name) {
            let id = service["ID"].as_str().unwrap_or_default().to_string();
            out(&format!("Updating service {name} (id: {id})\n"));
            let previous_label = service["Spec"]["Labels"][LABEL_IMAGE]
                .as_str()
                .unwrap_or_default();
            let keep_image = match resolve_image {
                RESOLVE_ALWAYS => false,
                RESOLVE_CHANGED => image == previous_label,
                _ => image == previous_label,
            };
            if keep_image {
                spec["TaskTemplate"]["ContainerSpec"]["Image"] =
                    service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].clone();
            }
            let query_registry = !keep_image && resolve_image != RESOLVE_NEVER;
            let resolve_warning = prepare_image(client, &mut spec, query_registry, &headers).await;
            spec["TaskTemplate"]["ForceUpdate"] =
                service["Spec"]["TaskTemplate"]["ForceUpdate"].clone();
            if spec["TaskTemplate"]["ForceUpdate"].is_null() {
                spec["TaskTemplate"]["ForceUpdate"] = json!(0);
            }
            let version = service["Version"]["Index"].as_u64().unwrap_or(0);
            let answer = client
                .post_with_headers(
                    &format!(
                        "/services/{}/update{}",
                        encode(&id),
                        query(&[("version", version.to_string())])
                    ),
                    Some(&spec),
                    &headers,
                )
                .await
                .map_err(|e| CliError::Other(format!("failed to update service {name}: {e}")))?;
            let response: Value = decode(&answer).unwrap_or_default();
            // The daemon's warnings, then the client's own.
            let mut warnings: Vec<String> = response["Warnings"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| w.as_str().unwrap_or_default().to_string())
                .collect();
            warnings.extend(resolve_warning);
            crate::service::print_warnings(&warnings);
            ids.insert(internal.clone(), id.clone());
            result.push(id);
        } else {
            out(&format!("Creating service {name}\n"));
            // docker does not print the create warnings of stack deploy.
            let _ =
                prepare_image(client, &mut spec, resolve_image != RESOLVE_NEVER, &headers).await;
            let answer = client
                .post_with_headers("/services/create", Some(&spec), &headers)
                .await
                .map_err(|e| CliError::Other(format!("failed to create service {name}: {e}")))?;
            let response: Value = decode(&answer)?;
            let id = response["ID"].as_str().unwrap_or_default().to_string();
            ids.insert(internal.clone(), id.clone());
            result.push(id);
        }
    }
    Ok(result)
}

/// What docker's client does to the image of ServiceCreate/ServiceUpdate:
/// tags a bare name ":latest"; with `query` (QueryRegistry) asks the
/// registry through the daemon (with the request's credentials headers)
/// and pins the image to its digest. Returns the warning when the
/// registry could not be asked.
async fn prepare_image(
    client: &Client,
    spec: &mut Value,
    query: bool,
    headers: &[(&str, &str)],
) -> Option<String> {
    let given = spec["TaskTemplate"]["ContainerSpec"]["Image"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // What does not parse goes as it is.
    let image = crate::registry::image_with_tag(&given).unwrap_or(given);
    spec["TaskTemplate"]["ContainerSpec"]["Image"] = json!(image);
    if !query {
        return None;
    }
    let answer = client
        .get_with_headers::<Value>(&format!("/distribution/{}/json", encode(&image)), headers)
        .await;
    match answer
        .ok()
        .and_then(|a| a["Descriptor"]["digest"].as_str().map(str::to_string))
    {
        Some(digest) => {
            spec["TaskTemplate"]["ContainerSpec"]["Image"] =
                json!(crate::registry::image_with_digest(&image, &digest));
            None
        }
        None => Some(crate::service::digest_warning(&image)),
    }
}

/// Waits until a dependency meets its condition.
async fn wait_for(
    client: &Client,
    dep_name: &str,
    dep_id: &str,
    condition: Condition,
    waiter: &str,
) -> Result<()> {
    let mut announced = false;
    loop {
        let service: Value = client.get(&format!("/services/{}", encode(dep_id))).await?;
        let mut filters = Filters::new();
        add_filter(&mut filters, "service", dep_id);
        add_filter(&mut filters, "_up-to-date", "true");
        let tasks: Vec<Value> = client
            .get(&format!(
                "/tasks{}",
                query(&filters_pair(&filters).into_iter().collect::<Vec<_>>())
            ))
            .await?;
        match check_condition(&service, &tasks, condition) {
            Check::Met => {
                if announced {
                    out(&format!("Service {dep_name} is {}\n", met_word(condition)));
                }
                return Ok(());
            }
            Check::Failed(reason) => {
                return Err(format!(
                    "service {waiter} depends on {dep_name} ({}), which failed: {reason}",
                    condition.as_str()
                )
                .into())
            }
            Check::Waiting => {}
        }
        if !announced {
            out(&format!(
                "Waiting for service {dep_name} to be {} ({waiter} depends on it)\n",
                met_word(condition)
            ));
            announced = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::signal::ctrl_c() => {
                return Err(format!("interrupted while waiting for service {dep_name}").into());
            }
        }
    }
}

fn met_word(condition: Condition) -> &'static str {
    match condition {
        Condition::Started => "running",
        Condition::Healthy => "running and healthy",
        Condition::Completed => "completed successfully",
    }
}

#[derive(Debug, PartialEq)]
pub enum Check {
    Met,
    Waiting,
    Failed(String),
}

/// Whether a service's current tasks meet a depends_on condition. A task is
/// healthy when RUNNING: Flotilla reports a task running only once its
/// health check has passed.
pub fn check_condition(service: &Value, tasks: &[Value], condition: Condition) -> Check {
    let mode = &service["Spec"]["Mode"];
    let restart = service["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"]
        .as_str()
        .unwrap_or("any");
    // The newest task per slot (per node for global services).
    let global = mode.get("Global").is_some() || mode.get("GlobalJob").is_some();
    let mut newest: BTreeMap<String, &Value> = BTreeMap::new();
    for task in tasks {
        let key = if global {
            task["NodeID"].as_str().unwrap_or_default().to_string()
        } else {
            task["Slot"].as_i64().unwrap_or(0).to_string()
        };
        let created = task["CreatedAt"].as_str().unwrap_or_default();
        let replace = newest
            .get(&key)
            .is_none_or(|t| t["CreatedAt"].as_str().unwrap_or_default() < created);
        if replace {
            newest.insert(key, task);
        }
    }
    let state = |t: &Value| {
        t["Status"]["State"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let wanted = if let Some(r) = mode.get("Replicated") {
        r["Replicas"].as_u64().unwrap_or(1) as usize
    } else if let Some(job) = mode.get("ReplicatedJob") {
        job["TotalCompletions"].as_u64().unwrap_or(1) as usize
    } else {
        newest.len().max(1)
    };
    let job = mode.get("ReplicatedJob").is_some() || mode.get("GlobalJob").is_some();
    let count = |pred: &dyn Fn(&str) -> bool| newest.values().filter(|t| pred(&state(t))).count();
    let failed = newest.values().find(|t| {
        matches!(state(t).as_str(), "failed" | "rejected")
            && (restart == "none" || (job && restart != "any" && restart != "on-failure"))
    });
    match condition {
        Condition::Started | Condition::Healthy => {
            let running = count(&|s| s == "running" || (job && s == "complete"));
            if running >= wanted {
                return Check::Met;
            }
        }
        Condition::Completed => {
            if let Some(task) = newest.values().find(|t| {
                state(t) == "complete"
                    && t["Status"]["ContainerStatus"]["ExitCode"]
                        .as_i64()
                        .unwrap_or(0)
                        != 0
            }) {
                return Check::Failed(format!(
                    "exit code {}",
                    task["Status"]["ContainerStatus"]["ExitCode"]
                ));
            }
            if count(&|s| s == "complete") >= wanted {
                return Check::Met;
            }
        }
    }
    if let Some(task) = failed {
        let err = task["Status"]["Err"].as_str().unwrap_or_default();
        let err = if err.is_empty() {
            state(task)
        } else {
            err.to_string()
        };
        return Check::Failed(format!(
            "task {}: {err}",
            task["ID"].as_str().unwrap_or_default()
        ));
    }
    Check::Waiting
}
