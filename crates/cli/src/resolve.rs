//! Turns node and service IDs into names for display, caching answers like
//! docker's `idresolver` (a failed lookup shows the ID itself).

use std::collections::HashMap;

use bollard::models::{Node, Service};

use crate::client::Client;

pub struct Resolver<'a> {
    client: &'a Client,
    nodes: HashMap<String, String>,
    services: HashMap<String, String>,
}

impl<'a> Resolver<'a> {
    pub fn new(client: &'a Client) -> Self {
        Resolver {
            client,
            nodes: HashMap::new(),
            services: HashMap::new(),
        }
    }

    pub async fn node(&mut self, id: &str) -> String {
        if id.is_empty() {
            return String::new();
        }
        if let Some(name) = self.nodes.get(id) {
            return name.clone();
        }
        let name = match self
            .client
            .get::<Node>(&format!("/nodes/{}", crate::client::encode(id)))
            .await
        {
            Ok(node) => node_display_name(&node).unwrap_or_else(|| id.to_string()),
            Err(_) => id.to_string(),
        };
        self.nodes.insert(id.to_string(), name.clone());
        name
    }

    pub async fn service(&mut self, id: &str) -> String {
        if let Some(name) = self.services.get(id) {
            return name.clone();
        }
        let path = format!("/services/{}", crate::client::encode(id));
        let name = match self.client.get::<Service>(&path).await {
            Ok(service) => service
                .spec
                .and_then(|s| s.name)
                .unwrap_or_else(|| id.to_string()),
            Err(_) => id.to_string(),
        };
        self.services.insert(id.to_string(), name.clone());
        name
    }
}

/// A node's spec name if set, else its hostname.
fn node_display_name(node: &Node) -> Option<String> {
    let spec_name = node
        .spec
        .as_ref()
        .and_then(|s| s.name.clone())
        .filter(|n| !n.is_empty());
    spec_name.or_else(|| {
        node.description
            .as_ref()
            .and_then(|d| d.hostname.clone())
            .filter(|h| !h.is_empty())
    })
}
