//! [`AuthService`] over gRPC: the client other services hold in cluster mode, and the server
//! adapter the auth role serves. Both convert at the boundary with the `wire` conversions.

use std::sync::Arc;

use async_trait::async_trait;
use tether_model::{ClientIdError, DeviceKey, ProductKey, TenantId, TopicClass};
use tether_proto::v1 as pb;
use tether_proto::v1::auth_client::AuthClient;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::wire::{self, device_ref};
use super::{
    AuthService, Caller, Device, DeviceAuthError, DeviceCredentials, DeviceSession, IssuedApiKey, NewDevice,
    NewProduct, Page, Product, SubDevice, SubDeviceSign, Tenant, TopologyError,
};
use crate::ServiceError;

/// The auth service reached over gRPC.
#[derive(Clone)]
pub struct AuthGrpcClient {
    client: AuthClient<Channel>,
}

/// Serves an [`AuthService`] as the `tether.v1.Auth` gRPC service.
pub struct AuthGrpcServer {
    inner: Arc<dyn AuthService>,
}

// === impl AuthGrpcClient ===

impl AuthGrpcClient {
    /// A client for `url` (`http://host:port`); connects lazily and reconnects by itself.
    pub fn new(url: &str) -> Result<Self, ServiceError> {
        let endpoint = Channel::from_shared(url.to_owned()).map_err(|e| ServiceError::invalid("auth url", e))?;
        let channel = endpoint.connect_timeout(std::time::Duration::from_secs(5)).connect_lazy();
        Ok(Self { client: AuthClient::new(channel) })
    }

    fn client(&self) -> AuthClient<Channel> {
        self.client.clone()
    }
}

fn status(s: Status) -> ServiceError {
    ServiceError::from_status(&s)
}

fn topology_status(s: Status) -> TopologyError {
    TopologyError::from_status(&s)
}

/// An answer from auth that does not convert is auth's fault, never the gateway's.
fn topology_answer<T>(result: Result<T, ServiceError>) -> Result<T, TopologyError> {
    result.map_err(|e| TopologyError::Unavailable { reason: format!("unreadable answer from auth: {e}") })
}

fn sub_devices(list: pb::SubDeviceList) -> Result<Vec<SubDevice>, TopologyError> {
    topology_answer(list.sub_devices.into_iter().map(TryInto::try_into).collect())
}

#[async_trait]
impl AuthService for AuthGrpcClient {
    async fn authenticate_api_key(&self, api_key: &str) -> Result<Caller, ServiceError> {
        let request = pb::AuthenticateApiKeyRequest { api_key: api_key.to_owned() };
        self.client().authenticate_api_key(request).await.map_err(status)?.into_inner().try_into()
    }

