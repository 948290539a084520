//! The Engine API's request bodies: each input is one body, decoded as
//! every route of Flotilla's own decodes its body (crates/api's
//! `json_body`/`service_spec_body`, Go's case-insensitive keys of
//! `docker::decode::from_value`), then put through the checks the route
//! runs next where those are pure (the manager's `validate`s, the swarm
//! spec's defaults, the address pools of `swarm init`). A refusal is an
//! answer; a panic is the finding.

#![no_main]

use bytes::Bytes;
use flotilla_api::docker::decode;
use flotilla_api::routes::networks::container_networks;
use flotilla_api::routes::secrets::SpecBody;
use flotilla_api::routes::{json_body, service_spec_body};
use flotilla_ca::JoinToken;
use flotilla_manager::controlapi::{network, secret, service, swarm};
use flotilla_store::models::{
    NetworkCreateRequest, NodeSpec, SwarmInitRequest, SwarmJoinRequest, SwarmSpec,
    SwarmUnlockRequest,
};
use flotilla_store::networks::Subnet;
use flotilla_store::secrets::DataKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);

    // POST /services/create and /services/{id}/update.
    if let Ok(spec) = service_spec_body(&body) {
        let _ = service::validate(spec);
    }

    // POST /swarm/init.
    if let Ok(req) = json_body::<SwarmInitRequest>(&body) {
        for pool in req.default_addr_pool.iter().flatten() {
            if let Ok(subnet) = Subnet::parse(pool) {
                let _ = subnet.to_string();
            }
        }
        let _ = swarm::with_defaults(req.spec.unwrap_or_default());
    }

    // POST /swarm/join: the token is parsed before anything is sent.
    if let Ok(req) = json_body::<SwarmJoinRequest>(&body) {
        let _ = JoinToken::parse(req.join_token.as_deref().unwrap_or_default());
    }

    // POST /swarm/update.
    if let Ok(spec) = json_body::<SwarmSpec>(&body) {
        let _ = swarm::with_defaults(spec);
    }

    // POST /swarm/unlock.
    let _ = json_body::<SwarmUnlockRequest>(&body);

    // POST /nodes/{id}/update.
    let _ = json_body::<NodeSpec>(&body);

    // POST /secrets/create and /configs/create (and their updates).
    if let Ok(spec) = json_body::<SpecBody>(&body) {
        let spec = spec.into_spec();
        let _ = secret::validate(DataKind::Secret, &spec);
        let _ = secret::validate(DataKind::Config, &spec);
    }

    // POST /networks/create: decoded the same way, but a body that does not
    // decode goes to the Docker Engine instead of being refused.
    if let Ok(value) = serde_json::from_slice(&body) {
        if let Ok(req) = decode::from_value::<NetworkCreateRequest>(value) {
            if network::is_swarm_request(&req) {
                let _ = network::validate(req);
            }
        }
    }

    // POST /containers/create: the swarm networks a container names.
    let _ = container_networks(&body);
});
