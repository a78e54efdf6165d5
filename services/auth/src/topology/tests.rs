use std::sync::Arc;

use serde_json::Value;
use tether_bus::{Bus, InProcessBus, Subscription};
use tether_contract::{AuthService, DataFormat, Dialect, NewProduct};
use tether_model::{ProductKey, SignMethod};
use tether_store::{FjallStore, KvStore};

use super::*;
use crate::DEFAULT_TENANT;

struct Fixture {
    auth: Auth,
    bus: Arc<InProcessBus>,
    tenant: TenantId,
    gateway: Device,
    gateway2: Device,
    subs: Vec<Device>,
    _dir: tempfile::TempDir,
}

async fn product(auth: &Auth, tenant: &TenantId, pk: &str, node_type: NodeType) -> ProductKey {
    let new = NewProduct {
        name: pk.into(),
        product_key: Some(ProductKey::new(pk).unwrap()),
        node_type,
        data_format: DataFormat::Alink,
        dialect: Dialect::Alink,
    };
    auth.create_product(tenant, new).await.unwrap().product_key
}

async fn device(auth: &Auth, tenant: &TenantId, pk: &ProductKey, dn: &str) -> Device {
    let new = NewDevice { device_name: Some(tether_model::DeviceName::new(dn).unwrap()), device_secret: None };
    auth.register_device(tenant, pk, new).await.unwrap()
}

/// Two gateways (`gw/g1`, `gw/g2`) and three sub-devices (`lamp/s0..s2`) in the default tenant.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn KvStore> = Arc::new(FjallStore::open(dir.path()).unwrap());
    let bus = Arc::new(InProcessBus::new());
    let auth = Auth::open(store, bus.clone(), "admin").await.unwrap();
    let tenant = TenantId::new(DEFAULT_TENANT).unwrap();
    let gw = product(&auth, &tenant, "gw", NodeType::Gateway).await;
    let lamp = product(&auth, &tenant, "lamp", NodeType::Device).await;
    let gateway = device(&auth, &tenant, &gw, "g1").await;
    let gateway2 = device(&auth, &tenant, &gw, "g2").await;
    let mut subs = Vec::new();
    for i in 0..3 {
        subs.push(device(&auth, &tenant, &lamp, &format!("s{i}")).await);
    }
    Fixture { auth, bus, tenant, gateway, gateway2, subs, _dir: dir }
}

fn key(device: &Device) -> DeviceKey {
    DeviceKey::new(device.product_key.clone(), device.device_name.clone())
}

/// A sub-device's sign as the official Python SDK makes it (client id `pk.dn`, lower-case hex).
fn sign_with(device: &Device, method: SignMethod, secret: &str) -> SubDeviceSign {
    let client_id = format!("{}.{}|lan=Python,_v=2.2.1,_ss=1|", device.product_key, device.device_name);
    let params = SignParams {
        client_id: &client_id,
        device_name: device.device_name.as_str(),
        product_key: device.product_key.as_str(),
        timestamp: Some("1700000000000"),
    };
    SubDeviceSign {
        device: key(device),
        sign: method.sign(secret, &params).to_ascii_lowercase(),
        client_id,
        timestamp: Some("1700000000000".into()),
        sign_method: method,
    }
}

fn sign(device: &Device) -> SubDeviceSign {
    sign_with(device, SignMethod::HmacSha256, &device.device_secret)
}

async fn next_topo_event(events: &mut Subscription) -> Value {
    let message = tokio::time::timeout(std::time::Duration::from_secs(5), events.next()).await.unwrap().unwrap();
    serde_json::from_slice(&message.payload).unwrap()
}

