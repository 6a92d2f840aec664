//! The service's side of a provider, managed from its spec: the webhook
//! subscription at the service (`webhooks`), over each service's
//! management API (`client`). Pure request building and answer reading per
//! service, so each can be tested against the service's documented form;
//! the controller decides when to call them (`controller::registration`).

pub mod client;
pub mod webhooks;
