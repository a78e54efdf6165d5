//! The tenant API over gRPC (`tether.v1.Gateway`): the cloud-to-device operations and a device's
//! shadow and latest properties, for the same tenants and with the same checks as REST.
//!
//! Every call is authenticated by the `authorization` metadata (`Bearer <api-key>`). Proto types
//! stop here: requests become the validated requests of `calls` in `TryFrom`, so a refusal names
//! the same field as over REST, and errors leave as [`ServiceError::to_status`].

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tether_contract::{Caller, Command, Invocation, RrpcOutcome, ServiceError};
use tether_model::{DeviceKey, ProductKey};
use tether_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::GatewayDeps;
use crate::calls::{self, Broadcast, DeviceBatch, DeviceOutcome, PropertySet, Publication, RrpcCall, ServiceCall};
use crate::extract::{OwnedDevice, OwnedProduct, authenticate};
use crate::routes::{device_key, product_key};

/// Serves `tether.v1.Gateway` over the gateway's services.
pub struct GatewayGrpc {
    deps: Arc<GatewayDeps>,
}

/// A validated request for one device.
struct ForDevice<T> {
    device: DeviceKey,
    call: T,
}

/// A validated request for devices of one product.
struct ForProduct<T> {
    product_key: ProductKey,
    call: T,
}

type GrpcResult<T> = Result<Response<T>, Status>;

fn status(error: ServiceError) -> Status {
    error.to_status()
}

// === impl GatewayGrpc ===

impl GatewayGrpc {
    pub fn new(deps: Arc<GatewayDeps>) -> Self {
        Self { deps }
    }

    /// The tonic service to add to a server.
    pub fn into_service(self) -> pb::gateway_server::GatewayServer<Self> {
        pb::gateway_server::GatewayServer::new(self)
    }

    /// The caller the request's `authorization` metadata names.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let authorization = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        authenticate(&self.deps, authorization).await.map_err(status)
    }

    /// The request's device, once checked to be the caller's.
    async fn owned_device(&self, caller: &Caller, device: DeviceKey) -> Result<OwnedDevice, Status> {
        OwnedDevice::check(&self.deps, caller, device).await.map_err(status)
    }

    async fn owned_product(&self, caller: &Caller, product_key: ProductKey) -> Result<OwnedProduct, Status> {
        OwnedProduct::check(&self.deps, caller, product_key).await.map_err(status)
    }

    /// Authenticates `request`, converts it and checks that its device is the caller's.
    async fn device_request<P, T>(&self, request: Request<P>) -> Result<(OwnedDevice, T), Status>
    where
        ForDevice<T>: TryFrom<P, Error = ServiceError>,
    {
        let caller = self.caller(&request).await?;
        let ForDevice { device, call } = ForDevice::try_from(request.into_inner()).map_err(status)?;
        Ok((self.owned_device(&caller, device).await?, call))
    }
}

#[async_trait]
impl pb::gateway_server::Gateway for GatewayGrpc {
    async fn set_device_property(&self, req: Request<pb::SetDevicePropertyRequest>) -> GrpcResult<pb::CommandAccepted> {
        let (device, set) = self.device_request::<_, PropertySet>(req).await?;
        let command = calls::set_properties(&self.deps, &device, set).await.map_err(status)?;
        Ok(Response::new(pb::CommandAccepted { message_id: command.message_id }))
    }

    async fn invoke_thing_service(
        &self,
        req: Request<pb::InvokeThingServiceRequest>,
    ) -> GrpcResult<pb::InvokeThingServiceResponse> {
        let (device, call) = self.device_request::<_, ServiceCall>(req).await?;
        let invocation = calls::invoke_service(&self.deps, &device, call).await.map_err(status)?;
        Ok(Response::new(invocation_reply(invocation)))
    }

    async fn r_rpc(&self, req: Request<pb::RRpcRequest>) -> GrpcResult<pb::RRpcResponse> {
        let (device, call) = self.device_request::<_, RrpcCall>(req).await?;
        let outcome = calls::rrpc(&self.deps, &device, call).await.map_err(status)?;
        Ok(Response::new(rrpc_reply(outcome)))
    }