#[tokio::test]
async fn signed_sub_devices_join_and_log_in() {
    let f = fixture().await;
    let mut events = f.bus.subscribe("tether.up.*.*.*.topo").await.unwrap();
    let gw = key(&f.gateway);
    let signs = vec![
        sign_with(&f.subs[0], SignMethod::HmacSha1, &f.subs[0].device_secret),
        sign_with(&f.subs[1], SignMethod::HmacMd5, &f.subs[1].device_secret),
    ];
    let added = f.auth.add_topology(&f.tenant, &gw, signs).await.unwrap();
    assert_eq!(added.iter().map(|s| s.iot_id.as_str()).collect::<Vec<_>>(), [&f.subs[0].iot_id, &f.subs[1].iot_id]);
    let event = next_topo_event(&mut events).await;
    assert_eq!(event["action"], "add");
    assert_eq!(event["gwDeviceName"], "g1");
    assert_eq!(event["devices"].as_array().unwrap().len(), 2);
    assert_eq!(f.auth.topology(&f.tenant, &gw).await.unwrap(), added);

    let session = f.auth.login_sub_device(&f.tenant, &gw, sign(&f.subs[0])).await.unwrap();
    assert_eq!((session.device, session.node_type), (key(&f.subs[0]), NodeType::Device));
    assert_eq!(session.iot_id, f.subs[0].iot_id);
}

#[tokio::test]
async fn a_bad_sign_is_refused_with_401() {
    let f = fixture().await;
    let gw = key(&f.gateway);
    let bad = sign_with(&f.subs[0], SignMethod::HmacSha256, "not-the-secret");
    let refused = f.auth.add_topology(&f.tenant, &gw, vec![sign(&f.subs[1]), bad.clone()]).await.unwrap_err();
    assert_eq!(refused, TopologyError::BadSign { device: key(&f.subs[0]) });
    assert_eq!(refused.alink_code().as_u32(), 401);
    // All or none: the good one was not attached either.
    assert!(f.auth.topology(&f.tenant, &gw).await.unwrap().is_empty());

    f.auth.add_topology(&f.tenant, &gw, vec![sign(&f.subs[0])]).await.unwrap();
    let refused = f.auth.login_sub_device(&f.tenant, &gw, bad).await.unwrap_err();
    assert_eq!(refused.alink_code().as_u32(), 401);
}

#[tokio::test]
async fn login_needs_the_topo_relation() {
    let f = fixture().await;
    let gw = key(&f.gateway);
    let refused = f.auth.login_sub_device(&f.tenant, &gw, sign(&f.subs[0])).await.unwrap_err();
    assert_eq!(refused, TopologyError::NoRelation { device: key(&f.subs[0]) });
    assert_eq!(refused.alink_code().as_u32(), 6401);

    f.auth.add_topology(&f.tenant, &gw, vec![sign(&f.subs[0])]).await.unwrap();
    f.auth.remove_topology(&f.tenant, &gw, vec![key(&f.subs[0])]).await.unwrap();
    let refused = f.auth.login_sub_device(&f.tenant, &gw, sign(&f.subs[0])).await.unwrap_err();
    assert_eq!(refused.alink_code().as_u32(), 6401);
    let again = f.auth.remove_topology(&f.tenant, &gw, vec![key(&f.subs[0])]).await.unwrap_err();
    assert_eq!(again.alink_code().as_u32(), 6401);
}

#[tokio::test]
async fn a_gateway_is_not_its_own_sub_device() {
    let f = fixture().await;
    let gw = key(&f.gateway);
    let own = f.auth.add_topology(&f.tenant, &gw, vec![sign(&f.gateway)]).await.unwrap_err();
    assert_eq!((own.clone(), own.alink_code().as_u32()), (TopologyError::OwnSubDevice, 6402));
    // Nor is another gateway.
    let other = f.auth.add_topology(&f.tenant, &gw, vec![sign(&f.gateway2)]).await.unwrap_err();
    assert_eq!(other.alink_code().as_u32(), 460);
    // And a plain device has no topology at all.
    let lamp = f.auth.add_topology(&f.tenant, &key(&f.subs[0]), vec![sign(&f.subs[1])]).await.unwrap_err();
    assert_eq!(lamp, TopologyError::NotGateway { device: key(&f.subs[0]) });
}

