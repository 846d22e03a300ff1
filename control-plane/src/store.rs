//! The control plane's state: the node table (the real server's SQLite database) and the token
//! signing secret with its TTL.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::jwt;
use crate::validate::Registration;

/// The `type` claim every node token carries; a token without it is refused.
const TOKEN_TYPE: &str = "node_agent";
/// The real server's token lifetime.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// A row of the node table.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub ip: String,
    /// As validated: coerced, defaults filled in, unknown fields dropped.
    pub capabilities: Value,
    /// Seconds since the epoch of the last successful heartbeat; `None` until the first.
    pub last_seen: Option<f64>,
    /// `"registered"` until the first heartbeat, then `"online"` (nothing marks a node offline,
    /// as in the real server).
    pub status: String,
    /// The JSON body of the last successful heartbeat, as received. The real server loses the
    /// metrics; this fixture keeps them so tests can check what the agent reported.
    pub last_heartbeat: Option<Value>,
}

impl Node {
    /// The node as `GET /api/v1/nodes/{id}` shows it: as in the list, plus `metrics`, the last
    /// accepted heartbeat's body (null before the first), which upstream loses (this project's
    /// control plane shows the agent's pressure and load there).
    pub(crate) fn to_json_with_metrics(&self) -> Value {
        let mut node = self.to_json();
        node["metrics"] = self.last_heartbeat.clone().unwrap_or(Value::Null);
        node
    }

    /// The node as `GET /api/v1/nodes` shows it.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "ip": self.ip,
            "capabilities": self.capabilities,
            "last_seen": self.last_seen,
            "status": self.status,
        })
    }
}

pub(crate) struct Store {
    nodes: Vec<Node>,
    secret: Vec<u8>,
    ttl: Duration,
    /// `iat` of the last token issued, in microseconds, to keep `iat` strictly increasing.
    last_iat_micros: u64,
}

impl Store {
    pub fn new() -> Store {
        Store {
            nodes: Vec::new(),
            secret: random_secret(),
            ttl: DEFAULT_TOKEN_TTL,
            last_iat_micros: 0,
        }
    }

    /// Creates the node, or updates the one with the same name (keeping its id, status and
    /// `last_seen`), and issues a fresh token. Earlier tokens stay valid until they expire.
    pub fn register(&mut self, reg: Registration) -> (String, String) {
        let id = match self.nodes.iter_mut().find(|n| n.name == reg.name) {
            Some(node) => {
                node.ip = reg.ip;
                node.capabilities = reg.capabilities;
                node.id.clone()
            }
            None => {
                let id = uuid4();
                self.nodes.push(Node {
                    id: id.clone(),
                    name: reg.name.clone(),
                    ip: reg.ip,
                    capabilities: reg.capabilities,
                    last_seen: None,
                    status: "registered".into(),
                    last_heartbeat: None,
                });
                id
            }
        };
        let token = self.issue(&id, &reg.name);
        (id, token)
    }

    /// `iat` and `exp` carry microseconds (RFC 7519 NumericDates may be fractional; PyJWT would
    /// write whole seconds). That way two registrations within one second still get different
    /// tokens, and a test can set a TTL of a few hundred milliseconds.
    fn issue(&mut self, node_id: &str, node_name: &str) -> String {
        let now_micros = (now() * 1e6) as u64;
        self.last_iat_micros = now_micros.max(self.last_iat_micros + 1);
        let iat = self.last_iat_micros as f64 / 1e6;
        self.sign(&json!({
            "node_id": node_id,
            "node_name": node_name,
            "type": TOKEN_TYPE,
            "iat": iat,
            "exp": iat + self.ttl.as_secs_f64(),
        }))
    }

    pub fn sign(&self, claims: &Value) -> String {
        jwt::encode(&self.secret, claims)
    }

    /// The node id a token speaks for, if it is one of ours, unexpired, of the node-agent type.
    pub fn authenticate(&self, token: &str) -> Option<String> {
        let claims = jwt::verify(&self.secret, token, now()).ok()?;
        if claims.get("type").and_then(Value::as_str) != Some(TOKEN_TYPE) {
            return None;
        }
        claims.get("node_id")?.as_str().map(str::to_string)
    }

    /// Records a heartbeat; false if the node is not in the table.
    pub fn heartbeat(&mut self, id: &str, body: Value, at: f64) -> bool {
        let Some(node) = self.nodes.iter_mut().find(|n| n.id == id) else {
            return false;
        };
        node.last_seen = Some(at);
        node.status = "online".into();
        node.last_heartbeat = Some(body);
        true
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn forget_nodes(&mut self) {
        self.nodes.clear();
    }

    pub fn rotate_secret(&mut self) {
        self.secret = random_secret();
    }

    pub fn set_token_ttl(&mut self, ttl: Duration) {
        self.ttl = ttl;
    }
}

/// Seconds since the epoch, with sub-second precision, like Python's `time.time()`.
pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).expect("the OS random number generator is available");
    bytes
}

/// A fresh secret per server (and per rotation), so tokens never outlive the instance that
/// issued them.
fn random_secret() -> Vec<u8> {
    random_bytes::<32>().to_vec()
}

/// A random (version 4, RFC 9562 variant) UUID in canonical lower-case form.
pub(crate) fn uuid4() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str) -> Registration {
        Registration {
            name: name.into(),
            ip: "10.0.0.1".into(),
            capabilities: json!({}),
        }
    }

    #[test]
    fn uuid4_is_canonical() {
        let id = uuid4();
        assert_eq!(id.len(), 36);
        let groups: Vec<&str> = id.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'));
        assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        assert!(
            id.bytes()
                .all(|c| c == b'-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(uuid4(), id);
    }

    #[test]
    fn tokens_authenticate_until_rotation() {
        let mut store = Store::new();
        let (id, t1) = store.register(reg("a"));
        let (id2, t2) = store.register(reg("a"));
        assert_eq!(id, id2);
        assert_ne!(t1, t2);
        assert_eq!(store.authenticate(&t1).as_deref(), Some(id.as_str()));
        assert_eq!(store.authenticate(&t2).as_deref(), Some(id.as_str()));
        store.rotate_secret();
        assert_eq!(store.authenticate(&t2), None);
    }

    #[test]
    fn wrong_type_and_expired_tokens_are_refused() {
        let mut store = Store::new();
        let wrong_type = store.sign(&json!({"node_id": "x", "type": "user"}));
        assert_eq!(store.authenticate(&wrong_type), None);
        let no_type = store.sign(&json!({"node_id": "x"}));
        assert_eq!(store.authenticate(&no_type), None);
        store.set_token_ttl(Duration::ZERO);
        let (_, expired) = store.register(reg("b"));
        assert_eq!(store.authenticate(&expired), None);
    }
}
