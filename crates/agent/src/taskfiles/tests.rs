use super::*;
use base64::Engine;
use flotilla_store::models::{
    TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecFile1, TaskSpecContainerSpecSecrets,
};
use flotilla_store::secrets::DataObject;

fn object(id: &str, name: &str, data: &str, templating: Option<&str>) -> DataObject {
    DataObject {
        id: id.into(),
        version: 1,
        created_at: String::new(),
        updated_at: String::new(),
        name: name.into(),
        labels: Default::default(),
        data: base64::engine::general_purpose::STANDARD.encode(data),
        templating: templating.map(str::to_string),
    }
}

fn secret_ref(
    id: &str,
    name: &str,
    target: &str,
    mode: Option<u32>,
) -> TaskSpecContainerSpecSecrets {
    TaskSpecContainerSpecSecrets {
        file: Some(TaskSpecContainerSpecFile {
            name: Some(target.into()),
            uid: Some("0".into()),
            gid: Some("0".into()),
            mode,
        }),
        secret_id: Some(id.into()),
        secret_name: Some(name.into()),
    }
}

fn config_ref(id: &str, name: &str, target: &str) -> TaskSpecContainerSpecConfigs {
    TaskSpecContainerSpecConfigs {
        file: Some(TaskSpecContainerSpecFile1 {
            name: Some(target.into()),
            uid: Some("1000".into()),
            gid: Some("1001".into()),
            mode: Some(0o440),
        }),
        config_id: Some(id.into()),
        config_name: Some(name.into()),
        runtime: None,
    }
}

