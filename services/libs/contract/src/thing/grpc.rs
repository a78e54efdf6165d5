//! [`ThingService`] over gRPC: the client the edge and gateway hold in cluster mode, and the
//! server adapter the thing role serves. Both convert at the boundary with the `wire`
//! conversions.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tether_model::{DeviceKey, ProductKey, Tsl};
use tether_proto::v1 as pb;
use tether_proto::v1::thing_client::ThingClient;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::wire::{self, DeviceScoped};
use super::{DesiredValue, DeviceMessage, DeviceRequest, PropertySnapshot, Tag, ThingService};
use crate::ServiceError;

/// The thing service reached over gRPC.
#[derive(Clone)]
pub struct ThingGrpcClient {
    client: ThingClient<Channel>,
}

/// Serves a [`ThingService`] as the `tether.v1.Thing` gRPC service.
pub struct ThingGrpcServer {
    inner: Arc<dyn ThingService>,
}

// === impl ThingGrpcClient ===

impl ThingGrpcClient {
    /// A client for `url` (`http://host:port`); connects lazily and reconnects by itself.
    pub fn new(url: &str) -> Result<Self, ServiceError> {
        let endpoint = Channel::from_shared(url.to_owned()).map_err(|e| ServiceError::invalid("thing url", e))?;
        let channel = endpoint.connect_timeout(std::time::Duration::from_secs(5)).connect_lazy();
        Ok(Self { client: ThingClient::new(channel) })
    }

    fn client(&self) -> ThingClient<Channel> {
        self.client.clone()
    }
}

fn status(s: Status) -> ServiceError {
    ServiceError::from_status(&s)
}

/// A reply the client cannot read is the server's fault, not the caller's.
fn bad_reply(e: ServiceError) -> ServiceError {
    ServiceError::Internal(format!("unreadable reply from thing: {e}"))
}

fn desired_values(
    properties: std::collections::HashMap<String, pb::DesiredValue>,
) -> Result<BTreeMap<String, DesiredValue>, ServiceError> {
    properties.into_iter().map(|(id, v)| Ok((id, v.try_into().map_err(bad_reply)?))).collect()
}

#[async_trait]
impl ThingService for ThingGrpcClient {
    async fn put_thing_model(&self, product_key: &ProductKey, tsl: Tsl) -> Result<(), ServiceError> {
        let request =
            pb::PutThingModelRequest { product_key: product_key.to_string(), tsl_json: tsl.to_json().to_string() };
        self.client().put_thing_model(request).await.map_err(status)?;
        Ok(())
    }

    async fn get_thing_model(&self, product_key: &ProductKey) -> Result<Option<Tsl>, ServiceError> {
        let request = pb::GetThingModelRequest { product_key: product_key.to_string() };
        let response = self.client().get_thing_model(request).await.map_err(status)?.into_inner();
        response.tsl_json.as_deref().map(wire::tsl).transpose().map_err(bad_reply)
    }

    async fn latest_properties(&self, device: &DeviceKey) -> Result<PropertySnapshot, ServiceError> {
        let response = self.client().latest_properties(pb::LatestPropertiesRequest::for_device(device)).await;
        let properties = response.map_err(status)?.into_inner().properties;
        properties.into_iter().map(|(id, v)| Ok((id, v.try_into().map_err(bad_reply)?))).collect()
    }

    async fn tags(&self, device: &DeviceKey) -> Result<Vec<Tag>, ServiceError> {
        let response = self.client().tags(pb::TagsRequest::for_device(device)).await.map_err(status)?;
        Ok(response.into_inner().tags.into_iter().map(Into::into).collect())
    }

    async fn desired_properties(&self, device: &DeviceKey) -> Result<BTreeMap<String, DesiredValue>, ServiceError> {
        let response = self.client().desired_properties(pb::DesiredPropertiesRequest::for_device(device)).await;
        desired_values(response.map_err(status)?.into_inner().properties)
    }

    async fn set_desired_properties(
        &self,
        device: &DeviceKey,
        items: Map<String, Value>,
    ) -> Result<BTreeMap<String, DesiredValue>, ServiceError> {
        let request = pb::SetDesiredPropertiesRequest {
            product_key: device.product_key.to_string(),
            device_name: device.device_name.to_string(),
            items_json: Value::Object(items).to_string(),
        };
        let response = self.client().set_desired_properties(request).await.map_err(status)?;
        desired_values(response.into_inner().properties)
    }

    async fn get_shadow(&self, device: &DeviceKey) -> Result<Option<Value>, ServiceError> {
        let response = self.client().get_shadow(pb::GetShadowRequest::for_device(device)).await.map_err(status)?;
        response.into_inner().document_json.as_deref().map(wire::shadow_document).transpose().map_err(bad_reply)
    }

    async fn update_shadow(
        &self,
        device: &DeviceKey,
        desired: Map<String, Value>,
        version: i64,
    ) -> Result<Value, ServiceError> {
        let request = pb::UpdateShadowRequest {
            product_key: device.product_key.to_string(),
            device_name: device.device_name.to_string(),
            desired_json: Value::Object(desired).to_string(),
            version,
        };
        let response = self.client().update_shadow(request).await.map_err(status)?.into_inner();
        wire::shadow_document(&response.document_json).map_err(bad_reply)
    }

