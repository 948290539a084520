//! The agent's side of the dispatcher protocol over gRPC: the agent's
//! session [`Transport`], each call made to the manager it names through
//! [`Peers`] (mutual TLS), messages converted to and from the wire's JSON,
//! and a failed call's status decoded back into the typed error it carries.
//! Which manager to call and what to do when one fails is the session's
//! (crates/agent/src/session).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flotilla_agent::session::{
    Heartbeat, Registered, Registration, SessionError, Transport, Update, UpdateStream,
};
use flotilla_store::models::TaskStatus;
use flotilla_store::StoreError;
use futures::StreamExt;
use tonic::transport::Channel;
use tonic::Status;

use crate::error::typed;
use crate::messages::{
    AgentUpdate, HeartbeatReply, HeartbeatRequest, RegisterReply, RegisterRequest,
};
use crate::pb;
use crate::pb::dispatcher_client::DispatcherClient;
use crate::peers::Peers;
use crate::{from_json, to_json};

/// The dispatcher's RPCs, on the cluster's channels.
pub struct GrpcTransport {
    peers: Peers,
}

impl GrpcTransport {
    pub fn new(peers: Peers) -> Arc<GrpcTransport> {
        Arc::new(GrpcTransport { peers })
    }

    fn client(&self, addr: &str) -> Result<DispatcherClient<Channel>, SessionError> {
        let channel = self.peers.channel(addr).map_err(|s| answered(addr, &s))?;
        Ok(DispatcherClient::new(channel)
            .max_decoding_message_size(crate::MAX_MESSAGE)
            .max_encoding_message_size(crate::MAX_MESSAGE))
    }

    /// A call to `addr` failed: its channel is dropped, so the next call
    /// connects afresh.
    fn failed(&self, addr: &str, status: &Status) -> SessionError {
        self.peers.forget(addr);
        answered(addr, status)
    }

    fn encode<T: serde::Serialize>(addr: &str, msg: &T) -> Result<pb::Json, SessionError> {
        to_json(msg).map_err(|s| protocol(addr, &s))
    }
}

/// The error `addr` answered with: typed when the status carries a store
/// error, else its message.
fn answered(addr: &str, status: &Status) -> SessionError {
    match typed::<StoreError>(status) {
        Some(error) => SessionError::Refused {
            addr: addr.to_string(),
            error,
        },
        None => SessionError::Failed {
            addr: addr.to_string(),
            message: status.message().to_string(),
        },
    }
}

/// A message from (or for) `addr` that did not encode or decode.
fn protocol(addr: &str, status: &Status) -> SessionError {
    SessionError::Protocol {
        addr: addr.to_string(),
        message: status.message().to_string(),
    }
}

impl From<AgentUpdate> for Update {
    fn from(update: AgentUpdate) -> Update {
        match update {
            AgentUpdate::Tasks(tasks) | AgentUpdate::TasksPart(tasks) => Update::Tasks(tasks),
            AgentUpdate::Changes { updated, removed } => Update::Changes { updated, removed },
            AgentUpdate::Routes(table) => Update::Routes(table),
            AgentUpdate::Data(data) => Update::Data(data),
            AgentUpdate::Logs(request) => Update::Logs(request),
            AgentUpdate::Exec(request) => Update::Exec(request),
        }
    }
}

#[async_trait]
impl Transport for GrpcTransport {
    async fn register(
        &self,
        addr: &str,
        registration: &Registration,
    ) -> Result<Registered, SessionError> {
        let msg = Self::encode(
            addr,
            &RegisterRequest {
                description: registration.description.clone(),
                addr: registration.addr.clone(),
            },
        )?;
        let reply = self
            .client(addr)?
            .register(msg)
            .await
            .map_err(|s| self.failed(addr, &s))?;
        let reply: RegisterReply = from_json(reply.get_ref()).map_err(|s| protocol(addr, &s))?;
        Ok(Registered {
            period: Duration::from_millis(reply.heartbeat_ms),
            manager: reply.manager,
            managers: reply.managers,
        })
    }

