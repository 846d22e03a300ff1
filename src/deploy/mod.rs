//! Running what the control plane deploys (see `shared/deployments.md`): for now the compose
//! project model, which turns a rendered compose file and its `env` into a checked, normalised
//! project the planner can act on.

pub mod compose;
