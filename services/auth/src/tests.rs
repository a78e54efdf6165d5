use tether_bus::InProcessBus;
use tether_contract::{DataFormat, Dialect, NodeType};
use tether_model::SignMethod;
use tether_store::FjallStore;

use super::*;

async fn auth(dir: &std::path::Path) -> Auth {
    let store: Arc<dyn KvStore> = Arc::new(FjallStore::open(dir).unwrap());
    Auth::open(store, Arc::new(InProcessBus::new()), "admin-key").await.unwrap()
}

fn new_product(name: &str) -> NewProduct {
    NewProduct {
        name: name.into(),
        product_key: None,
        node_type: NodeType::Device,
        data_format: DataFormat::Alink,
        dialect: Dialect::Alink,
    }
}

fn credentials(device: &Device, method: SignMethod, secret: &str) -> DeviceCredentials {
    let params = SignParams {
        client_id: "c1",
        device_name: device.device_name.as_str(),
        product_key: device.product_key.as_str(),
        timestamp: Some("1700000000000"),
    };
    DeviceCredentials {
        client_id: format!("c1|securemode=3,signmethod={},timestamp=1700000000000|", method.as_str()),
        username: format!("{}&{}", device.device_name, device.product_key),
        password: method.sign(secret, &params).into_bytes(),
    }
}

#[tokio::test]
async fn devices_authenticate_with_their_sign_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::new(DEFAULT_TENANT).unwrap();
    let device = {
        let auth = auth(dir.path()).await;
        let product = auth.create_product(&tenant, new_product("lamp")).await.unwrap();
        assert_eq!(product.product_key.as_str().len(), 11);
        let device = auth.register_device(&tenant, &product.product_key, NewDevice::default()).await.unwrap();
        assert_eq!(device.device_secret.len(), 32);
        device
    };
    let auth = auth(dir.path()).await;
    assert_eq!(auth.authenticate_api_key("admin-key").await.unwrap(), Caller { tenant: tenant.clone(), admin: true });
    for method in [SignMethod::HmacMd5, SignMethod::HmacSha1, SignMethod::HmacSha256] {
        let session = auth.authenticate_device(credentials(&device, method, &device.device_secret)).await.unwrap();
        assert_eq!(session.device.device_name, device.device_name);
    }
    let bad = auth.authenticate_device(credentials(&device, SignMethod::HmacSha1, "wrong")).await;
    assert_eq!(bad, Err(DeviceAuthError::BadSign));

    let key = DeviceKey::new(device.product_key.clone(), device.device_name.clone());
    auth.set_device_enabled(&tenant, &key, false).await.unwrap();
    let disabled = auth.authenticate_device(credentials(&device, SignMethod::HmacSha1, &device.device_secret)).await;
    assert_eq!(disabled, Err(DeviceAuthError::Disabled));
}

#[tokio::test]
async fn tenants_see_only_their_own_products() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth(dir.path()).await;
    let (tenant, key) = auth.create_tenant("acme").await.unwrap();
    assert_eq!(auth.authenticate_api_key(&key.api_key).await.unwrap().tenant, tenant.tenant_id);
    let default = TenantId::new(DEFAULT_TENANT).unwrap();
    let product = auth.create_product(&default, new_product("p")).await.unwrap();
    let foreign = auth.get_product(&tenant.tenant_id, &product.product_key).await;
    assert!(matches!(foreign, Err(ServiceError::NotFound { .. })));
    auth.delete_api_key(&tenant.tenant_id, &key.key_id).await.unwrap();
    assert_eq!(auth.authenticate_api_key(&key.api_key).await, Err(ServiceError::Unauthenticated));
}

#[tokio::test]
async fn device_listing_pages() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth(dir.path()).await;
    let tenant = TenantId::new(DEFAULT_TENANT).unwrap();
    let product = auth.create_product(&tenant, new_product("p")).await.unwrap();
    for i in 0..5 {
        let new = NewDevice { device_name: Some(DeviceName::new(format!("d{i}")).unwrap()), device_secret: None };
        auth.register_device(&tenant, &product.product_key, new).await.unwrap();
    }
    let first = auth.list_devices(&tenant, &product.product_key, 3, None).await.unwrap();
    assert_eq!(first.items.len(), 3);
    let token = first.next_page_token.unwrap();
    let second = auth.list_devices(&tenant, &product.product_key, 3, Some(&token)).await.unwrap();
    assert_eq!(second.items.iter().map(|d| d.device_name.as_str()).collect::<Vec<_>>(), ["d3", "d4"]);
    assert_eq!(second.next_page_token, None);
}