    async fn r#pub(&self, req: Request<pb::PubRequest>) -> GrpcResult<pb::CommandAccepted> {
        let caller = self.caller(&req).await?;
        let ForProduct { product_key, call } = ForProduct::<Publication>::try_from(req.into_inner()).map_err(status)?;
        let product = self.owned_product(&caller, product_key).await?;
        let message_id = calls::publish(&self.deps, &product, call).await.map_err(status)?;
        Ok(Response::new(pb::CommandAccepted { message_id }))
    }

    async fn pub_broadcast(&self, req: Request<pb::PubBroadcastRequest>) -> GrpcResult<pb::CommandAccepted> {
        let caller = self.caller(&req).await?;
        let ForProduct { product_key, call } = ForProduct::<Broadcast>::try_from(req.into_inner()).map_err(status)?;
        let product = self.owned_product(&caller, product_key).await?;
        let message_id = calls::broadcast(&self.deps, &product, call).await.map_err(status)?;
        Ok(Response::new(pb::CommandAccepted { message_id }))
    }

    async fn set_devices_property(
        &self,
        req: Request<pb::SetDevicesPropertyRequest>,
    ) -> GrpcResult<pb::DeviceCommandResults> {
        let caller = self.caller(&req).await?;
        let ForProduct { product_key, call: (batch, set) } =
            ForProduct::<(DeviceBatch, PropertySet)>::try_from(req.into_inner()).map_err(status)?;
        let product = self.owned_product(&caller, product_key).await?;
        let outcomes = calls::set_properties_of(&self.deps, &caller, &product, batch, set).await.map_err(status)?;
        Ok(Response::new(device_results(outcomes)))
    }

    async fn invoke_things_service(
        &self,
        req: Request<pb::InvokeThingsServiceRequest>,
    ) -> GrpcResult<pb::DeviceCommandResults> {
        let caller = self.caller(&req).await?;
        let ForProduct { product_key, call: (batch, call) } =
            ForProduct::<(DeviceBatch, ServiceCall)>::try_from(req.into_inner()).map_err(status)?;
        let product = self.owned_product(&caller, product_key).await?;
        let outcomes = calls::invoke_service_on(&self.deps, &caller, &product, batch, call).await.map_err(status)?;
        Ok(Response::new(device_results(outcomes)))
    }

    async fn get_command(&self, req: Request<pb::GetCommandRecordRequest>) -> GrpcResult<pb::CommandRecord> {
        let caller = self.caller(&req).await?;
        let command = calls::get_command(&self.deps, &caller, &req.into_inner().message_id).await.map_err(status)?;
        Ok(Response::new(command_record(command)))
    }

    async fn list_commands(
        &self,
        req: Request<pb::ListDeviceCommandsRequest>,
    ) -> GrpcResult<pb::ListDeviceCommandsResponse> {
        let (device, ()) = self.device_request::<_, ()>(req).await?;
        let commands = calls::list_commands(&self.deps, &device).await.map_err(status)?;
        Ok(Response::new(pb::ListDeviceCommandsResponse {
            commands: commands.into_iter().map(command_record).collect(),
        }))
    }

    async fn get_device_shadow(
        &self,
        req: Request<pb::GetDeviceShadowRequest>,
    ) -> GrpcResult<pb::GetDeviceShadowResponse> {
        let (OwnedDevice(device), ()) = self.device_request::<_, ()>(req).await?;
        let document = self.deps.thing.get_shadow(&device).await.map_err(status)?;
        let document = document.ok_or_else(|| status(ServiceError::not_found(format!("shadow of device {device}"))))?;
        Ok(Response::new(pb::GetDeviceShadowResponse { document_json: document.to_string() }))
    }

    async fn query_device_property_status(
        &self,
        req: Request<pb::QueryDevicePropertyStatusRequest>,
    ) -> GrpcResult<pb::QueryDevicePropertyStatusResponse> {
        let (OwnedDevice(device), ()) = self.device_request::<_, ()>(req).await?;
        let snapshot = self.deps.thing.latest_properties(&device).await.map_err(status)?;
        let properties = snapshot.into_iter().map(|(id, value)| (id, value.into())).collect();
        Ok(Response::new(pb::QueryDevicePropertyStatusResponse { properties }))
    }
}

