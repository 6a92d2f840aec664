//! The integration tests, one binary: one control plane (kube-apiserver
//! and etcd) and one mailpit serve every suite, and each test works in a
//! namespace of its own, so the suites run side by side. The fault tests
//! (`chaos`) are a binary of their own: they stop and start the control
//! plane and run one at a time.

#[path = "../support/mod.rs"]
mod support;

mod alerts;
mod api_providers;
mod attachments;
mod bad_input;
mod bounce_corpus;
mod bounces;
mod bulk;
mod cluster_providers;
mod control_plane;
mod deliverability;
mod delivery_events;
mod delivery_policy;
mod deploy;
mod dkim;
mod domains;
mod dry_run;
mod health;
mod message_features;
mod observability;
mod provider_templates;
mod registration;
mod routes;
mod send_once;
mod smtp_delivery;
mod suppression;
mod suppression_sync;
mod templates;
mod tenants;
mod test_mode;
mod unsubscribe;
mod webhook_corpus;