    async fn device_request(&self, request: DeviceRequest) -> Result<Option<DeviceMessage>, ServiceError> {
        let response = self.client().device_request(pb::DeviceRequestRequest::from(request)).await;
        Ok(response.map_err(status)?.into_inner().message.map(Into::into))
    }
}

// === impl ThingGrpcServer ===

impl ThingGrpcServer {
    pub fn new(inner: Arc<dyn ThingService>) -> Self {
        Self { inner }
    }

    /// The tonic service to add to a server.
    pub fn into_service(self) -> pb::thing_server::ThingServer<Self> {
        pb::thing_server::ThingServer::new(self)
    }
}

type GrpcResult<T> = Result<Response<T>, Status>;

fn to_status(e: ServiceError) -> Status {
    e.to_status()
}

/// The device a device-scoped request names.
fn device_of(request: Request<impl DeviceScoped>) -> Result<DeviceKey, Status> {
    request.into_inner().device().map_err(to_status)
}

fn desired_reply(values: BTreeMap<String, DesiredValue>) -> GrpcResult<pb::DesiredPropertiesResponse> {
    let properties = values.into_iter().map(|(id, v)| (id, v.into())).collect();
    Ok(Response::new(pb::DesiredPropertiesResponse { properties }))
}

#[async_trait]
impl pb::thing_server::Thing for ThingGrpcServer {
    async fn put_thing_model(&self, req: Request<pb::PutThingModelRequest>) -> GrpcResult<pb::PutThingModelResponse> {
        let req = req.into_inner();
        let product_key = wire::product_key(&req.product_key).map_err(to_status)?;
        let tsl = wire::tsl(&req.tsl_json).map_err(to_status)?;
        self.inner.put_thing_model(&product_key, tsl).await.map_err(to_status)?;
        Ok(Response::new(pb::PutThingModelResponse {}))
    }

    async fn get_thing_model(&self, req: Request<pb::GetThingModelRequest>) -> GrpcResult<pb::GetThingModelResponse> {
        let product_key = wire::product_key(&req.into_inner().product_key).map_err(to_status)?;
        let tsl = self.inner.get_thing_model(&product_key).await.map_err(to_status)?;
        Ok(Response::new(pb::GetThingModelResponse { tsl_json: tsl.map(|tsl| tsl.to_json().to_string()) }))
    }

    async fn latest_properties(
        &self,
        req: Request<pb::LatestPropertiesRequest>,
    ) -> GrpcResult<pb::LatestPropertiesResponse> {
        let device = device_of(req)?;
        let snapshot = self.inner.latest_properties(&device).await.map_err(to_status)?;
        let properties = snapshot.into_iter().map(|(id, v)| (id, v.into())).collect();
        Ok(Response::new(pb::LatestPropertiesResponse { properties }))
    }

    async fn tags(&self, req: Request<pb::TagsRequest>) -> GrpcResult<pb::TagsResponse> {
        let device = device_of(req)?;
        let tags = self.inner.tags(&device).await.map_err(to_status)?;
        Ok(Response::new(pb::TagsResponse { tags: tags.into_iter().map(Into::into).collect() }))
    }

    async fn desired_properties(
        &self,
        req: Request<pb::DesiredPropertiesRequest>,
    ) -> GrpcResult<pb::DesiredPropertiesResponse> {
        let device = device_of(req)?;
        desired_reply(self.inner.desired_properties(&device).await.map_err(to_status)?)
    }

    async fn set_desired_properties(
        &self,
        req: Request<pb::SetDesiredPropertiesRequest>,
    ) -> GrpcResult<pb::DesiredPropertiesResponse> {
        let req = req.into_inner();
        let device = wire::device_key(&req.product_key, &req.device_name).map_err(to_status)?;
        let items = wire::json_object("items", &req.items_json).map_err(to_status)?;
        desired_reply(self.inner.set_desired_properties(&device, items).await.map_err(to_status)?)
    }

    async fn get_shadow(&self, req: Request<pb::GetShadowRequest>) -> GrpcResult<pb::GetShadowResponse> {
        let device = device_of(req)?;
        let document = self.inner.get_shadow(&device).await.map_err(to_status)?;
        Ok(Response::new(pb::GetShadowResponse { document_json: document.map(|d| d.to_string()) }))
    }

    async fn update_shadow(&self, req: Request<pb::UpdateShadowRequest>) -> GrpcResult<pb::UpdateShadowResponse> {
        let req = req.into_inner();
        let device = wire::device_key(&req.product_key, &req.device_name).map_err(to_status)?;
        let desired = wire::json_object("desired", &req.desired_json).map_err(to_status)?;
        let document = self.inner.update_shadow(&device, desired, req.version).await.map_err(to_status)?;
        Ok(Response::new(pb::UpdateShadowResponse { document_json: document.to_string() }))
    }

    async fn device_request(&self, req: Request<pb::DeviceRequestRequest>) -> GrpcResult<pb::DeviceRequestResponse> {
        let request = DeviceRequest::try_from(req.into_inner()).map_err(to_status)?;
        let message = self.inner.device_request(request).await.map_err(to_status)?;
        Ok(Response::new(pb::DeviceRequestResponse { message: message.map(Into::into) }))
    }
}
