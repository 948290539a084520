//! [`ManagerSession`] against a stub transport: which manager each call
//! goes to, what the session learns from the answers, what the worker
//! watches. No gRPC, no sockets; time is paused where backoff is waited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{TaskState, TaskStatus};
use flotilla_store::models::Task;
use flotilla_store::network::RoutingTable;
use flotilla_store::StoreError;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::reports::Report;
use super::*;

/// How a manager answers every call.
#[derive(Clone)]
enum Answer {
    /// As the leader, telling the node its role and the managers.
    Leader {
        manager: bool,
        managers: Vec<String>,
    },
    /// As a follower, naming the leader if it knows one.
    NotLeader(Option<String>),
}

/// Managers that answer as the test says; one not listed is unreachable.
#[derive(Default)]
struct Stub {
    answers: Mutex<HashMap<String, Answer>>,
    /// Each call as "call manager", in order.
    calls: Mutex<Vec<String>>,
    /// The batches each manager took.
    batches: Mutex<Vec<(String, Vec<Report>)>>,
    /// The assignment stream each manager opens, fed by the test.
    streams: Mutex<HashMap<String, mpsc::UnboundedReceiver<Result<Update, SessionError>>>>,
    /// What heartbeat replies say the node's certificates must be.
    ca: Mutex<Option<flotilla_store::state::CaTarget>>,
}

impl Stub {
    fn answer(&self, manager: &str, answer: Answer) {
        self.answers.lock().unwrap().insert(manager.into(), answer);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Feeds the assignment stream `manager` opens next.
    fn stream(&self, manager: &str) -> mpsc::UnboundedSender<Result<Update, SessionError>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.streams.lock().unwrap().insert(manager.into(), rx);
        tx
    }

    /// Records the call; the leader's answer, or the error the others give.
    fn call(&self, call: &str, manager: &str) -> Result<(bool, Vec<String>), SessionError> {
        self.calls.lock().unwrap().push(format!("{call} {manager}"));
        match self.answers.lock().unwrap().get(manager).cloned() {
            Some(Answer::Leader { manager, managers }) => Ok((manager, managers)),
            Some(Answer::NotLeader(leader)) => Err(SessionError::Refused {
                addr: manager.into(),
                error: StoreError::NotLeader { leader },
            }),
            None => Err(SessionError::Failed {
                addr: manager.into(),
                message: "connection refused".into(),
            }),
        }
    }
}

#[async_trait]
impl Transport for Stub {
    async fn register(&self, manager: &str, _: &Registration) -> Result<Registered, SessionError> {
        let (is_manager, managers) = self.call("register", manager)?;
        Ok(Registered {
            period: Duration::from_secs(5),
            manager: is_manager,
            managers,
        })
    }

    async fn heartbeat(
        &self,
        manager: &str,
        tls: Option<&bollard::models::TlsInfo>,
    ) -> Result<Heartbeat, SessionError> {
        let call = match tls {
            Some(t) => format!(
                "heartbeat+tls {}",
                t.trust_root.as_deref().unwrap_or_default()
            ),
            None => "heartbeat".to_string(),
        };
        self.call(&call, manager).map(|(m, _)| Heartbeat {
            manager: Some(m),
            ca: self.ca.lock().unwrap().clone(),
        })
    }

    async fn assignments(&self, manager: &str) -> Result<UpdateStream, SessionError> {
        self.call("assignments", manager)?;
        let rx = self.streams.lock().unwrap().remove(manager);
        let rx = rx.expect("the test feeds this manager's stream");
        Ok(tokio_stream_of(rx))
    }

    async fn report(&self, manager: &str, batch: &[Report]) -> Result<(), SessionError> {
        self.call("report", manager)?;
        self.batches
            .lock()
            .unwrap()
            .push((manager.into(), batch.to_vec()));
        Ok(())
    }
}