#[tokio::test]
async fn topo_add_moves_a_sub_device_to_the_new_gateway() {
    let f = fixture().await;
    let (g1, g2) = (key(&f.gateway), key(&f.gateway2));
    f.auth.add_topology(&f.tenant, &g1, vec![sign(&f.subs[0]), sign(&f.subs[1])]).await.unwrap();
    let mut events = f.bus.subscribe("tether.up.*.*.*.topo").await.unwrap();
    f.auth.add_topology(&f.tenant, &g2, vec![sign(&f.subs[0])]).await.unwrap();

    let removed = next_topo_event(&mut events).await;
    assert_eq!((&removed["action"], &removed["gwDeviceName"]), (&"remove".into(), &"g1".into()));
    assert_eq!(removed["devices"][0]["deviceName"], "s0");
    let added = next_topo_event(&mut events).await;
    assert_eq!((&added["action"], &added["gwDeviceName"]), (&"add".into(), &"g2".into()));

    let names = |list: Vec<SubDevice>| list.into_iter().map(|s| s.device_name.to_string()).collect::<Vec<_>>();
    assert_eq!(names(f.auth.topology(&f.tenant, &g1).await.unwrap()), ["s1"]);
    assert_eq!(names(f.auth.topology(&f.tenant, &g2).await.unwrap()), ["s0"]);
    let old = f.auth.login_sub_device(&f.tenant, &g1, sign(&f.subs[0])).await.unwrap_err();
    assert_eq!(old.alink_code().as_u32(), 6401);
    f.auth.login_sub_device(&f.tenant, &g2, sign(&f.subs[0])).await.unwrap();
}

#[tokio::test]
async fn a_disabled_sub_device_cannot_log_in() {
    let f = fixture().await;
    let gw = key(&f.gateway);
    f.auth.add_topology(&f.tenant, &gw, vec![sign(&f.subs[0])]).await.unwrap();
    f.auth.set_device_enabled(&f.tenant, &key(&f.subs[0]), false).await.unwrap();
    let refused = f.auth.login_sub_device(&f.tenant, &gw, sign(&f.subs[0])).await.unwrap_err();
    assert_eq!(refused, TopologyError::Disabled { device: key(&f.subs[0]) });
    assert_eq!(refused.alink_code().as_u32(), 6204);
}

#[tokio::test]
async fn another_tenants_device_is_not_found() {
    let f = fixture().await;
    let (other, _) = f.auth.create_tenant("other").await.unwrap();
    let theirs = product(&f.auth, &other.tenant_id, "theirs", NodeType::Device).await;
    let stranger = device(&f.auth, &other.tenant_id, &theirs, "x").await;
    let gw = key(&f.gateway);
    let refused = f.auth.add_topology(&f.tenant, &gw, vec![sign(&stranger)]).await.unwrap_err();
    assert_eq!(
        (refused.alink_code().as_u32(), refused),
        (6100, TopologyError::DeviceNotFound { device: key(&stranger) })
    );
    // Nor may another tenant act as this tenant's gateway.
    let foreign_gateway = f.auth.topology(&other.tenant_id, &gw).await.unwrap_err();
    assert_eq!(foreign_gateway.alink_code().as_u32(), 6100);
    let registered = f.auth.register_sub_devices(&f.tenant, &gw, vec![key(&stranger)]).await.unwrap_err();
    assert_eq!(registered.alink_code().as_u32(), 6250);
}