fn device_results(outcomes: Vec<DeviceOutcome>) -> pb::DeviceCommandResults {
    let results = outcomes
        .into_iter()
        .map(|DeviceOutcome { device_name, result }| match result {
            Ok(message_id) => {
                pb::DeviceCommandResult { device_name, message_id: Some(message_id), code: None, message: None }
            }
            Err(error) => pb::DeviceCommandResult {
                device_name,
                message_id: None,
                code: Some(error.code().to_owned()),
                message: Some(error.to_string()),
            },
        })
        .collect();
    pb::DeviceCommandResults { results }
}

fn device(product: &str, device: &str) -> Result<DeviceKey, ServiceError> {
    device_key(product, device).map_err(|e| e.0)
}

fn product(product: &str) -> Result<ProductKey, ServiceError> {
    product_key(product).map_err(|e| e.0)
}

/// proto3 `uint64` ttl as the API's signed one (no TTL is anywhere near `i64::MAX` ms).
fn ttl(ttl_ms: Option<u64>) -> Option<i64> {
    ttl_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX))
}

fn args(args_json: &str) -> Result<serde_json::Value, ServiceError> {
    calls::json_text("args", args_json)
}

// === requests ===

impl TryFrom<pb::SetDevicePropertyRequest> for ForDevice<PropertySet> {
    type Error = ServiceError;

    fn try_from(req: pb::SetDevicePropertyRequest) -> Result<Self, ServiceError> {
        let pb::SetDevicePropertyRequest { product_key, device_name, items_json, ttl_ms } = req;
        let call = PropertySet {
            items: calls::json_object("items", &items_json)?,
            options: calls::send_options(ttl(ttl_ms))?,
        };
        Ok(Self { device: device(&product_key, &device_name)?, call })
    }
}

impl TryFrom<pb::InvokeThingServiceRequest> for ForDevice<ServiceCall> {
    type Error = ServiceError;

    fn try_from(req: pb::InvokeThingServiceRequest) -> Result<Self, ServiceError> {
        let pb::InvokeThingServiceRequest { product_key, device_name, identifier, args_json, timeout_ms, ttl_ms } = req;
        let call = ServiceCall {
            identifier: service_identifier(identifier)?,
            args: args(&args_json)?,
            timeout_ms: timeout_ms.map(|ms| calls::timeout_ms(i64::from(ms))).transpose()?,
            options: calls::send_options(ttl(ttl_ms))?,
        };
        Ok(Self { device: device(&product_key, &device_name)?, call })
    }
}

impl TryFrom<pb::RRpcRequest> for ForDevice<RrpcCall> {
    type Error = ServiceError;

    fn try_from(req: pb::RRpcRequest) -> Result<Self, ServiceError> {
        let pb::RRpcRequest { product_key, device_name, payload, timeout_ms, topic } = req;
        let call =
            RrpcCall { payload: Bytes::from(payload), timeout_ms: calls::timeout_ms(i64::from(timeout_ms))?, topic };
        Ok(Self { device: device(&product_key, &device_name)?, call })
    }
}

/// Requests that name one device and nothing else.
macro_rules! device_only_requests {
    ($($request:ident),+) => {$(
        impl TryFrom<pb::$request> for ForDevice<()> {
            type Error = ServiceError;

            fn try_from(req: pb::$request) -> Result<Self, ServiceError> {
                let pb::$request { product_key, device_name } = req;
                Ok(Self { device: device(&product_key, &device_name)?, call: () })
            }
        }
    )+};
}

device_only_requests!(ListDeviceCommandsRequest, GetDeviceShadowRequest, QueryDevicePropertyStatusRequest);