fn task(
    secrets: Vec<TaskSpecContainerSpecSecrets>,
    configs: Vec<TaskSpecContainerSpecConfigs>,
) -> Task {
    let mut t = Task {
        id: Some("task1".into()),
        service_id: Some("svc1".into()),
        node_id: Some("node1".into()),
        slot: Some(3),
        spec: Some(std::sync::Arc::new(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some("busybox".into()),
                env: Some(vec!["GREETING=hello".into(), "EMPTY=".into()]),
                secrets: Some(secrets),
                configs: Some(configs),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    t.runtime.service_name = Some("web".into());
    t.runtime.service_labels = std::sync::Arc::new([("tier".into(), "front".into())].into());
    t
}

fn node() -> NodeInfo {
    NodeInfo {
        id: "node1".into(),
        hostname: "worker01".into(),
        os: "linux".into(),
        architecture: "x86_64".into(),
    }
}

fn text(f: &TaskFile) -> &str {
    std::str::from_utf8(&f.data).unwrap()
}

#[test]
fn targets_owners_and_modes_follow_docker() {
    let data = NodeData {
        secrets: vec![
            object("s1", "db_pass", "hunter2", None),
            object("s2", "tls", "key", None),
        ],
        configs: vec![object("c1", "nginx", "conf", None)],
    };
    let t = task(
        vec![
            secret_ref("s1", "db_pass", "db_pass", Some(0o400)),
            secret_ref("s2", "tls", "/etc/tls/../ssl/key.pem", None),
        ],
        vec![config_ref("c1", "nginx", "etc/nginx/nginx.conf")],
    );
    let files = files_for(&t, &node(), &data).unwrap();
    let summary: Vec<_> = files
        .iter()
        .map(|f| (f.target.as_str(), text(f), f.uid, f.gid, f.mode))
        .collect();
    assert_eq!(
        summary,
        [
            ("/run/secrets/db_pass", "hunter2", 0, 0, 0o400),
            // A request without a mode gets the clients' 0444.
            ("/etc/ssl/key.pem", "key", 0, 0, 0o444),
            ("/etc/nginx/nginx.conf", "conf", 1000, 1001, 0o440),
        ]
    );
    // The Debug form never shows the bytes.
    assert!(!format!("{files:?}").contains("hunter2"));
}

#[test]
fn templates_expand_with_the_task_node_service_env_and_other_files() {
    let template = concat!(
        "svc={{.Service.Name}} id={{.Service.ID}} tier={{index .Service.Labels \"tier\"}} ",
        "slot={{.Task.Slot}} task={{.Task.Name}} host={{.Node.Hostname}} os={{.Node.Platform.OS}} ",
        "env={{env \"GREETING\"}} none=[{{env \"MISSING\"}}] pass={{secret \"db_pass\"}} ",
        "conf={{config \"/app.conf\"}} joined={{join \",\" \"a\" \"b\"}}"
    );
    let data = NodeData {
        secrets: vec![object("s1", "db_pass", "hunter2", None)],
        configs: vec![
            object("c1", "app", template, Some("golang")),
            object("c2", "plain", "{{not a template}}", None),
            object("c3", "appconf", "x=1", None),
        ],
    };
    let t = task(
        vec![secret_ref("s1", "db_pass", "db_pass", None)],
        vec![
            config_ref("c1", "app", "/app.txt"),
            config_ref("c2", "plain", "/plain.txt"),
            config_ref("c3", "appconf", "/app.conf"),
        ],
    );
    let files = files_for(&t, &node(), &data).unwrap();
    assert_eq!(
        text(&files[1]),
        "svc=web id=svc1 tier=front slot=3 task=web.3.task1 host=worker01 os=linux \
         env=hello none=[] pass=hunter2 conf=x=1 joined=a,b"
    );
    // Not templated: left as it is.
    assert_eq!(text(&files[2]), "{{not a template}}");
}

#[test]
fn a_global_task_s_slot_is_its_node() {
    let data = NodeData {
        secrets: vec![object("s1", "x", "{{.Task.Slot}}", Some("golang"))],
        configs: vec![],
    };
    let mut t = task(vec![secret_ref("s1", "x", "x", None)], vec![]);
    t.slot = None;
    assert_eq!(text(&files_for(&t, &node(), &data).unwrap()[0]), "node1");
}

#[test]
fn bad_templates_and_missing_data_reject_the_task_with_the_reason() {
    let t = |tpl: &str| {
        let data = NodeData {
            secrets: vec![object("s1", "x", tpl, Some("golang"))],
            configs: vec![],
        };
        files_for(
            &task(vec![secret_ref("s1", "x", "x", None)], vec![]),
            &node(),
            &data,
        )
    };
    let e = t("{{.Service.Nope}}").unwrap_err();
    assert!(
        e.contains("secret x: expanding its template") && e.contains("Nope"),
        "{e}"
    );
    let e = t("{{printf \"%d\" 1}}").unwrap_err();
    assert!(e.contains("function \"printf\" not defined"), "{e}");
    // Only the task's own files can be read.
    let e = t("{{secret \"other\"}}").unwrap_err();
    assert!(e.contains("secret target other not found"), "{e}");
    let missing = files_for(
        &task(vec![secret_ref("s9", "gone", "gone", None)], vec![]),
        &node(),
        &NodeData::default(),
    )
    .unwrap_err();
    assert_eq!(missing, "secret gone not found on this node");
}

#[test]
fn ids_must_be_numbers_and_targets_paths() {
    let data = NodeData {
        secrets: vec![object("s1", "x", "v", None)],
        configs: vec![],
    };
    let mut r = secret_ref("s1", "x", "x", None);
    r.file.as_mut().unwrap().uid = Some("root".into());
    let e = files_for(&task(vec![r], vec![]), &node(), &data).unwrap_err();
    assert!(e.contains("invalid uid \"root\""), "{e}");
    let r = secret_ref("s1", "x", "/..", None);
    assert!(files_for(&task(vec![r], vec![]), &node(), &data).is_err());
}

#[test]
fn files_are_placed_with_their_owner_and_mode_and_removed_with_the_task() {
    use std::os::unix::fs::MetadataExt;
    // /dev/shm is a tmpfs: nothing is mounted for the test.
    let base = tempfile::Builder::new()
        .prefix("flotilla-taskfiles-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let root = TmpfsRoot::at(base.path().join("files"), "flotilla:test");
    let data = NodeData {
        secrets: vec![object("s1", "db_pass", "hunter2", None)],
        configs: vec![object("c1", "nginx", "conf", None)],
    };
    let t = task(
        vec![secret_ref("s1", "db_pass", "db_pass", Some(0o400))],
        vec![config_ref("c1", "nginx", "/etc/nginx.conf")],
    );
    let files = files_for(&t, &node(), &data).unwrap();
    let placed = root.place("task1", &files).unwrap();
    let dir = placed.dir.clone().unwrap();
    let secret = dir.join("run/secrets/db_pass");
    assert_eq!(placed.files[0].host, secret);
    assert_eq!(placed.files[1].target, "/etc/nginx.conf");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "hunter2");
    let meta = std::fs::metadata(&secret).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o400);
    let conf = std::fs::metadata(dir.join("etc/nginx.conf")).unwrap();
    // Placed again (a restarted daemon): the same, nothing left behind.
    assert_eq!(root.place("task1", &files).unwrap(), placed);
    assert_eq!((conf.uid(), conf.gid()), (1000, 1001));
    root.place("task2", &files).unwrap();
    root.retain(|id| id == "task2");
    assert!(!dir.exists());
    assert!(root.dir().join("task2").exists());
    root.remove("task2");
    assert!(!root.dir().join("task2").exists());
    assert!(root.place("../x", &files).is_err());
}
