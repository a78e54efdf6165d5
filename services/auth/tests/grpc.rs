//! The auth service over a real gRPC socket: the cluster-mode client gets exactly what the
//! service says, errors and device refusals included.

use std::sync::Arc;

use tether_auth::{Auth, DEFAULT_TENANT};
use tether_bus::InProcessBus;
use tether_contract::{
    AuthGrpcClient, AuthGrpcServer, AuthService, DataFormat, DeviceAuthError, DeviceCredentials, Dialect, NewDevice,
    NewProduct, NodeType, ServiceError, SubDevice, SubDeviceSign, TopologyError,
};
use tether_model::{DeviceKey, ProductKey, SignMethod, SignParams, TenantId};
use tether_store::{FjallStore, KvStore};

async fn serve() -> (AuthGrpcClient, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn KvStore> = Arc::new(FjallStore::open(dir.path()).unwrap());
    let auth: Arc<dyn AuthService> = Arc::new(Auth::open(store, Arc::new(InProcessBus::new()), "admin").await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuthGrpcServer::new(auth).into_service())
            .serve_with_incoming(incoming),
    );
    (AuthGrpcClient::new(&format!("http://{addr}")).unwrap(), dir)
}

#[tokio::test]
async fn registry_and_errors_cross_the_wire_intact() {
    let (client, _dir) = serve().await;
    let tenant = TenantId::new(DEFAULT_TENANT).unwrap();
    assert_eq!(client.authenticate_api_key("admin").await.unwrap().tenant, tenant);
    assert_eq!(client.authenticate_api_key("wrong").await, Err(ServiceError::Unauthenticated));

    let new = NewProduct {
        name: "lamp".into(),
        product_key: Some(ProductKey::new("pk1").unwrap()),
        node_type: NodeType::Gateway,
        data_format: DataFormat::Alink,
        dialect: Dialect::Alink,
    };
    let product = client.create_product(&tenant, new.clone()).await.unwrap();
    assert_eq!(product.node_type, NodeType::Gateway);
    assert_eq!(product.topic_classes.len(), 3);
    let again = client.create_product(&tenant, new).await;
    assert_eq!(again, Err(ServiceError::AlreadyExists { what: "product pk1".into() }));

    let device = client.register_device(&tenant, &product.product_key, NewDevice::default()).await.unwrap();
    let key = DeviceKey::new(device.product_key.clone(), device.device_name.clone());
    assert_eq!(client.get_device(&tenant, &key).await.unwrap(), device);
    let other = TenantId::new("someone").unwrap();
    assert!(matches!(client.get_device(&other, &key).await, Err(ServiceError::NotFound { .. })));

    let sign = |secret: &str| {
        let params = SignParams {
            client_id: "c",
            device_name: device.device_name.as_str(),
            product_key: device.product_key.as_str(),
            timestamp: None,
        };
        DeviceCredentials {
            client_id: "c|securemode=3,signmethod=hmacsha256|".into(),
            username: format!("{}&{}", device.device_name, device.product_key),
            password: SignMethod::HmacSha256.sign(secret, &params).into_bytes(),
        }
    };
    let session = client.authenticate_device(sign(&device.device_secret)).await.unwrap();
    assert_eq!((session.device, session.node_type), (key.clone(), NodeType::Gateway));
    assert_eq!(client.authenticate_device(sign("nope")).await, Err(DeviceAuthError::BadSign));
    client.set_device_enabled(&tenant, &key, false).await.unwrap();
    assert_eq!(client.authenticate_device(sign(&device.device_secret)).await, Err(DeviceAuthError::Disabled));
}

#[tokio::test]
async fn topology_and_its_alink_codes_cross_the_wire_intact() {
    let (client, _dir) = serve().await;
    let tenant = TenantId::new(DEFAULT_TENANT).unwrap();
    let product = |pk: &str, node_type| NewProduct {
        name: pk.into(),
        product_key: Some(ProductKey::new(pk).unwrap()),
        node_type,
        data_format: DataFormat::Alink,
        dialect: Dialect::Alink,
    };
    let gw = client.create_product(&tenant, product("gw", NodeType::Gateway)).await.unwrap().product_key;
    let lamp = client.create_product(&tenant, product("lamp", NodeType::Device)).await.unwrap().product_key;
    let gateway = client.register_device(&tenant, &gw, NewDevice::default()).await.unwrap();
    let gateway = DeviceKey::new(gateway.product_key, gateway.device_name);

    // Registered through the gateway, with secrets in the answer.
    let wanted = DeviceKey::parse("lamp", "s1").unwrap();
    let registered = client.register_sub_devices(&tenant, &gateway, vec![wanted.clone()]).await.unwrap();
    let sub = &registered[0];
    assert_eq!((&sub.product_key, sub.device_secret.len()), (&lamp, 32));

    let sign = |secret: &str, method: SignMethod| {
        let params = SignParams {
            client_id: "lamp&s1",
            device_name: "s1",
            product_key: "lamp",
            timestamp: Some("1524448722000"),
        };
        SubDeviceSign {
            device: wanted.clone(),
            client_id: "lamp&s1".into(),
            timestamp: Some("1524448722000".into()),
            sign_method: method,
            sign: method.sign(secret, &params),
        }
    };
    let not_yet = client.login_sub_device(&tenant, &gateway, sign(&sub.device_secret, SignMethod::HmacMd5)).await;
    assert_eq!(not_yet.unwrap_err(), TopologyError::NoRelation { device: wanted.clone() });

    let added = client.add_topology(&tenant, &gateway, vec![sign(&sub.device_secret, SignMethod::HmacSha1)]).await;
    let expected =
        vec![SubDevice { product_key: lamp, device_name: wanted.device_name.clone(), iot_id: sub.iot_id.clone() }];
    assert_eq!(added.unwrap(), expected);
    assert_eq!(client.topology(&tenant, &gateway).await.unwrap(), expected);

    let bad = client.login_sub_device(&tenant, &gateway, sign("wrong", SignMethod::HmacSha256)).await.unwrap_err();
    assert_eq!((bad.alink_code().as_u32(), bad), (401, TopologyError::BadSign { device: wanted.clone() }));
    let session = client.login_sub_device(&tenant, &gateway, sign(&sub.device_secret, SignMethod::HmacSha256)).await;
    let session = session.unwrap();
    assert_eq!((session.device, session.iot_id, session.tenant), (wanted.clone(), sub.iot_id.clone(), tenant.clone()));

    let own = client.remove_topology(&tenant, &gateway, vec![gateway.clone()]).await.unwrap_err();
    assert_eq!(own.alink_code().as_u32(), 6402);
    assert_eq!(client.remove_topology(&tenant, &gateway, vec![wanted.clone()]).await.unwrap(), expected);
    assert!(client.topology(&tenant, &gateway).await.unwrap().is_empty());
}
