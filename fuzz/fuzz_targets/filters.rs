//! The list routes' `filters` query parameter (crates/api/src/filters.rs):
//! each input is the parameter's value as it stands in the URL,
//! percent-decoded as the API decodes it, parsed with every route's list
//! of allowed filters (`{"name":{"web":true}}` and the older
//! `{"name":["web"]}`), then matched the way the routes match (`any`,
//! `label` and `label=value`), and the `until` of `network prune` turned
//! into a time as the route does. The same text is also read as the
//! `until` parameter of `GET /events`. A refusal is an answer; a panic is
//! the finding.

#![no_main]

use std::collections::HashMap;

use flotilla_api::filters::Filters;
use flotilla_api::routes::events::time_left;
use flotilla_api::routes::networks::until_cutoff;
use flotilla_api::routes::percent_decode;
use libfuzzer_sys::fuzz_target;

/// The filters each list route allows, as the routes spell them.
const ROUTES: &[&[&str]] = &[
    // GET /services
    &["id", "name", "label", "mode"],
    // GET /nodes
    &["id", "name", "role", "membership", "label", "node.label"],
    // GET /tasks
    &[
        "id",
        "name",
        "service",
        "node",
        "label",
        "desired-state",
        "_up-to-date",
    ],
    // GET /secrets, /configs
    &["id", "label", "name", "names"],
    // GET /networks
    &["dangling", "driver", "id", "label", "name", "scope", "type"],
    // POST /networks/prune
    &["label", "label!", "until"],
    // GET /events
    &[
        "config",
        "container",
        "daemon",
        "event",
        "image",
        "label",
        "network",
        "node",
        "plugin",
        "scope",
        "secret",
        "service",
        "type",
        "volume",
    ],
];

fuzz_target!(|data: &[u8]| {
    // A request's query is text (the URI parser refuses anything else).
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let value = percent_decode(raw, true);

    let labels: HashMap<String, String> = [("com.example.tier", "web"), ("env", "")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

    for allowed in ROUTES {
        let Ok(f) = Filters::parse(Some(&value), allowed) else {
            continue;
        };
        for key in *allowed {
            let _ = f.get(key);
            let _ = f.any(key, |v| "web.1.abc".starts_with(v));
            let _ = f.any(key, |v| v == "swarm" || v == "true");
            let _ = f.labels(key, Some(&labels));
            let _ = f.labels(key, None);
        }
        if let Some(until) = f.get("until") {
            for v in until {
                let _ = until_cutoff(v);
            }
        }
    }

    // GET /events?until=…
    let _ = time_left(Some(&value));
});