impl TryFrom<pb::PubRequest> for ForProduct<Publication> {
    type Error = ServiceError;

    fn try_from(req: pb::PubRequest) -> Result<Self, ServiceError> {
        let pb::PubRequest { product_key, topic_full_name, payload, qos } = req;
        let call = Publication { topic_full_name, payload: Bytes::from(payload), qos: calls::qos(i64::from(qos))? };
        Ok(Self { product_key: product(&product_key)?, call })
    }
}

impl TryFrom<pb::PubBroadcastRequest> for ForProduct<Broadcast> {
    type Error = ServiceError;

    fn try_from(req: pb::PubBroadcastRequest) -> Result<Self, ServiceError> {
        let pb::PubBroadcastRequest { product_key, payload, topic_full_name } = req;
        let call = Broadcast { payload: Bytes::from(payload), topic: topic_full_name };
        Ok(Self { product_key: product(&product_key)?, call })
    }
}

impl TryFrom<pb::SetDevicesPropertyRequest> for ForProduct<(DeviceBatch, PropertySet)> {
    type Error = ServiceError;

    fn try_from(req: pb::SetDevicesPropertyRequest) -> Result<Self, ServiceError> {
        let pb::SetDevicesPropertyRequest { product_key, device_names, items_json, ttl_ms } = req;
        let set = PropertySet {
            items: calls::json_object("items", &items_json)?,
            options: calls::send_options(ttl(ttl_ms))?,
        };
        Ok(Self { product_key: product(&product_key)?, call: (DeviceBatch::new(device_names)?, set) })
    }
}

impl TryFrom<pb::InvokeThingsServiceRequest> for ForProduct<(DeviceBatch, ServiceCall)> {
    type Error = ServiceError;

    fn try_from(req: pb::InvokeThingsServiceRequest) -> Result<Self, ServiceError> {
        let pb::InvokeThingsServiceRequest { product_key, device_names, identifier, args_json, ttl_ms } = req;
        let call = ServiceCall {
            identifier: service_identifier(identifier)?,
            args: args(&args_json)?,
            timeout_ms: None,
            options: calls::send_options(ttl(ttl_ms))?,
        };
        Ok(Self { product_key: product(&product_key)?, call: (DeviceBatch::new(device_names)?, call) })
    }
}

fn service_identifier(identifier: String) -> Result<String, ServiceError> {
    if identifier.is_empty() {
        return Err(ServiceError::invalid("identifier", "required"));
    }
    Ok(identifier)
}

// === answers ===

// Free functions: both sides are other crates' types.

fn invocation_reply(invocation: Invocation) -> pb::InvokeThingServiceResponse {
    match invocation {
        Invocation::Async(command) => pb::InvokeThingServiceResponse {
            message_id: command.message_id,
            rrpc_code: None,
            code: None,
            data_json: None,
        },
        Invocation::Sync { message_id, rrpc_code, code, data } => pb::InvokeThingServiceResponse {
            message_id,
            rrpc_code: Some(rrpc_code.as_str().to_owned()),
            code,
            data_json: data.map(|d| d.to_string()),
        },
    }
}

fn rrpc_reply(outcome: RrpcOutcome) -> pb::RRpcResponse {
    let RrpcOutcome { message_id, rrpc_code, payload } = outcome;
    pb::RRpcResponse { message_id, rrpc_code: rrpc_code.as_str().to_owned(), payload: payload.map(|p| p.to_vec()) }
}

fn command_record(command: Command) -> pb::CommandRecord {
    let Command {
        message_id,
        product_key,
        device_name,
        topic,
        method,
        status,
        created_at,
        updated_at,
        expires_at,
        reply_code,
        reply_data,
        reply_message,
    } = command;
    pb::CommandRecord {
        message_id,
        product_key: product_key.to_string(),
        device_name: device_name.to_string(),
        topic,
        method,
        status: status.as_str().to_owned(),
        created_at,
        updated_at,
        expires_at,
        reply_code,
        reply_data_json: reply_data.map(|d| d.to_string()),
        reply_message,
    }
}
