//! Bus subjects. Tokens are `.`-separated; a device name may contain `.`, which is escaped.

use tether_model::{DeviceKey, TenantId};

/// The kinds of uplink on the stream, the last token of `tether.up.<tenant>.<pk>.<dn>.<kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkKind {
    Property,
    Event,
    Status,
    Custom,
    /// Tag changes (`thing/deviceinfo/update|delete`).
    Tags,
    /// Gateway topology changes (`thing/topo/add|delete`).
    Topo,
    /// What became of a command sent to the device: its PUBACK, its reply (docs/commands.md).
    Downlink,
}

impl UplinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Property => "property",
            Self::Event => "event",
            Self::Status => "status",
            Self::Custom => "custom",
            Self::Tags => "tags",
            Self::Topo => "topo",
            Self::Downlink => "downlink",
        }
    }
}

/// `tether.up.<tenant>.<pk>.<dn>.<kind>`.
pub fn uplink(tenant: &TenantId, device: &DeviceKey, kind: UplinkKind) -> String {
    format!(
        "tether.up.{}.{}.{}.{}",
        token(tenant.as_str()),
        token(device.product_key.as_str()),
        token(device.device_name.as_str()),
        kind.as_str()
    )
}

/// `tether.registry.<tenant>.<pk>.<dn>.lifecycle`: device create, delete, enable, disable.
pub fn lifecycle(tenant: &TenantId, device: &DeviceKey) -> String {
    format!(
        "tether.registry.{}.{}.{}.lifecycle",
        token(tenant.as_str()),
        token(device.product_key.as_str()),
        token(device.device_name.as_str())
    )
}

/// `tether.registry.<tenant>.<pk>.product`: a product deleted.
pub fn product_lifecycle(tenant: &TenantId, product_key: &tether_model::ProductKey) -> String {
    format!("tether.registry.{}.{}.product", token(tenant.as_str()), token(product_key.as_str()))
}

/// Every registry event: device and product lifecycles.
pub const ALL_REGISTRY: &str = "tether.registry.>";

/// `tether.edge.<node>.kick`: close a session that a CONNECT on another node has taken over.
pub fn edge_kick(node: &str) -> String {
    format!("tether.edge.{}.kick", token(node))
}

/// `tether.edge.<node>.down`: messages for devices connected to `node` ([`crate::downlink`]).
pub fn edge_down(node: &str) -> String {
    format!("tether.edge.{}.down", token(node))
}

/// `tether.edge.all.bcast`: a broadcast every edge fans out to its matching sessions.
pub const EDGE_BROADCAST: &str = "tether.edge.all.bcast";

/// `tether.command.<instance>.reply`: where edges hand the answers of synchronous calls made by
/// one command service instance.
pub fn command_replies(instance: &str) -> String {
    format!("tether.command.{}.reply", token(instance))
}

/// A product's thing model changed; the body is the product key. Edges drop their cached copy.
pub const THING_MODEL_CHANGED: &str = "tether.thing.model";

/// Every device lifecycle event.
pub const ALL_LIFECYCLE: &str = "tether.registry.*.*.*.lifecycle";

/// Every gateway topology change (auth publishes them; edges log out detached sub-devices).
pub const ALL_TOPO: &str = "tether.up.*.*.*.topo";

/// Every uplink of every tenant.
pub const ALL_UPLINKS: &str = "tether.up.>";

/// Escapes the characters NATS gives a meaning (`.`, `*`, `>`, whitespace) inside one token.
pub fn token(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '%' => out.push_str("%25"),
            '.' => out.push_str("%2E"),
            '*' => out.push_str("%2A"),
            '>' => out.push_str("%3E"),
            c if c.is_whitespace() => out.push_str(&format!("%{:02X}", c as u32 & 0xff)),
            c => out.push(c),
        }
    }
    out
}

/// Whether `subject` matches `filter` (`*` one token, `>` one or more trailing tokens).
pub fn matches(filter: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for part in filter.split('.') {
        match part {
            ">" => return tokens.next().is_some(),
            "*" => {
                if tokens.next().is_none() {
                    return false;
                }
            }
            literal => {
                if tokens.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_with_dots_stay_one_token() {
        let device = DeviceKey::parse("pk", "a.b").unwrap();
        let subject = uplink(&TenantId::new("t1").unwrap(), &device, UplinkKind::Property);
        assert_eq!(subject, "tether.up.t1.pk.a%2Eb.property");
        assert!(matches("tether.up.*.pk.*.property", &subject));
        assert!(matches(ALL_UPLINKS, &subject));
        assert!(!matches("tether.up.*.pk.*.event", &subject));
        assert!(!matches("tether.up.>", "tether.up"));
    }
}
