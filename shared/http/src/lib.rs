//! gengate's HTTP vocabulary, shared by the API and the workers: problem+json error bodies and the
//! operations endpoints (`/healthz`, `/readyz`, `/metrics`). It sits apart from `gengate-shared`
//! so that the domain does not depend on a web framework.

pub mod ops;
pub mod problem;
