//! Running what the control plane deploys (see `shared/deployments.md`): the compose project
//! model (`compose`), which turns a rendered compose file and its `env` into a checked,
//! normalised project, and its life on the engine: the node's policy (`policy`), the create
//! bodies (`spec`) with compose's and the agent's labels (`labels`), what to change (`plan`),
//! doing it as `docker compose up -d --remove-orphans` and `down` do (`apply`), and the live
//! state of what runs (`observe`), with independent engine calls made at once
//! (`side_by_side`); and the deployments executor (`deployments`: the node
//! channel's commands in, applies, removes and statuses out; its book of deployments in
//! `table`).

pub mod compose;

pub mod apply;
pub mod labels;
pub mod observe;
pub mod plan;
pub mod policy;
pub mod spec;

pub mod deployments;
mod engine_finder;
mod kubernetes;
mod log_streams;
mod side_by_side;
mod table;

pub use apply::{ApplyRequest, apply, remove};
pub use labels::{DEPLOYMENT_LABEL, GENERATION_LABEL};
pub use observe::{observe, observe_all};
pub use policy::NodePolicy;