    async fn create_tenant(&self, name: &str) -> Result<(Tenant, IssuedApiKey), ServiceError> {
        let response = self.client().create_tenant(pb::CreateTenantRequest { name: name.to_owned() }).await;
        let response = response.map_err(status)?.into_inner();
        let tenant = response.tenant.ok_or_else(|| ServiceError::Internal("tenant missing in reply".into()))?;
        let key = response.key.ok_or_else(|| ServiceError::Internal("key missing in reply".into()))?;
        Ok((tenant.try_into()?, key.into()))
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, ServiceError> {
        let response = self.client().list_tenants(pb::ListTenantsRequest {}).await.map_err(status)?;
        response.into_inner().tenants.into_iter().map(TryInto::try_into).collect()
    }

    async fn create_api_key(&self, tenant: &TenantId) -> Result<IssuedApiKey, ServiceError> {
        let request = pb::CreateApiKeyRequest { tenant_id: tenant.to_string() };
        Ok(self.client().create_api_key(request).await.map_err(status)?.into_inner().into())
    }

    async fn delete_api_key(&self, tenant: &TenantId, key_id: &str) -> Result<(), ServiceError> {
        let request = pb::DeleteApiKeyRequest { tenant_id: tenant.to_string(), key_id: key_id.to_owned() };
        self.client().delete_api_key(request).await.map_err(status)?;
        Ok(())
    }

    async fn create_product(&self, tenant: &TenantId, product: NewProduct) -> Result<Product, ServiceError> {
        let request = pb::CreateProductRequest {
            tenant_id: tenant.to_string(),
            name: product.name,
            product_key: product.product_key.map(|pk| pk.to_string()),
            node_type: pb::NodeType::from(product.node_type).into(),
            data_format: pb::DataFormat::from(product.data_format).into(),
            dialect: pb::Dialect::from(product.dialect).into(),
        };
        self.client().create_product(request).await.map_err(status)?.into_inner().try_into()
    }

    async fn list_products(&self, tenant: &TenantId) -> Result<Vec<Product>, ServiceError> {
        let request = pb::ListProductsRequest { tenant_id: tenant.to_string() };
        let response = self.client().list_products(request).await.map_err(status)?;
        response.into_inner().products.into_iter().map(TryInto::try_into).collect()
    }

    async fn get_product(&self, tenant: &TenantId, product_key: &ProductKey) -> Result<Product, ServiceError> {
        let request = pb::ProductRef { tenant_id: tenant.to_string(), product_key: product_key.to_string() };
        self.client().get_product(request).await.map_err(status)?.into_inner().try_into()
    }

    async fn delete_product(&self, tenant: &TenantId, product_key: &ProductKey) -> Result<(), ServiceError> {
        let request = pb::ProductRef { tenant_id: tenant.to_string(), product_key: product_key.to_string() };
        self.client().delete_product(request).await.map_err(status)?;
        Ok(())
    }

    async fn add_topic_class(
        &self,
        tenant: &TenantId,
        product_key: &ProductKey,
        class: TopicClass,
    ) -> Result<Product, ServiceError> {
        let request = pb::AddTopicClassRequest {
            tenant_id: tenant.to_string(),
            product_key: product_key.to_string(),
            class: Some(wire::topic_class_to_wire(&class)),
        };
        self.client().add_topic_class(request).await.map_err(status)?.into_inner().try_into()
    }

    async fn register_device(
        &self,
        tenant: &TenantId,
        product_key: &ProductKey,
        device: NewDevice,
    ) -> Result<Device, ServiceError> {
        let request = pb::RegisterDeviceRequest {
            tenant_id: tenant.to_string(),
            product_key: product_key.to_string(),
            device_name: device.device_name.map(|d| d.to_string()),
            device_secret: device.device_secret,
        };
        self.client().register_device(request).await.map_err(status)?.into_inner().try_into()
    }

    async fn list_devices(
        &self,
        tenant: &TenantId,
        product_key: &ProductKey,
        page_size: usize,
        page_token: Option<&str>,
    ) -> Result<Page<Device>, ServiceError> {
        let request = pb::ListDevicesRequest {
            tenant_id: tenant.to_string(),
            product_key: product_key.to_string(),
            page_size: u32::try_from(page_size).unwrap_or(u32::MAX),
            page_token: page_token.map(str::to_owned),
        };
        let response = self.client().list_devices(request).await.map_err(status)?.into_inner();
        let items = response.devices.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?;
        Ok(Page { items, next_page_token: response.next_page_token })
    }

    async fn get_device(&self, tenant: &TenantId, device: &DeviceKey) -> Result<Device, ServiceError> {
        self.client().get_device(device_ref(tenant, device)).await.map_err(status)?.into_inner().try_into()
    }

    async fn delete_device(&self, tenant: &TenantId, device: &DeviceKey) -> Result<(), ServiceError> {
        self.client().delete_device(device_ref(tenant, device)).await.map_err(status)?;
        Ok(())
    }

    async fn set_device_enabled(
        &self,
        tenant: &TenantId,
        device: &DeviceKey,
        enabled: bool,
    ) -> Result<Device, ServiceError> {
        let request = pb::SetDeviceEnabledRequest { device: Some(device_ref(tenant, device)), enabled };
        self.client().set_device_enabled(request).await.map_err(status)?.into_inner().try_into()
    }

    async fn find_device(&self, device: &DeviceKey) -> Result<Device, ServiceError> {
        let request = pb::FindDeviceRequest {
            product_key: device.product_key.to_string(),
            device_name: device.device_name.to_string(),
        };
        self.client().find_device(request).await.map_err(status)?.into_inner().try_into()
    }

    async fn authenticate_device(&self, credentials: DeviceCredentials) -> Result<DeviceSession, DeviceAuthError> {
        let request = pb::AuthenticateDeviceRequest {
            client_id: credentials.client_id,
            username: credentials.username,
            password: credentials.password,
        };
        let response = self
            .client()
            .authenticate_device(request)
            .await
            .map_err(|s| DeviceAuthError::Unavailable(s.message().to_owned()))?
            .into_inner();
        match response.outcome {
            Some(pb::authenticate_device_response::Outcome::Session(session)) => {
                session.try_into().map_err(|e: ServiceError| DeviceAuthError::Unavailable(e.to_string()))
            }
            Some(pb::authenticate_device_response::Outcome::Refusal(code)) => Err(refusal(code, response.reason)),
            None => Err(DeviceAuthError::Unavailable("empty answer from auth".into())),
        }
    }

    async fn add_topology(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
        sub_devices: Vec<SubDeviceSign>,
    ) -> Result<Vec<SubDevice>, TopologyError> {
        let request = pb::AddTopologyRequest {
            gateway: Some(device_ref(tenant, gateway)),
            sub_devices: sub_devices.into_iter().map(Into::into).collect(),
        };
        let response = self.client().add_topology(request).await.map_err(topology_status)?;
        self::sub_devices(response.into_inner())
    }

    async fn remove_topology(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
        sub_devices: Vec<DeviceKey>,
    ) -> Result<Vec<SubDevice>, TopologyError> {
        let request = pb::RemoveTopologyRequest {
            gateway: Some(device_ref(tenant, gateway)),
            sub_devices: sub_devices.iter().map(wire::device_key_to_wire).collect(),
        };
        let response = self.client().remove_topology(request).await.map_err(topology_status)?;
        self::sub_devices(response.into_inner())
    }

    async fn topology(&self, tenant: &TenantId, gateway: &DeviceKey) -> Result<Vec<SubDevice>, TopologyError> {
        let response = self.client().get_topology(device_ref(tenant, gateway)).await.map_err(topology_status)?;
        sub_devices(response.into_inner())
    }

    async fn register_sub_devices(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
        sub_devices: Vec<DeviceKey>,
    ) -> Result<Vec<Device>, TopologyError> {
        let request = pb::RegisterSubDevicesRequest {
            gateway: Some(device_ref(tenant, gateway)),
            sub_devices: sub_devices.iter().map(wire::device_key_to_wire).collect(),
        };
        let response = self.client().register_sub_devices(request).await.map_err(topology_status)?;
        topology_answer(response.into_inner().devices.into_iter().map(TryInto::try_into).collect())
    }

    async fn login_sub_device(
        &self,
        tenant: &TenantId,
        gateway: &DeviceKey,
        sign: SubDeviceSign,
    ) -> Result<DeviceSession, TopologyError> {
        let request = pb::LoginSubDeviceRequest { gateway: Some(device_ref(tenant, gateway)), sign: Some(sign.into()) };
        let response = self.client().login_sub_device(request).await.map_err(topology_status)?;
        topology_answer(response.into_inner().try_into())
    }
}

fn refusal(code: i32, reason: String) -> DeviceAuthError {
    match pb::DeviceRefusal::try_from(code) {
        Ok(pb::DeviceRefusal::ClientId) => DeviceAuthError::ClientId(ClientIdError::Remote(reason)),
        Ok(pb::DeviceRefusal::Username) => DeviceAuthError::Username,
        Ok(pb::DeviceRefusal::UnknownDevice) => DeviceAuthError::UnknownDevice,
        Ok(pb::DeviceRefusal::Disabled) => DeviceAuthError::Disabled,
        Ok(pb::DeviceRefusal::BadSign) => DeviceAuthError::BadSign,
        _ => DeviceAuthError::Unavailable(reason),
    }
}

// === impl AuthGrpcServer ===

impl AuthGrpcServer {
    pub fn new(inner: Arc<dyn AuthService>) -> Self {
        Self { inner }
    }

