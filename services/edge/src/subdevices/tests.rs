use tokio::sync::mpsc;

use super::*;
use crate::connections::{ConnCommand, ConnHandle, Connections, KickReason};
use crate::session::ClosedSession;

fn route(conn_id: u64) -> tether_store::Route {
    tether_store::Route { node: "n".into(), conn_id, connected_at: 1, client_ip: "10.0.0.1".into() }
}

fn session(dn: &str) -> DeviceSession {
    DeviceSession {
        tenant: tether_model::TenantId::new("t").unwrap(),
        device: DeviceKey::parse("pk", dn).unwrap(),
        iot_id: format!("iot-{dn}"),
        node_type: NodeType::Device,
        topic_classes: Vec::new(),
    }
}

/// A registry with gateway `pk/gw` connected as connection 1; its command channel.
fn gateway_connected() -> (Connections, mpsc::UnboundedReceiver<ClosedSession>, mpsc::UnboundedReceiver<ConnCommand>) {
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let connections = Connections::new(closed_tx);
    let (commands, gateway_commands) = mpsc::unbounded_channel();
    let gateway = DeviceKey::parse("pk", "gw").unwrap();
    connections.insert(&gateway, ConnHandle { conn_id: 1, route: route(1), commands, sub_device: None });
    (connections, closed, gateway_commands)
}

#[test]
fn a_sub_device_session_ends_without_touching_the_gateway_connection() {
    let (connections, mut closed, mut gateway_commands) = gateway_connected();
    let gateway = DeviceKey::parse("pk", "gw").unwrap();
    let sub = session("s1");
    assert!(connections.log_in_sub_device(&gateway, 1, sub.clone(), route(1)));
    assert!(!connections.log_in_sub_device(&gateway, 2, session("s2"), route(2)), "not the gateway's connection");
    assert_eq!(connections.sub_device(&sub.device, 1), Some(sub.clone()));
    assert_eq!(connections.sub_device(&sub.device, 2), None);
    assert_eq!(connections.devices(), std::slice::from_ref(&gateway), "a drain walks real connections only");

    // Disabling the sub-device logs it out; the gateway's connection gets no kick.
    assert!(connections.kick(&sub.device, KickReason::NotAuthorized));
    assert!(closed.try_recv().is_ok());
    assert!(gateway_commands.try_recv().is_err());
    assert_eq!(connections.sub_device(&sub.device, 1), None);

    // A direct connection of a logged-in sub-device replaces its login, again without a kick.
    assert!(connections.log_in_sub_device(&gateway, 1, sub.clone(), route(1)));
    let (commands, _direct) = mpsc::unbounded_channel();
    connections.insert(&sub.device, ConnHandle { conn_id: 7, route: route(7), commands, sub_device: None });
    assert!(gateway_commands.try_recv().is_err());
    connections.log_out_sub_devices(1);
    assert!(closed.try_recv().is_err(), "the sub-device is connected elsewhere now");
}

#[test]
fn the_gateway_connection_ending_logs_out_its_sub_devices() {
    let (connections, mut closed, _gateway_commands) = gateway_connected();
    let gateway = DeviceKey::parse("pk", "gw").unwrap();
    for dn in ["s1", "s2"] {
        assert!(connections.log_in_sub_device(&gateway, 1, session(dn), route(1)));
    }
    assert_eq!(connections.sub_devices(1).len(), 2);
    connections.log_out_sub_devices(1);
    assert!(closed.try_recv().is_ok() && closed.try_recv().is_ok());
    assert!(connections.sub_devices(1).is_empty());
    assert!(!connections.log_out_sub_device(&DeviceKey::parse("pk", "s1").unwrap(), 1));
}

#[test]
fn signs_read_as_the_official_sdks_send_them() {
    // thing/topo/add: `signmethod`, lower-case key, per device.
    let topo = json!({"productKey": "lamp", "deviceName": "s1", "clientId": "lamp.s1",
        "timestamp": "1700000000000", "signmethod": "hmacSha256", "sign": "ab"});
    let sign = sub_device_sign(&topo, None, "params[0]").unwrap();
    assert_eq!((sign.sign_method, sign.client_id.as_str()), (SignMethod::HmacSha256, "lamp.s1"));
    // combine/batch_login: `signMethod` once for the batch, numbers as timestamps.
    let login = json!({"productKey": "lamp", "deviceName": "s1", "clientId": "lamp.s1|lan=Python|",
        "timestamp": 1700000000000_i64, "sign": "ab", "cleanSession": "false"});
    let sign = sub_device_sign(&login, Some("HMACMD5"), "params.deviceList[0]").unwrap();
    assert_eq!((sign.sign_method, sign.timestamp.as_deref()), (SignMethod::HmacMd5, Some("1700000000000")));
    assert_eq!(sub_device_sign(&login, None, "p").unwrap_err().code, AlinkCode::ParamError);
    assert_eq!(sub_device_sign(&login, Some("rsa"), "p").unwrap_err().code, AlinkCode::ParamError);
}

#[test]
fn bad_names_and_lists_get_their_codes() {
    let bad_name = json!({"productKey": "lamp", "deviceName": "a/b"});
    assert_eq!(device_key(&bad_name, "params").unwrap_err().code, AlinkCode::BadSubDeviceName);
    let no_product = json!({"deviceName": "x"});
    assert_eq!(device_key(&no_product, "params").unwrap_err().code, AlinkCode::ParamError);
    assert_eq!(list(&json!({}), "params").unwrap_err().code, AlinkCode::ParamError);
    assert_eq!(list(&json!([]), "params").unwrap_err().code, AlinkCode::ParamError);
    // Batch logout: a bare list (the Python SDK) or a deviceList.
    let item = json!({"productKey": "lamp", "deviceName": "x"});
    assert_eq!(device_list(&json!([item.clone()])).unwrap().len(), 1);
    assert_eq!(device_list(&json!({"deviceList": [item]})).unwrap().len(), 1);
}
