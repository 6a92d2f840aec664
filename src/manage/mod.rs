//! The service's side of a provider, managed from its spec: the webhook
//! subscription at the service (`webhooks`) and the sending domain as the
//! service sees it (`domains`), and the service's own suppression list
//! (`suppressions`), over each service's management API
//! (`client`). Pure request building and answer reading per
//! service, so each can be tested against the service's documented form;
//! the controller decides when to call them (`controller::registration`).

pub mod client;
pub mod domains;
pub mod suppressions;
pub mod webhooks;