    /// The tonic service to add to a server.
    pub fn into_service(self) -> pb::auth_server::AuthServer<Self> {
        pb::auth_server::AuthServer::new(self)
    }
}

type GrpcResult<T> = Result<Response<T>, Status>;

fn reply<T, U: Into<T>>(result: Result<U, ServiceError>) -> GrpcResult<T> {
    result.map(|v| Response::new(v.into())).map_err(|e| e.to_status())
}

fn product_ref(r: &pb::ProductRef) -> Result<(TenantId, ProductKey), Status> {
    Ok((
        wire::tenant_id(&r.tenant_id).map_err(|e| e.to_status())?,
        wire::product_key(&r.product_key).map_err(|e| e.to_status())?,
    ))
}

fn device_of(r: &pb::DeviceRef) -> Result<(TenantId, DeviceKey), Status> {
    let tenant = wire::tenant_id(&r.tenant_id).map_err(|e| e.to_status())?;
    let device = wire::device_key(&r.product_key, &r.device_name).map_err(|e| e.to_status())?;
    Ok((tenant, device))
}

fn tenant_of(raw: &str) -> Result<TenantId, Status> {
    wire::tenant_id(raw).map_err(|e| e.to_status())
}

/// A malformed topology request is refused as the topology error the client expects.
fn topology_input(e: ServiceError) -> Status {
    TopologyError::from(e).to_status()
}

fn gateway_of(r: Option<pb::DeviceRef>) -> Result<(TenantId, DeviceKey), Status> {
    let r = r.ok_or_else(|| TopologyError::invalid("gateway", "missing").to_status())?;
    let tenant = wire::tenant_id(&r.tenant_id).map_err(topology_input)?;
    let gateway = wire::device_key(&r.product_key, &r.device_name).map_err(topology_input)?;
    Ok((tenant, gateway))
}

fn device_keys(raw: Vec<pb::DeviceKey>) -> Result<Vec<DeviceKey>, Status> {
    wire::device_keys(raw).map_err(topology_input)
}

fn sub_device_list(list: Vec<SubDevice>) -> pb::SubDeviceList {
    pb::SubDeviceList { sub_devices: list.into_iter().map(Into::into).collect() }
}

#[async_trait]
impl pb::auth_server::Auth for AuthGrpcServer {
    async fn authenticate_api_key(&self, req: Request<pb::AuthenticateApiKeyRequest>) -> GrpcResult<pb::Caller> {
        reply(self.inner.authenticate_api_key(&req.into_inner().api_key).await)
    }