    /// A reply that does not decode says nothing; the heartbeat counted.
    async fn heartbeat(
        &self,
        addr: &str,
        tls: Option<&flotilla_store::models::TlsInfo>,
    ) -> Result<Heartbeat, SessionError> {
        let msg = Self::encode(addr, &HeartbeatRequest { tls: tls.cloned() })?;
        let reply = self
            .client(addr)?
            .heartbeat(msg)
            .await
            .map_err(|s| self.failed(addr, &s))?;
        Ok(from_json::<HeartbeatReply>(reply.get_ref())
            .map(|r| Heartbeat {
                manager: Some(r.manager),
                ca: r.ca,
            })
            .unwrap_or_default())
    }

    async fn assignments(&self, addr: &str) -> Result<UpdateStream, SessionError> {
        let msg = Self::encode(addr, &())?;
        let stream = self
            .client(addr)?
            .assignments(msg)
            .await
            .map_err(|s| self.failed(addr, &s))?
            .into_inner();
        let addr = addr.to_string();
        let peers = self.peers.clone();
        // A set sent in parts reaches the agent whole.
        let mut parts: Vec<flotilla_store::models::Task> = Vec::new();
        Ok(stream
            .filter_map(move |m| {
                let update = match m {
                    Ok(m) => match from_json::<AgentUpdate>(&m) {
                        Ok(AgentUpdate::TasksPart(part)) => {
                            parts.extend(part);
                            None
                        }
                        Ok(AgentUpdate::Tasks(last)) if !parts.is_empty() => {
                            let mut all = std::mem::take(&mut parts);
                            all.extend(last);
                            Some(Ok(Update::Tasks(all)))
                        }
                        Ok(update) => Some(Ok(Update::from(update))),
                        Err(s) => Some(Err(protocol(&addr, &s))),
                    },
                    Err(s) => {
                        peers.forget(&addr);
                        Some(Err(answered(&addr, &s)))
                    }
                };
                std::future::ready(update)
            })
            .boxed())
    }

    async fn publish_logs(
        &self,
        addr: &str,
        chunk: &flotilla_store::logs::LogChunk,
    ) -> Result<bool, SessionError> {
        let msg = Self::encode(addr, chunk)?;
        let reply = self
            .client(addr)?
            .publish_logs(msg)
            .await
            .map_err(|s| self.failed(addr, &s))?;
        from_json::<bool>(reply.get_ref()).map_err(|s| protocol(addr, &s))
    }

    async fn exec_attach(
        &self,
        addr: &str,
        outgoing: flotilla_agent::session::FrameStream,
    ) -> Result<flotilla_agent::session::FrameStream, SessionError> {
        let channel = self.peers.channel(addr).map_err(|s| answered(addr, &s))?;
        crate::exec::attach(channel, outgoing)
            .await
            .map_err(|s| self.failed(addr, &s))
    }

    async fn report(&self, addr: &str, batch: &[(String, TaskStatus)]) -> Result<(), SessionError> {
        let msg = Self::encode(addr, &batch)?;
        self.client(addr)?
            .update_task_status(msg)
            .await
            .map_err(|s| self.failed(addr, &s))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::store_status;

    #[test]
    fn a_typed_not_leader_status_names_the_leader() {
        let e = StoreError::NotLeader {
            leader: Some("c:2377".into()),
        };
        assert_eq!(
            answered("a:2377", &store_status(&e)),
            SessionError::Refused {
                addr: "a:2377".into(),
                error: e,
            }
        );
    }

    #[test]
    fn a_message_that_merely_reads_like_one_names_no_leader() {
        let text = Status::unavailable("not the leader; the leader is at a:2377");
        assert_eq!(
            answered("b:2377", &text),
            SessionError::Failed {
                addr: "b:2377".into(),
                message: "not the leader; the leader is at a:2377".into(),
            }
        );
    }

    #[test]
    fn each_wire_update_becomes_the_agents() {
        let task = flotilla_store::models::Task {
            id: Some("t1".into()),
            ..Default::default()
        };
        let wire = AgentUpdate::Changes {
            updated: vec![task.clone()],
            removed: vec!["t2".into()],
        };
        let json = to_json(&wire).unwrap();
        let back: AgentUpdate = from_json(&json).unwrap();
        assert_eq!(
            Update::from(back),
            Update::Changes {
                updated: vec![task],
                removed: vec!["t2".into()],
            }
        );
    }
}
