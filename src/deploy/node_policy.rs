//! The node operator's settings (`config::DeployRules`) as the apply's `NodePolicy`.

use super::policy::NodePolicy;
use crate::config::DeployRules;

pub fn from_rules(rules: &DeployRules) -> NodePolicy {
    NodePolicy {
        refuse_privileged: rules.refuse_privileged,
        refuse_host_network: rules.refuse_host_network,
        refuse_host_pid: rules.refuse_host_pid,
        refuse_devices: rules.refuse_devices,
        bind_prefixes: rules.bind_prefixes.clone(),
        registries: rules.registries.clone(),
    }
}