    async fn create_tenant(&self, req: Request<pb::CreateTenantRequest>) -> GrpcResult<pb::CreateTenantResponse> {
        let (tenant, key) = self.inner.create_tenant(&req.into_inner().name).await.map_err(|e| e.to_status())?;
        Ok(Response::new(pb::CreateTenantResponse { tenant: Some(tenant.into()), key: Some(key.into()) }))
    }

    async fn list_tenants(&self, _: Request<pb::ListTenantsRequest>) -> GrpcResult<pb::ListTenantsResponse> {
        let tenants = self.inner.list_tenants().await.map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ListTenantsResponse { tenants: tenants.into_iter().map(Into::into).collect() }))
    }

    async fn create_api_key(&self, req: Request<pb::CreateApiKeyRequest>) -> GrpcResult<pb::IssuedApiKey> {
        let tenant = tenant_of(&req.into_inner().tenant_id)?;
        reply(self.inner.create_api_key(&tenant).await)
    }

    async fn delete_api_key(&self, req: Request<pb::DeleteApiKeyRequest>) -> GrpcResult<pb::Empty> {
        let req = req.into_inner();
        let tenant = tenant_of(&req.tenant_id)?;
        self.inner.delete_api_key(&tenant, &req.key_id).await.map_err(|e| e.to_status())?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn create_product(&self, req: Request<pb::CreateProductRequest>) -> GrpcResult<pb::Product> {
        let req = req.into_inner();
        let tenant = tenant_of(&req.tenant_id)?;
        let to_status = |e: ServiceError| e.to_status();
        let product = NewProduct {
            name: req.name,
            product_key: req.product_key.as_deref().map(wire::product_key).transpose().map_err(to_status)?,
            node_type: wire::node_type(req.node_type).map_err(to_status)?,
            data_format: wire::data_format(req.data_format).map_err(to_status)?,
            dialect: wire::dialect(req.dialect).map_err(to_status)?,
        };
        reply(self.inner.create_product(&tenant, product).await)
    }

    async fn list_products(&self, req: Request<pb::ListProductsRequest>) -> GrpcResult<pb::ListProductsResponse> {
        let tenant = tenant_of(&req.into_inner().tenant_id)?;
        let products = self.inner.list_products(&tenant).await.map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ListProductsResponse { products: products.into_iter().map(Into::into).collect() }))
    }

    async fn get_product(&self, req: Request<pb::ProductRef>) -> GrpcResult<pb::Product> {
        let (tenant, pk) = product_ref(&req.into_inner())?;
        reply(self.inner.get_product(&tenant, &pk).await)
    }

    async fn delete_product(&self, req: Request<pb::ProductRef>) -> GrpcResult<pb::Empty> {
        let (tenant, pk) = product_ref(&req.into_inner())?;
        self.inner.delete_product(&tenant, &pk).await.map_err(|e| e.to_status())?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn add_topic_class(&self, req: Request<pb::AddTopicClassRequest>) -> GrpcResult<pb::Product> {
        let req = req.into_inner();
        let tenant = tenant_of(&req.tenant_id)?;
        let pk = wire::product_key(&req.product_key).map_err(|e| e.to_status())?;
        let class = req.class.ok_or_else(|| ServiceError::invalid("class", "missing").to_status())?;
        let class = wire::topic_class(class).map_err(|e| e.to_status())?;
        reply(self.inner.add_topic_class(&tenant, &pk, class).await)
    }

    async fn register_device(&self, req: Request<pb::RegisterDeviceRequest>) -> GrpcResult<pb::Device> {
        let req = req.into_inner();
        let tenant = tenant_of(&req.tenant_id)?;
        let pk = wire::product_key(&req.product_key).map_err(|e| e.to_status())?;
        let device_name = req.device_name.as_deref().map(wire::device_name).transpose().map_err(|e| e.to_status())?;
        let device = NewDevice { device_name, device_secret: req.device_secret };
        reply(self.inner.register_device(&tenant, &pk, device).await)
    }

    async fn list_devices(&self, req: Request<pb::ListDevicesRequest>) -> GrpcResult<pb::ListDevicesResponse> {
        let req = req.into_inner();
        let tenant = tenant_of(&req.tenant_id)?;
        let pk = wire::product_key(&req.product_key).map_err(|e| e.to_status())?;
        let page_size = usize::try_from(req.page_size).unwrap_or(usize::MAX);
        let page = self
            .inner
            .list_devices(&tenant, &pk, page_size, req.page_token.as_deref())
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ListDevicesResponse {
            devices: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_device(&self, req: Request<pb::DeviceRef>) -> GrpcResult<pb::Device> {
        let (tenant, device) = device_of(&req.into_inner())?;
        reply(self.inner.get_device(&tenant, &device).await)
    }

    async fn delete_device(&self, req: Request<pb::DeviceRef>) -> GrpcResult<pb::Empty> {
        let (tenant, device) = device_of(&req.into_inner())?;
        self.inner.delete_device(&tenant, &device).await.map_err(|e| e.to_status())?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn set_device_enabled(&self, req: Request<pb::SetDeviceEnabledRequest>) -> GrpcResult<pb::Device> {
        let req = req.into_inner();
        let device = req.device.ok_or_else(|| ServiceError::invalid("device", "missing").to_status())?;
        let (tenant, device) = device_of(&device)?;
        reply(self.inner.set_device_enabled(&tenant, &device, req.enabled).await)
    }

    async fn find_device(&self, req: Request<pb::FindDeviceRequest>) -> GrpcResult<pb::Device> {
        let req = req.into_inner();
        let device = wire::device_key(&req.product_key, &req.device_name).map_err(|e| e.to_status())?;
        reply(self.inner.find_device(&device).await)
    }

    async fn authenticate_device(
        &self,
        req: Request<pb::AuthenticateDeviceRequest>,
    ) -> GrpcResult<pb::AuthenticateDeviceResponse> {
        use pb::authenticate_device_response::Outcome;
        let req = req.into_inner();
        let credentials =
            DeviceCredentials { client_id: req.client_id, username: req.username, password: req.password };
        let response = match self.inner.authenticate_device(credentials).await {
            Ok(session) => pb::AuthenticateDeviceResponse {
                outcome: Some(Outcome::Session(session.into())),
                reason: String::new(),
            },
            Err(DeviceAuthError::Unavailable(reason)) => return Err(Status::unavailable(reason)),
            Err(err) => {
                let code = match err {
                    DeviceAuthError::ClientId(_) => pb::DeviceRefusal::ClientId,
                    DeviceAuthError::Username => pb::DeviceRefusal::Username,
                    DeviceAuthError::UnknownDevice => pb::DeviceRefusal::UnknownDevice,
                    DeviceAuthError::Disabled => pb::DeviceRefusal::Disabled,
                    DeviceAuthError::BadSign | DeviceAuthError::Unavailable(_) => pb::DeviceRefusal::BadSign,
                };
                pb::AuthenticateDeviceResponse { outcome: Some(Outcome::Refusal(code.into())), reason: err.to_string() }
            }
        };
        Ok(Response::new(response))
    }
    async fn add_topology(&self, req: Request<pb::AddTopologyRequest>) -> GrpcResult<pb::SubDeviceList> {
        let req = req.into_inner();
        let (tenant, gateway) = gateway_of(req.gateway)?;
        let signs = req.sub_devices.into_iter().map(TryInto::try_into).collect::<Result<_, ServiceError>>();
        let list = self.inner.add_topology(&tenant, &gateway, signs.map_err(topology_input)?).await;
        Ok(Response::new(sub_device_list(list.map_err(|e| e.to_status())?)))
    }

    async fn remove_topology(&self, req: Request<pb::RemoveTopologyRequest>) -> GrpcResult<pb::SubDeviceList> {
        let req = req.into_inner();
        let (tenant, gateway) = gateway_of(req.gateway)?;
        let list = self.inner.remove_topology(&tenant, &gateway, device_keys(req.sub_devices)?).await;
        Ok(Response::new(sub_device_list(list.map_err(|e| e.to_status())?)))
    }

    async fn get_topology(&self, req: Request<pb::DeviceRef>) -> GrpcResult<pb::SubDeviceList> {
        let (tenant, gateway) = gateway_of(Some(req.into_inner()))?;
        let list = self.inner.topology(&tenant, &gateway).await.map_err(|e| e.to_status())?;
        Ok(Response::new(sub_device_list(list)))
    }

    async fn register_sub_devices(
        &self,
        req: Request<pb::RegisterSubDevicesRequest>,
    ) -> GrpcResult<pb::RegisterSubDevicesResponse> {
        let req = req.into_inner();
        let (tenant, gateway) = gateway_of(req.gateway)?;
        let devices = self.inner.register_sub_devices(&tenant, &gateway, device_keys(req.sub_devices)?).await;
        let devices = devices.map_err(|e| e.to_status())?.into_iter().map(Into::into).collect();
        Ok(Response::new(pb::RegisterSubDevicesResponse { devices }))
    }

    async fn login_sub_device(&self, req: Request<pb::LoginSubDeviceRequest>) -> GrpcResult<pb::DeviceSession> {
        let req = req.into_inner();
        let (tenant, gateway) = gateway_of(req.gateway)?;
        let sign = req.sign.ok_or_else(|| TopologyError::invalid("sign", "missing").to_status())?;
        let sign = SubDeviceSign::try_from(sign).map_err(topology_input)?;
        let session = self.inner.login_sub_device(&tenant, &gateway, sign).await.map_err(|e| e.to_status())?;
        Ok(Response::new(session.into()))
    }
}