#[tokio::test]
async fn sub_devices_register_through_their_gateway() {
    let f = fixture().await;
    let gw = key(&f.gateway);
    let new = DeviceKey::parse("lamp", "fresh").unwrap();
    let devices = f.auth.register_sub_devices(&f.tenant, &gw, vec![new.clone(), key(&f.subs[0])]).await.unwrap();
    assert_eq!(devices[0].device_secret.len(), 32);
    assert_eq!(devices[1], f.subs[0], "a pre-registered device is handed out as it is");
    assert_eq!(f.auth.get_device(&f.tenant, &new).await.unwrap(), devices[0]);

    // Once another gateway holds a device, its secret is not handed out here.
    f.auth.add_topology(&f.tenant, &key(&f.gateway2), vec![sign(&f.subs[1])]).await.unwrap();
    let refused = f.auth.register_sub_devices(&f.tenant, &gw, vec![key(&f.subs[1])]).await.unwrap_err();
    assert_eq!(refused.alink_code().as_u32(), 460);
}

#[tokio::test]
async fn request_and_gateway_limits() {
    let f = fixture().await;
    let gw = key(&f.gateway);
    let empty = f.auth.add_topology(&f.tenant, &gw, Vec::new()).await.unwrap_err();
    assert_eq!(empty.alink_code().as_u32(), 460);
    let many = vec![key(&f.subs[0]); MAX_SUB_DEVICES_PER_REQUEST + 1];
    let too_many = f.auth.register_sub_devices(&f.tenant, &gw, many).await.unwrap_err();
    assert_eq!(too_many.alink_code().as_u32(), 460);

    // The per-gateway limit, with the in-memory index filled up to it.
    {
        let mut registry = f.auth.registry.write();
        for i in 0..MAX_SUB_DEVICES_PER_GATEWAY {
            registry.topology.attach(DeviceKey::parse("lamp", &format!("filler{i}")).unwrap(), gw.clone());
        }
    }
    let full = f.auth.add_topology(&f.tenant, &gw, vec![sign(&f.subs[0])]).await.unwrap_err();
    assert_eq!(full.alink_code().as_u32(), 6400);
}

#[tokio::test]
async fn relations_survive_a_restart_and_go_with_their_devices() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::new(DEFAULT_TENANT).unwrap();
    let open = || async {
        let store: Arc<dyn KvStore> = Arc::new(FjallStore::open(dir.path()).unwrap());
        Auth::open(store, Arc::new(InProcessBus::new()), "admin").await.unwrap()
    };
    let (gw, sub) = {
        let auth = open().await;
        let gwp = product(&auth, &tenant, "gw", NodeType::Gateway).await;
        let lamp = product(&auth, &tenant, "lamp", NodeType::Device).await;
        let gateway = device(&auth, &tenant, &gwp, "g1").await;
        let sub = device(&auth, &tenant, &lamp, "s0").await;
        auth.add_topology(&tenant, &key(&gateway), vec![sign(&sub)]).await.unwrap();
        (gateway, sub)
    };
    let auth = open().await;
    assert_eq!(auth.topology(&tenant, &key(&gw)).await.unwrap().len(), 1);
    auth.login_sub_device(&tenant, &key(&gw), sign(&sub)).await.unwrap();

    auth.delete_device(&tenant, &key(&sub)).await.unwrap();
    assert!(auth.topology(&tenant, &key(&gw)).await.unwrap().is_empty());
    assert!(auth.store.list("topo/").await.unwrap().is_empty());
    assert!(auth.store.list(GATEWAY_OF).await.unwrap().is_empty());
}

#[test]
fn the_index_keeps_one_gateway_per_sub_device() {
    let mut topology = Topology::default();
    let (g1, g2) = (DeviceKey::parse("gw", "g1").unwrap(), DeviceKey::parse("gw", "g2").unwrap());
    let sub = DeviceKey::parse("lamp", "s").unwrap();
    topology.attach(sub.clone(), g1.clone());
    topology.attach(sub.clone(), g2.clone());
    assert_eq!(topology.gateway_of(&sub), Some(&g2));
    assert_eq!(topology.sub_devices_of(&g1).count(), 0);
    topology.detach(&sub);
    assert_eq!((topology.count(&g2), topology.gateway_of(&sub)), (0, None));
}
