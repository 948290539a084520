//! `--metrics-addr`: the node's figures for Prometheus, over plain HTTP at
//! `/metrics` as dockerd serves them. The text format 0.0.4 by default,
//! OpenMetrics when the scraper's Accept header asks for it.
//!
//! Timings and counters are kept process-wide by the parts that measure
//! them (store, manager, agent, net); what the node is (`swarm_node_*`)
//! and what its store holds are read from it at each scrape.

use std::sync::{Arc, Weak};

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flotilla_store::metrics::Emit;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::node::Node;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `--metrics-addr`, before anything else starts: an address that
/// cannot be had is a start-up error, as dockerd makes it.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on --metrics-addr {addr}: {e}"))
}

/// Serves `/metrics` on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    node: &Arc<Node>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let registry = Arc::new(registry(Arc::downgrade(node)));
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let registry = registry.clone();
            async move { scrape(&registry, &headers) }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}

fn registry(node: Weak<Node>) -> Registry {
    let mut r = Registry::default();
    flotilla_store::metrics::register(&mut r);
    flotilla_manager::metrics::register(&mut r);
    flotilla_agent::metrics::register(&mut r);
    flotilla_net::metrics::register(&mut r);
    r.register_collector(Box::new(NodeCollector { node }));
    r
}

fn scrape(registry: &Registry, headers: &HeaderMap) -> Response {
    let open_metrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let mut body = String::with_capacity(64 << 10);
    let (encoded, content_type) = if open_metrics {
        (
            prometheus_client::encoding::text::encode(&mut body, registry),
            OPENMETRICS,
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut body, registry),
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
    };
    match encoded {
        Ok(()) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded\n",
        )
            .into_response(),
    }
}

/// What the node is and, on a manager, what its store holds.
#[derive(Debug)]
struct NodeCollector {
    node: Weak<Node>,
}

impl Collector for NodeCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut e = Emit(encoder);
        let Some(node) = self.node.upgrade() else {
            return Ok(());
        };
        // A membership being changed (join, leave, promotion) is told at
        // the next scrape.
        let Some(m) = node.membership_now() else {
            return Ok(());
        };
        e.gauges(
            "swarm_node_info",
            "Information related to the swarm",
            [(
                [
                    ("swarm_id", m.id.cluster_id.as_str()),
                    ("node_id", m.id.node_id.as_str()),
                ],
                1u64,
            )],
        )?;
        e.gauge(
            "swarm_node_manager",
            "Whether this node is a manager or not",
            u64::from(m.store.is_some()),
        )?;
        if let Some(store) = &m.store {
            let dispatcher = m.logs.as_ref().map(|l| l.dispatcher.figures());
            flotilla_manager::metrics::encode(&mut e, store, dispatcher)?;
        }
        Ok(())
    }
}
