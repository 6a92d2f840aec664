//! What happened to mail after it was sent, whoever reports it: the writer
//! that lays delivery events over a message's status (`writer`, with the
//! pure merge in `record`), the suppression list that hard bounces and
//! complaints feed (`suppress`), the soft-bounce counts (`soft`), and the
//! envelope-sender token that ties a returned mail to its message
//! (`token`, made by the SMTP transport and read by the bounce mailbox),
//! and hosted one-click unsubscribe (`unsubscribe`: its tokens and keys).
//! The producers of delivery events depend on this module and not on one
//! another: the services' webhooks (`webhook`) and the bounce mailbox
//! (`bounces`).

pub mod record;
pub mod soft;
pub mod suppress;
pub mod token;
pub mod unsubscribe;
pub mod writer;