fn tokio_stream_of(mut rx: mpsc::UnboundedReceiver<Result<Update, SessionError>>) -> UpdateStream {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

fn list(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn session(stub: &Arc<Stub>, managers: &[&str]) -> Arc<ManagerSession> {
    ManagerSession::new(
        stub.clone(),
        list(managers),
        "10.0.0.9".into(),
        NodeOverrides::default(),
    )
}

fn task(id: &str) -> Task {
    Task {
        id: Some(id.into()),
        ..Default::default()
    }
}

fn ids(tasks: &Assignments) -> Vec<&str> {
    tasks.iter().map(|t| t.id.as_deref().unwrap()).collect()
}

fn status(state: TaskState) -> TaskStatus {
    TaskStatus {
        state: Some(state),
        ..Default::default()
    }
}

#[tokio::test]
async fn register_follows_the_leader_a_follower_names() {
    let stub = Arc::new(Stub::default());
    stub.answer("a:2377", Answer::NotLeader(Some("c:2377".into())));
    stub.answer(
        "c:2377",
        Answer::Leader {
            manager: false,
            managers: list(&["a:2377", "b:2377", "c:2377", "d:2377"]),
        },
    );
    let s = session(&stub, &["a:2377", "b:2377", "c:2377"]);
    let period = s.register(NodeDescription::default()).await.unwrap();
    assert_eq!(period, Duration::from_secs(5));
    // Straight from a to the leader it named, skipping b.
    assert_eq!(stub.calls(), list(&["register a:2377", "register c:2377"]));
    // The leader stays first; a manager it told about is learned.
    assert_eq!(
        s.managers(),
        list(&["c:2377", "a:2377", "b:2377", "d:2377"])
    );
    assert_eq!(*s.role().borrow(), Some(false));
}

#[tokio::test]
async fn register_passes_dead_managers_in_order() {
    let stub = Arc::new(Stub::default());
    stub.answer(
        "c:2377",
        Answer::Leader {
            manager: true,
            managers: vec![],
        },
    );
    let s = session(&stub, &["a:2377", "b:2377", "c:2377"]);
    s.register(NodeDescription::default()).await.unwrap();
    assert_eq!(
        stub.calls(),
        list(&["register a:2377", "register b:2377", "register c:2377"])
    );
    assert_eq!(s.managers(), list(&["c:2377", "a:2377", "b:2377"]));
    assert_eq!(*s.role().borrow(), Some(true));
}

#[tokio::test]
async fn register_gives_up_after_one_round_with_the_last_error() {
    let stub = Arc::new(Stub::default());
    stub.answer("b:2377", Answer::NotLeader(None));
    let s = session(&stub, &["a:2377", "b:2377"]);
    let e = s.register(NodeDescription::default()).await.unwrap_err();
    // Each manager once, and the first again.
    assert_eq!(
        stub.calls(),
        list(&["register a:2377", "register b:2377", "register a:2377"])
    );
    assert!(matches!(e, SessionError::Failed { addr, .. } if addr == "a:2377"));
    let none = session(&stub, &[]);
    assert_eq!(
        none.register(NodeDescription::default()).await,
        Err(SessionError::NoManager)
    );
}

#[tokio::test]
async fn a_failed_heartbeat_moves_the_session_to_the_named_leader() {
    let stub = Arc::new(Stub::default());
    stub.answer("a:2377", Answer::NotLeader(Some("b:2377".into())));
    stub.answer(
        "b:2377",
        Answer::Leader {
            manager: true,
            managers: vec![],
        },
    );
    let s = session(&stub, &["a:2377", "b:2377"]);
    assert!(matches!(
        s.heartbeat().await,
        Err(SessionError::Refused { .. })
    ));
    s.heartbeat().await.unwrap();
    assert_eq!(
        stub.calls(),
        list(&["heartbeat a:2377", "heartbeat b:2377"])
    );
    assert_eq!(*s.role().borrow(), Some(true));
}

/// The node's TLSInfo reaches the managers once per change (with the
/// registration, or the next heartbeat), and what the managers want of
/// the node's certificates is passed on when it changes.
#[tokio::test]
async fn tls_info_is_sent_once_per_change_and_the_ca_target_is_followed() {
    let stub = Arc::new(Stub::default());
    stub.answer(
        "a:2377",
        Answer::Leader {
            manager: false,
            managers: vec![],
        },
    );
    let s = session(&stub, &["a:2377"]);
    let tls = |root: &str| bollard::models::TlsInfo {
        trust_root: Some(root.into()),
        ..Default::default()
    };
    s.set_tls(tls("r1"));
    s.register(NodeDescription::default()).await.unwrap();
    s.heartbeat().await.unwrap();
    s.set_tls(tls("r1"));
    s.heartbeat().await.unwrap();
    s.set_tls(tls("r2"));
    let mut target = s.ca_target();
    *stub.ca.lock().unwrap() = Some(flotilla_store::state::CaTarget {
        root_digest: "d".into(),
        issuer_public_key: "k".into(),
    });
    s.heartbeat().await.unwrap();
    s.heartbeat().await.unwrap();
    assert_eq!(
        stub.calls(),
        list(&[
            "register a:2377",
            "heartbeat a:2377",
            "heartbeat a:2377",
            "heartbeat+tls r2 a:2377",
            "heartbeat a:2377",
        ])
    );
    assert!(target.has_changed().unwrap());
    assert_eq!(
        target.borrow_and_update().as_ref().unwrap().root_digest,
        "d"
    );
    s.heartbeat().await.unwrap();
    assert!(!target.has_changed().unwrap(), "unchanged: no wake-up");
}

#[tokio::test]
async fn the_worker_watches_the_exact_set_and_routes_outlive_the_stream() {
    let stub = Arc::new(Stub::default());
    stub.answer(
        "a:2377",
        Answer::Leader {
            manager: false,
            managers: vec![],
        },
    );
    let feed = stub.stream("a:2377");
    let s = session(&stub, &["a:2377"]);
    let mut routes = s.routes();
    feed.send(Ok(Update::Tasks(vec![task("t1"), task("t2")])))
        .unwrap();
    let mut rx = s.assignments().await.unwrap();
    assert_eq!(ids(&rx.borrow_and_update()), ["t1", "t2"]);

    feed.send(Ok(Update::Changes {
        updated: vec![task("t3")],
        removed: list(&["t1"]),
    }))
    .unwrap();
    rx.changed().await.unwrap();
    assert_eq!(ids(&rx.borrow_and_update()), ["t2", "t3"]);

    let table = RoutingTable::default();
    feed.send(Ok(Update::Routes(table.clone()))).unwrap();
    routes.changed().await.unwrap();
    // The manager stops leading: the stream ends, the worker sees it.
    drop(feed);
    assert!(rx.changed().await.is_err());
    // Kept, marked with the address this node registers.
    let mine = RoutingTable {
        own_addr: "10.0.0.9".parse().ok(),
        ..table
    };
    assert_eq!(**s.routes().borrow(), mine);

    // The next stream starts over from the whole set.
    let feed = stub.stream("a:2377");
    feed.send(Ok(Update::Tasks(vec![task("t4")]))).unwrap();
    let rx = s.assignments().await.unwrap();
    assert_eq!(ids(&rx.borrow()), ["t4"]);
}

#[tokio::test]
async fn a_stream_that_does_not_open_with_the_tasks_is_refused_in_place() {
    let stub = Arc::new(Stub::default());
    stub.answer(
        "a:2377",
        Answer::Leader {
            manager: false,
            managers: vec![],
        },
    );
    let feed = stub.stream("a:2377");
    feed.send(Ok(Update::Routes(RoutingTable::default())))
        .unwrap();
    let s = session(&stub, &["a:2377", "b:2377"]);
    let e = s.assignments().await.unwrap_err();
    assert!(matches!(e, SessionError::Protocol { .. }));
    // Not the manager's fault: it stays first.
    assert_eq!(s.managers(), list(&["a:2377", "b:2377"]));
}

/// Found by the chaos harness: a report the old leader took but never
/// wrote left a running task ASSIGNED for good. Every manager the node
/// registers with hears each task's last state again; finished tasks'
/// are sent once more, then forgotten.
#[tokio::test]
async fn a_new_registration_hears_every_tasks_last_state_again() {
    let stub = Arc::new(Stub::default());
    stub.answer(
        "a:2377",
        Answer::Leader {
            manager: false,
            managers: vec![],
        },
    );
    let s = session(&stub, &["a:2377"]);
    s.register(NodeDescription::default()).await.unwrap();
    s.report("t1", status(TaskState::PREPARING));
    s.report("t1", status(TaskState::RUNNING));
    s.report("t2", status(TaskState::COMPLETE));
    wait_for_batches(&stub, 1).await;
    s.register(NodeDescription::default()).await.unwrap();
    wait_for_batches(&stub, 2).await;
    s.register(NodeDescription::default()).await.unwrap();
    wait_for_batches(&stub, 3).await;
    let batches = stub.batches.lock().unwrap().clone();
    let mut again: Vec<Vec<(String, TaskState)>> = batches[1..]
        .iter()
        .map(|(_, b)| {
            b.iter()
                .map(|(id, st)| (id.clone(), st.state.unwrap()))
                .collect()
        })
        .collect();
    again[0].sort();
    assert_eq!(
        again,
        vec![
            vec![
                ("t1".to_string(), TaskState::RUNNING),
                ("t2".to_string(), TaskState::COMPLETE)
            ],
            vec![("t1".to_string(), TaskState::RUNNING)],
        ]
    );
}

#[tokio::test]
async fn reports_made_together_go_in_one_batch() {
    let stub = Arc::new(Stub::default());
    stub.answer(
        "a:2377",
        Answer::Leader {
            manager: false,
            managers: vec![],
        },
    );
    let s = session(&stub, &["a:2377"]);
    s.report("t1", status(TaskState::PREPARING));
    s.report("t2", status(TaskState::RUNNING));
    s.report("t1", status(TaskState::RUNNING));
    wait_for_batches(&stub, 1).await;
    s.report("t3", status(TaskState::FAILED));
    wait_for_batches(&stub, 2).await;
    let batches = stub.batches.lock().unwrap().clone();
    let sent: Vec<Vec<(&str, TaskState)>> = batches
        .iter()
        .map(|(_, b)| {
            b.iter()
                .map(|(id, st)| (id.as_str(), st.state.unwrap()))
                .collect()
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            vec![
                ("t1", TaskState::PREPARING),
                ("t2", TaskState::RUNNING),
                ("t1", TaskState::RUNNING),
            ],
            vec![("t3", TaskState::FAILED)],
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_batch_a_manager_refuses_goes_to_the_leader_after_a_backoff() {
    let stub = Arc::new(Stub::default());
    stub.answer("a:2377", Answer::NotLeader(Some("b:2377".into())));
    stub.answer(
        "b:2377",
        Answer::Leader {
            manager: false,
            managers: vec![],
        },
    );
    let s = session(&stub, &["a:2377", "b:2377"]);
    let start = tokio::time::Instant::now();
    s.report("t1", status(TaskState::RUNNING));
    wait_for_batches(&stub, 1).await;
    assert_eq!(stub.calls(), list(&["report a:2377", "report b:2377"]));
    assert_eq!(stub.batches.lock().unwrap()[0].0, "b:2377");
    // One backoff, give or take the test's polling.
    let waited = start.elapsed();
    assert!(waited >= reports::backoff(0) && waited < reports::backoff(1));
}

#[tokio::test(start_paused = true)]
async fn a_batch_no_manager_takes_is_given_up_after_its_attempts() {
    let stub = Arc::new(Stub::default());
    let s = session(&stub, &["a:2377", "b:2377"]);
    let start = tokio::time::Instant::now();
    s.report("t1", status(TaskState::RUNNING));
    let waits: Duration = (0..reports::ATTEMPTS).map(reports::backoff).sum();
    tokio::time::sleep(waits + Duration::from_millis(1)).await;
    assert_eq!(
        stub.calls(),
        list(&[
            "report a:2377",
            "report b:2377",
            "report a:2377",
            "report b:2377",
            "report a:2377",
        ])
    );
    assert!(start.elapsed() >= waits);
    // The sender is still there for the next reports.
    stub.answer(
        "b:2377",
        Answer::Leader {
            manager: false,
            managers: vec![],
        },
    );
    s.report("t2", status(TaskState::RUNNING));
    wait_for_batches(&stub, 1).await;
}

/// Yields to the report sender until `stub` has taken `n` batches.
async fn wait_for_batches(stub: &Stub, n: usize) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while stub.batches.lock().unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the batches in time");
}
