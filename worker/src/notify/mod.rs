//! Client webhooks, the worker's side: the [`sender`] makes one attempt of a delivery (signed,
//! to a screened address, without following redirects, with a timeout and a capped read), and the
//! [`scheduler`] publishes the deliveries that are due again (a retry whose pause is over, one
//! whose worker died mid-attempt, one an operator redelivers). The handler of `notify.generation`
//! is `crate::handlers::notify`; the rows are `gengate_shared::client_webhooks::deliveries`.

pub mod scheduler;
pub mod sender;
